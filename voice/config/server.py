"""Config sections for how the server runs: SIP, HTTP, data and database, worker processes,
the Kamailio front, accounts defaults, recordings storage and the CRM webhook."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from voice.config.checks import ConfigError, check_range


@dataclass(frozen=True)
class SipConfig:
    bind: str = "0.0.0.0"
    port: int = 5060
    udp: bool = True
    tcp: bool = True
    rtp_port: int = 40000
    rtp_port_range: int = 1000
    max_calls: int = 4
    max_setups_per_second: int = 16
    codecs: tuple[str, ...] = ("G722/16000", "PCMU/8000", "PCMA/8000")
    user_agent: str = "collections-voice"
    log_level: int = 1

    def validate(self) -> None:
        check_range("sip.port", self.port, 1, 65535)
        check_range("sip.rtp_port", self.rtp_port, 1024, 65000)
        check_range("sip.rtp_port_range", self.rtp_port_range, 2, 20000)
        # The pjsua2-python wheel is compiled with PJSUA_MAX_CALLS=4: above it maxCalls is
        # clamped (measured: 4 of 40 calls answered, the rest 486; ../shared/DESIGN.md).
        check_range("sip.max_calls", self.max_calls, 1, 4)
        check_range("sip.max_setups_per_second", self.max_setups_per_second, 1, 50)
        check_range("sip.log_level", self.log_level, 0, 6)
        if not (self.udp or self.tcp):
            raise ConfigError("sip.udp / sip.tcp: at least one transport must be enabled")
        if not self.codecs:
            raise ConfigError("sip.codecs: at least one codec is required")


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # How users reach the pages (e.g. behind a TLS proxy); https makes session cookies Secure.
    public_url: str = ""
    session_idle_minutes: int = 30  # a page session left idle this long needs a new login

    def validate(self) -> None:
        check_range("http.port", self.port, 1, 65535)
        check_range("http.session_idle_minutes", self.session_idle_minutes, 1, 24 * 60)
        if self.public_url and not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", self.public_url):
            url = self.public_url
            raise ConfigError(f"http.public_url: expected an http(s):// URL, got {url!r}")


@dataclass(frozen=True)
class DataConfig:
    dir: str = "./data"

    def validate(self) -> None:
        if not self.dir:
            raise ConfigError("data.dir: must not be empty")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""
    busy_timeout_ms: int = 5000

    def validate(self) -> None:
        check_range("database.busy_timeout_ms", self.busy_timeout_ms, 0, 600_000)


@dataclass(frozen=True)
class WorkersConfig:
    count: int = 0
    restart_delay: float = 1.0
    sip_port: int = 5100
    drain_timeout: float = 30.0

    def validate(self) -> None:
        check_range("workers.count", self.count, 0, 256)
        check_range("workers.restart_delay", self.restart_delay, 0.0, 60.0)
        check_range("workers.sip_port", self.sip_port, 1024, 65000)
        check_range("workers.drain_timeout", self.drain_timeout, 0.0, 3600.0)

    def resolved_count(self, cpus: int | None = None) -> int:
        """`count`, or for 0 a size for this machine: 8 workers (32 calls) per core."""
        if self.count:
            return self.count
        return min(64, 8 * (cpus or os.cpu_count() or 1))


@dataclass(frozen=True)
class KamailioConfig:
    binary: str = "kamailio"
    trunks: tuple[str, ...] = ("127.0.0.1",)
    gateway: str = ""
    realm: str = "collections-voice"
    fail_over_ms: int = 2000

    def validate(self) -> None:
        for source in self.trunks:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise ConfigError(
                    f"kamailio.trunks: {source!r} is not an IP address or network"
                ) from None
        if self.gateway and not re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?", self.gateway):
            raise ConfigError(f"kamailio.gateway: expected host or host:port, got {self.gateway!r}")
        if not re.fullmatch(r"[A-Za-z0-9.\-]+", self.realm):
            raise ConfigError(f"kamailio.realm: expected a domain name, got {self.realm!r}")
        check_range("kamailio.fail_over_ms", self.fail_over_ms, 200, 30000)


@dataclass(frozen=True)
class AccountsConfig:
    default_region: str = "US"
    demo_data: bool = True

    def validate(self) -> None:
        if len(self.default_region) != 2 or not self.default_region.isalpha():
            raise ConfigError(
                f"accounts.default_region: expected a 2-letter region code, "
                f"got {self.default_region!r}"
            )


@dataclass(frozen=True)
class RecordingsConfig:
    dir: str = ""
    retention_days: int = 1096
    delete_batch: int = 100

    def validate(self) -> None:
        # 12 CFR 1006.100: keep records at least 3 years; 3 calendar years never exceed 1096 days.
        check_range("recordings.retention_days", self.retention_days, 1096, 36500)
        check_range("recordings.delete_batch", self.delete_batch, 1, 10000)


@dataclass(frozen=True)
class WebhookConfig:
    url: str = ""
    secret: str = ""
    timeout: float = 10.0
    max_attempts: int = 12
    backoff_initial: float = 30.0
    backoff_max: float = 3600.0
    poll_interval: float = 5.0
    batch: int = 50

    def validate(self) -> None:
        if self.url:
            if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", self.url):
                raise ConfigError(f"webhook.url: expected an http(s):// URL, got {self.url!r}")
            if not self.secret:
                raise ConfigError("webhook.secret: required when webhook.url is set (HMAC signing)")
        check_range("webhook.timeout", self.timeout, 0.5, 300.0)
        check_range("webhook.max_attempts", self.max_attempts, 1, 100)
        check_range("webhook.backoff_initial", self.backoff_initial, 0.1, 86400.0)
        check_range("webhook.backoff_max", self.backoff_max, self.backoff_initial, 7 * 86400.0)
        check_range("webhook.poll_interval", self.poll_interval, 0.1, 3600.0)
        check_range("webhook.batch", self.batch, 1, 1000)
