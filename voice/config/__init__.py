"""Typed configuration: `config.toml` plus `VOICE_<SECTION>_<KEY>` environment overrides.

Loaded once at start-up. An unknown key, a wrong type or an out-of-range value raises
`ConfigError` naming the key, so a typo never silently falls back to a default.

The names live in: `checks` (ConfigError and the range checks), `server` (how the server runs),
`calling` (how calls go), `tree` (`Config`, the whole), `loader` (`load`, `from_mapping`);
everything is imported from here, `from voice.config import Config, ConfigError, load`.
"""

from voice.config.calling import (
    DEFAULT_PHRASES,
    TRANSCRIBE_MODES,
    VERIFY_METHODS,
    AgentsConfig,
    AsrConfig,
    GuardrailsConfig,
    IvrConfig,
    TtsConfig,
)
from voice.config.checks import ConfigError
from voice.config.loader import ENV_PREFIX, from_mapping, load
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
from voice.config.tree import Config

__all__ = [
    "DEFAULT_PHRASES",
    "ENV_PREFIX",
    "TRANSCRIBE_MODES",
    "VERIFY_METHODS",
    "AccountsConfig",
    "AgentsConfig",
    "AsrConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DatabaseConfig",
    "GuardrailsConfig",
    "HttpConfig",
    "IvrConfig",
    "KamailioConfig",
    "RecordingsConfig",
    "SipConfig",
    "TtsConfig",
    "WebhookConfig",
    "WorkersConfig",
    "from_mapping",
    "load",
]
