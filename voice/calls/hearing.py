"""What the caller says during one live call: spoken menu choices and speech barge-in.

`SipCall` asks it which grammar a gather listens with, whether the prompt playing may be cut by
the caller's voice, and what a recognised utterance answers. Runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from voice import telemetry
from voice.asr.events import Event, Final, SpeechStarted
from voice.asr.live import CallSpeech
from voice.asr.phrases import PhraseSet
from voice.ivr.call import Heard


class Hearing:
    def __init__(self, reply: telemetry.ReplyClock) -> None:
        self._reply = reply
        # Live speech (None: keypad only). The caller's grammar finals wait in `finals`.
        self.speech: CallSpeech | None = None
        self._phrases: PhraseSet | None = None
        self.finals: asyncio.Queue[Final] = asyncio.Queue()
        self.started = asyncio.Event()  # an utterance began since the last prompt started
        self.barge = False  # the prompt playing now may be cut by the caller's voice
        self.speaking = False  # an utterance of the caller's is in progress
        self.speaking_since = 0.0  # loop time its start was reported
        self.cut = False  # the last prompt was cut by speech that chose nothing

    def attach(self, speech: CallSpeech, phrases: PhraseSet | None) -> None:
        self.speech, self._phrases = speech, phrases

    def grammar(self, spoken: Mapping[str, str] | None) -> PhraseSet | None:
        if not spoken or self.speech is None or self._phrases is None:
            return None
        return self._phrases.only(spoken)

    def expect(self, grammar: PhraseSet) -> None:
        """Listen for `grammar` from now on (before the prompt starts, so a caller who talks
        over it is heard). A caller whose speech cut the last prompt without choosing anything
        hears the next one whole."""
        assert self.speech is not None
        while not self.finals.empty():
            self.finals.get_nowait()
        self.speech.expect(grammar)
        self.barge = not self.cut
        self.cut = False

    def stop_expecting(self) -> None:
        assert self.speech is not None
        self.barge = False
        self.speech.expect(None)

    def answer(self, spoken: Mapping[str, str]) -> tuple[Heard, str] | None:
        """The next final waiting: what was heard and the answer it gives ("" for speech that
        chose nothing), or None for a cough, line noise or a tone (not an answer)."""
        final = self.finals.get_nowait()
        if final.noise or not (final.text or final.option):
            return None
        option = final.option if final.option in spoken else None
        heard = Heard(final.text, option, final.confidence)
        self._reply.answered_by_speech()
        if option is None:
            self.cut = True  # so the re-prompt is heard whole
            return heard, ""
        self.cut = False
        return heard, spoken[option]

    def on_speech(self, event: Event) -> None:
        """The caller's stream: an utterance started (barge-in) or was recognised."""
        if isinstance(event, SpeechStarted):
            self.speaking = True
            self.speaking_since = asyncio.get_running_loop().time()
            self.started.set()
        elif isinstance(event, Final):
            self.speaking = False
            if event.mode == "grammar":
                self.finals.put_nowait(event)
                if self.speech is not None:
                    self._reply.heard(event.end, self.speech.heard_until())
