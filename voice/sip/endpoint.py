"""The pjsua2 Endpoint's birth and death, on the owner thread.

- null sound device (the wheel has none; media needs a clock), and `sndAutoCloseTime = -1` so
  conference slots of ended calls are freed (else 488 to every call after ~270 calls);
- codec priorities: two pjsua2 peers settle on lossy speex unless told otherwise;
- at shutdown the conference clock is stopped (`setNoDev`) before the ports are released, and
  before `libDestroy()` every Call, Account and port is released and `gc.collect()` runs, or
  exit aborts.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

import pjsua2 as pj

from voice.config import SipConfig
from voice.sip.events import describe

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 3.0  # seconds to let BYEs go out before libDestroy


def start(ep: pj.Endpoint, cfg: SipConfig) -> None:
    """Initialise and start `ep` (created with `libCreate()`): transports, media, codecs."""
    ep_cfg = pj.EpConfig()
    ep_cfg.uaConfig.maxCalls = cfg.max_calls
    ep_cfg.uaConfig.threadCnt = 0  # SIP events are handled by this thread in libHandleEvents
    ep_cfg.uaConfig.mainThreadOnly = False
    ep_cfg.uaConfig.userAgent = cfg.user_agent
    ep_cfg.medConfig.sndAutoCloseTime = -1  # else conference slots leak (488 after ~270 calls)
    ep_cfg.medConfig.clockRate = 16000
    ep_cfg.medConfig.sndClockRate = 16000
    ep_cfg.medConfig.noVad = True  # keep sending frames in pauses: the far end records them
    ep_cfg.logConfig.level = cfg.log_level
    ep_cfg.logConfig.consoleLevel = cfg.log_level
    ep.libInit(ep_cfg)
    ep.audDevManager().setNullDev()  # the wheel has no sound devices; media needs a clock
    for enabled, kind in ((cfg.udp, pj.PJSIP_TRANSPORT_UDP), (cfg.tcp, pj.PJSIP_TRANSPORT_TCP)):
        if enabled:
            tcfg = pj.TransportConfig()
            tcfg.port = cfg.port
            tcfg.boundAddress = cfg.bind
            ep.transportCreate(kind, tcfg)
    ep.libStart()
    _set_codec_priorities(ep, cfg)


def account_config(cfg: SipConfig, media_bind: str, proxy: str | None) -> pj.AccountConfig:
    acfg = pj.AccountConfig()
    host = cfg.bind if cfg.bind != "0.0.0.0" else "127.0.0.1"
    acfg.idUri = f"sip:voice@{host}:{cfg.port}"
    acfg.mediaConfig.transportConfig.port = cfg.rtp_port
    acfg.mediaConfig.transportConfig.portRange = cfg.rtp_port_range
    if media_bind not in ("0.0.0.0", ""):
        acfg.mediaConfig.transportConfig.boundAddress = media_bind
    if proxy:
        # Calls this worker places go through Kamailio, the only way out to a trunk.
        acfg.sipConfig.proxies.append(proxy)
    return acfg


def _set_codec_priorities(ep: pj.Endpoint, cfg: SipConfig) -> None:
    # Two pjsua2 peers settle on lossy speex unless told otherwise: rank the configured codecs
    # first (G722 for ASR quality, then G.711) and disable the rest.
    wanted = [c.lower() for c in cfg.codecs]
    for info in ep.codecEnum2():
        codec_id = info.codecId
        base = codec_id.rsplit("/", 1)[0].lower() if codec_id.count("/") == 2 else codec_id
        rank = wanted.index(base) if base in wanted else None
        ep.codecSetPriority(codec_id, 0 if rank is None else 250 - rank)


def close(ep: pj.Endpoint, calls: dict[int, pj.Call], release: Callable[[], None]) -> None:
    """Hang up `calls`, stop the media clock, `release()` every port and the Account (the
    caller forgets them), collect, then destroy the library."""
    for call in list(calls.values()):
        try:
            call.hangup(pj.CallOpParam())
        except Exception:
            log.exception("hangup at shutdown failed")
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while calls and time.monotonic() < deadline:
        ep.libHandleEvents(20)
    calls.clear()
    try:
        ep.audDevManager().setNoDev()  # stop the conference clock before ports die
    except pj.Error as exc:  # start-up failed before the media subsystem existed
        log.debug("setNoDev at shutdown: %s", describe(exc))
    release()
    gc.collect()
    ep.libDestroy()
