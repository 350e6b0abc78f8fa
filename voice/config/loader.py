"""Reading `config.toml` and `VOICE_<SECTION>_<KEY>` overrides into a validated `Config`:
every key typed strictly, an unknown one refused by name."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voice.config.checks import ConfigError
from voice.config.tree import Config

ENV_PREFIX = "VOICE_"


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load `path` (if given and present) and apply `VOICE_<SECTION>_<KEY>` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    return from_mapping(raw, os.environ if environ is None else environ)


def from_mapping(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    sections: dict[str, Any] = {}
    section_types = _section_types()
    for name, value in raw.items():
        if name not in section_types:
            raise ConfigError(f"unknown config section [{name}]")
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table")
        sections[name] = _build_section(name, section_types[name], value, environ or {})
    for name, cls in section_types.items():
        if name not in sections:
            sections[name] = _build_section(name, cls, {}, environ or {})
    cfg = Config(**sections)
    for name in section_types:
        getattr(cfg, name).validate()
    return cfg


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _build_section(
    section: str, cls: type, values: dict[str, Any], environ: Mapping[str, str]
) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {section}.{key}")
    kwargs: dict[str, Any] = {}
    for key in known:
        dotted = f"{section}.{key}"
        env_name = f"{ENV_PREFIX}{section}_{key}".upper()
        if env_name in environ:
            kwargs[key] = _parse_env(dotted, hints[key], environ[env_name])
        elif key in values:
            kwargs[key] = _coerce(dotted, hints[key], values[key])
    return cls(**kwargs)


def _coerce(key: str, typ: Any, value: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is dict:  # a table of tables: [section.key.NAME] with its own typed keys
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        _, inner = typing.get_args(typ)
        return {str(name): _coerce(f"{key}.{name}", inner, v) for name, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(typ, types.UnionType):  # pragma: no cover - no optional keys yet
        raise ConfigError(f"{key}: unsupported type")
    raise ConfigError(f"{key}: unsupported type {typ!r}")  # pragma: no cover


def _parse_env(key: str, typ: Any, text: str) -> Any:
    where = f"{key} (from ${ENV_PREFIX}{key.replace('.', '_').upper()})"
    if typing.get_origin(typ) is dict:
        raise ConfigError(f"{where}: a table is set in config.toml, not the environment")
    if typing.get_origin(typ) is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if typ is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    try:
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected {typ.__name__}, got {text!r}") from None
    return text
