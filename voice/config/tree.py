"""`Config`: the whole configuration, one frozen section per config.toml table, and the
paths derived from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from voice.config.calling import AgentsConfig, AsrConfig, GuardrailsConfig, IvrConfig, TtsConfig
from voice.config.server import (
    AccountsConfig,
    DatabaseConfig,
    DataConfig,
    HttpConfig,
    KamailioConfig,
    RecordingsConfig,
    SipConfig,
    WebhookConfig,
    WorkersConfig,
)


@dataclass(frozen=True)
class Config:
    sip: SipConfig = field(default_factory=SipConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    data: DataConfig = field(default_factory=DataConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    kamailio: KamailioConfig = field(default_factory=KamailioConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    ivr: IvrConfig = field(default_factory=IvrConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    recordings: RecordingsConfig = field(default_factory=RecordingsConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir).expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'voice.db'}"

    @property
    def recordings_dir(self) -> Path:
        """Root of the recordings folder; every stored recording path is relative to it."""
        if self.recordings.dir:
            return Path(self.recordings.dir).expanduser().resolve()
        return self.data_dir / "recordings"

    @property
    def models_dir(self) -> Path:
        """Where `voice models fetch` installs Vosk models (one folder per model name)."""
        if self.asr.models_dir:
            return Path(self.asr.models_dir).expanduser().resolve()
        return self.data_dir / "models"

    @property
    def prompts_dir(self) -> Path:
        """Studio recordings dropped here (KEY.wav) replace the rendered clip of that key."""
        return (
            Path(self.tts.prompts_dir).expanduser()
            if self.tts.prompts_dir
            else (self.data_dir / "prompts")
        )
