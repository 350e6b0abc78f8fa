"""A scripted pjsua2 user agent: the customer's phone in integration tests and benchmarks.

Runs in its own process (one pjsua2 Endpoint per process). It places up to 4 calls, follows a
step script on each, records what it hears to WAV, and prints one JSON object per call.

With `--answer` it places no call: it answers up to `--calls` incoming calls (the customer's
phone a worker dials, or the trunk's gateway) and follows the steps on each; the report then
carries the INVITE's head (`invite`) so a test can check From and P-Asserted-Identity. Digits
received are logged as `dtmf_in` events.

Steps (`;`-separated): `wait:SECONDS`, `audio[:TIMEOUT]` (until sound is heard),
`silence:MS[:TIMEOUT]` (until MS of quiet after sound), `dtmf:DIGITS` (one key every 250 ms),
`hangup`, `expect_end[:TIMEOUT]` (wait for the far end to hang up), `say:FILE.wav` (start
speaking the WAV into the call and go on at once: the caller talks over whatever follows).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pjsua2 as pj

SAMPLE_RATE = 16000
FRAME = 320  # 20 ms at 16 kHz
SOUND_RMS = 200.0  # int16 RMS above which a frame counts as sound (silence is digital zero)
DTMF_GAP = 0.25  # seconds between keys of one dtmf step


class Ear(pj.AudioMediaPort):
    """Watches received frames: when sound started and stopped. Only sets attributes."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.last_sound = 0.0
        self.first_sound_after: dict[float, float] = {}
        self.watch_from: float | None = None
        self.sound_seen_since_watch = False
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, SAMPLE_RATE, 1, 20000, 16)
        self.createPort(name, fmt)

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:  # noqa: N802
        try:
            if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or frame.size == 0:
                return
            pcm = np.frombuffer(bytes(frame.buf), dtype="<i2").astype(np.float32)
            if pcm.size and float(np.sqrt(np.mean(pcm * pcm))) > SOUND_RMS:
                now = time.monotonic()
                with self.lock:
                    self.last_sound = now
                    if self.watch_from is not None and not self.sound_seen_since_watch:
                        self.sound_seen_since_watch = True
                        self.first_sound_after[self.watch_from] = now
        except Exception as exc:  # never raise into the media thread
            print(f"ear: {exc}", file=sys.stderr)

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:  # noqa: N802
        frame.type = pj.PJMEDIA_FRAME_TYPE_NONE

    def watch(self, since: float) -> None:
        with self.lock:
            self.watch_from = since
            self.sound_seen_since_watch = self.last_sound > since


@dataclass
class Leg:
    index: int
    steps: list[str]
    call: pj.Call | None = None
    ear: Ear | None = None
    recorder: pj.AudioMediaRecorder | None = None
    media: pj.AudioMedia | None = None
    voices: list[pj.AudioMediaPlayer] = field(default_factory=list)
    record_path: str = ""
    state: str = "calling"
    step: int = 0
    step_started: float = 0.0
    sound_since_step: bool = False
    confirmed_at: float | None = None
    record_started: float | None = None
    code: int | None = None
    reason: str = ""
    log: list[tuple[float, str, object]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    dtmf_queue: list[str] = field(default_factory=list)
    next_dtmf_at: float = 0.0
    last_dtmf_at: float | None = None
    error: str = ""
    invite: str = ""
    stream: dict[str, int] = field(default_factory=dict)


class UaCall(pj.Call):
    def __init__(
        self, acc: pj.Account, leg: Leg, media_ready: callable, call_id: int = pj.PJSUA_INVALID_ID
    ) -> None:
        super().__init__(acc, call_id)
        self.leg = leg
        self.media_ready = media_ready

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        try:
            self.leg.log.append((time.monotonic(), "dtmf_in", str(prm.digit)))
        except Exception as exc:
            self.leg.error = f"onDtmfDigit: {exc}"

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                self.leg.confirmed_at = time.monotonic()
                self.leg.state = "up"
            elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.leg.code = info.lastStatusCode
                self.leg.reason = info.lastReason
                self.leg.state = "ended"
        except Exception as exc:
            self.leg.error = f"onCallState: {exc}"

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()  # keep it: iterating a temporary's vector reads freed memory
            for media in info.media:
                if (
                    media.type == pj.PJMEDIA_TYPE_AUDIO
                    and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                ):
                    self.media_ready(self.leg, self.getAudioMedia(media.index))
        except Exception as exc:
            self.leg.error = f"onCallMediaState: {exc!r}"
            print(self.leg.error, file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="", help="sip:user@127.0.0.1:PORT (not with --answer)")
    ap.add_argument("--answer", action="store_true", help="answer incoming calls instead")
    ap.add_argument("--caller", default="+12125550101", help="user part of From")
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--rtp-port", type=int, default=30000)
    ap.add_argument("--codec", default="G722/16000")
    ap.add_argument("--dtmf-method", choices=["rfc2833", "info"], default="rfc2833")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--stagger", type=float, default=0.0, help="seconds between call starts")
    ap.add_argument("--record", default="", help="WAV path prefix; call i writes PREFIX-i.wav")
    ap.add_argument("--steps", required=True)
    ap.add_argument("--timeout", type=float, default=60.0, help="hard limit for the whole run")
    args = ap.parse_args()
    if not (0 if args.answer else 1) <= args.calls <= 4:
        ap.error("--calls must be 1..4 (pjsua2 wheel limit; 0 with --answer: refuse all, 486)")

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.maxCalls = 4
    cfg.logConfig.level = int(__import__("os").environ.get("UA_LOG", "0"))
    cfg.logConfig.consoleLevel = cfg.logConfig.level
    cfg.medConfig.sndAutoCloseTime = -1
    cfg.medConfig.noVad = True
    cfg.medConfig.clockRate = SAMPLE_RATE
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = args.sip_port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    for info in ep.codecEnum2():
        want = info.codecId.lower().startswith(args.codec.lower())
        ep.codecSetPriority(info.codecId, 255 if want else 0)

    acc_cfg = pj.AccountConfig()
    acc_cfg.idUri = f"sip:{args.caller}@127.0.0.1:{args.sip_port}"
    acc_cfg.mediaConfig.transportConfig.port = args.rtp_port
    acc_cfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    legs: list[Leg] = []
    rejected: list[pj.Call] = []
    steps = [s for s in args.steps.split(";") if s]

    class Answerer(pj.Account):
        def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
            try:
                if len(legs) >= args.calls:
                    call = pj.Call(self, prm.callId)
                    op = pj.CallOpParam()
                    op.statusCode = 486
                    call.answer(op)
                    rejected.append(call)  # kept: a collected Call hangs up its slot's next call
                    return
                leg = Leg(len(legs), steps, invite=prm.rdata.wholeMsg.split("\r\n\r\n")[0])
                leg.call = UaCall(self, leg, media_ready, prm.callId)
                leg.step_started = time.monotonic()
                legs.append(leg)
                op = pj.CallOpParam()
                op.statusCode = 200
                leg.call.answer(op)
            except Exception as exc:
                print(f"onIncomingCall: {exc!r}", file=sys.stderr)

    acc = Answerer() if args.answer else pj.Account()
    acc.create(acc_cfg, True)

    def media_ready(leg: Leg, am: pj.AudioMedia) -> None:
        leg.media = am
        if leg.ear is None:
            leg.ear = Ear(f"ear{leg.index}")
            am.startTransmit(leg.ear)
            if args.record:
                leg.record_path = f"{args.record}-{leg.index}.wav"
                leg.recorder = pj.AudioMediaRecorder()
                leg.recorder.createRecorder(leg.record_path)
                am.startTransmit(leg.recorder)
                leg.record_started = time.monotonic()

    if not args.answer:
        legs.extend(Leg(i, steps) for i in range(args.calls))
    start = time.monotonic()
    deadline = start + args.timeout
    started = 0
    next_stat = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if args.answer:
            started = len(legs)
        elif started < len(legs) and now >= start + started * args.stagger:
            leg = legs[started]
            leg.call = UaCall(acc, leg, media_ready)
            prm = pj.CallOpParam(True)
            leg.call.makeCall(args.target, prm)
            leg.step_started = now
            started += 1
        ep.libHandleEvents(5)
        for leg in legs[:started]:
            advance(leg, time.monotonic(), args.dtmf_method)
        if time.monotonic() >= next_stat:
            next_stat = time.monotonic() + 0.25
            for leg in legs[:started]:
                sample_stream(leg)
        done = 0 < len(legs) == args.calls and started == len(legs)
        if done and all(leg.state == "ended" for leg in legs):
            break
    for leg in legs:
        if leg.state != "ended" and leg.call is not None:
            leg.error = leg.error or f"timed out in step {leg.step}: {step_of(leg)}"
            with contextlib.suppress(Exception):
                leg.call.hangup(pj.CallOpParam())
    settle = time.monotonic() + 2.0
    while time.monotonic() < settle and any(leg.state != "ended" for leg in legs[:started]):
        ep.libHandleEvents(10)
    for leg in legs:
        print(json.dumps(report(leg, start)), flush=True)
    for leg in legs:
        leg.call = None
        leg.media = None
        leg.recorder = None
        leg.voices.clear()
    time.sleep(0.2)
    for leg in legs:
        leg.ear = None
    acc.shutdown()
    del acc
    gc.collect()
    ep.libDestroy()
    return 0 if all(not leg.error for leg in legs) else 1


def step_of(leg: Leg) -> str:
    return leg.steps[leg.step] if leg.step < len(leg.steps) else "done"


def advance(leg: Leg, now: float, dtmf_method: str) -> None:
    if leg.dtmf_queue and now >= leg.next_dtmf_at and leg.state == "up":
        send_digit(leg, leg.dtmf_queue.pop(0), dtmf_method)
        leg.next_dtmf_at = now + DTMF_GAP
        if not leg.dtmf_queue:
            next_step(leg, now)
        return
    if leg.state != "up" or leg.step >= len(leg.steps) or leg.dtmf_queue:
        if leg.state == "ended" and step_of(leg).startswith("expect_end"):
            leg.log.append((now, "ended", leg.code))
            leg.step = len(leg.steps)
        return
    name, *params = step_of(leg).split(":")
    elapsed = now - leg.step_started
    ear = leg.ear
    if name == "wait":
        if elapsed >= float(params[0]):
            next_step(leg, now)
    elif name == "audio":
        limit = float(params[0]) if params else 15.0
        if ear is not None and ear.last_sound > leg.step_started:
            heard = ear.first_sound_after.get(leg.step_started, ear.last_sound)
            if leg.last_dtmf_at is not None:
                leg.latencies_ms.append((heard - leg.last_dtmf_at) * 1000.0)
            leg.log.append((heard, "audio", None))
            next_step(leg, now)
        elif elapsed > limit:
            fail(leg, f"no audio within {limit}s")
    elif name == "silence":
        quiet, limit = float(params[0]) / 1000.0, float(params[1]) if len(params) > 1 else 30.0
        if ear is not None and ear.last_sound > 0 and now - ear.last_sound >= quiet:
            next_step(leg, now)
        elif elapsed > limit:
            fail(leg, f"no {params[0]} ms silence within {limit}s")
    elif name == "dtmf":
        leg.dtmf_queue = list(params[0])
    elif name == "say":
        if leg.media is None:
            fail(leg, "say: no media yet")
            return
        voice = pj.AudioMediaPlayer()
        voice.createPlayer(params[0], pj.PJMEDIA_FILE_NO_LOOP)
        voice.startTransmit(leg.media)
        leg.voices.append(voice)  # kept until the run ends: ports die after the calls
        leg.log.append((now, "say", params[0]))
        next_step(leg, now)
    elif name == "hangup":
        leg.log.append((now, "hangup", None))
        leg.call.hangup(pj.CallOpParam())
        next_step(leg, now)
    elif name == "expect_end":
        if elapsed > (float(params[0]) if params else 15.0):
            fail(leg, "far end did not hang up")
    else:
        fail(leg, f"unknown step {name!r}")


def next_step(leg: Leg, now: float) -> None:
    leg.step += 1
    leg.step_started = now
    if leg.ear is not None:
        leg.ear.watch(now)


def send_digit(leg: Leg, digit: str, method: str) -> None:
    prm = pj.CallSendDtmfParam()
    prm.digits = digit
    prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO if method == "info" else pj.PJSUA_DTMF_METHOD_RFC2833
    leg.call.sendDtmf(prm)
    leg.last_dtmf_at = time.monotonic()
    leg.log.append((leg.last_dtmf_at, "dtmf", digit))
    if leg.ear is not None:
        leg.ear.watch(leg.last_dtmf_at)


def fail(leg: Leg, why: str) -> None:
    leg.error = why
    leg.step = len(leg.steps)
    if leg.call is not None and leg.state == "up":
        leg.call.hangup(pj.CallOpParam())


def sample_stream(leg: Leg) -> None:
    """Note the receive side's jitter-buffer and RTP counters; log when one moves.

    A damaged recording is then placed: lost or reordered packets (the sender or the path),
    or frames the jitter buffer discarded or played empty (this process starved).
    """
    if leg.state != "up" or leg.media is None or leg.call is None:
        return
    try:
        stat = leg.call.getStreamStat(0)
    except Exception:
        return  # no stream (yet, or any more)
    jb, rx = stat.jbuf, stat.rtcp.rxStat
    now = {
        "jb_discard": jb.discard, "jb_lost": jb.lost, "jb_empty": jb.empty,
        "jb_max_delay_ms": jb.maxDelayMsec, "rx_pkt": rx.pkt, "rx_loss": rx.loss,
        "rx_reorder": rx.reorder, "rx_dup": rx.dup, "rx_jitter_max_us": rx.jitterUsec.max,
    }  # fmt: skip
    moved = {k: v for k, v in now.items() if k.startswith(("jb_d", "jb_l", "rx_l", "rx_r"))
             and v != leg.stream.get(k, 0)}  # fmt: skip
    if moved:
        leg.log.append((time.monotonic(), "stream", moved))
    leg.stream = now


def report(leg: Leg, start: float) -> dict[str, object]:
    base = leg.record_started
    return {
        "index": leg.index,
        "code": leg.code,
        "reason": leg.reason,
        "error": leg.error,
        "record": leg.record_path,
        # Event times in seconds from the start of the recording (or of the run).
        "events": [[round(t - (base or start), 3), kind, value] for t, kind, value in leg.log],
        "latencies_ms": [round(x, 1) for x in leg.latencies_ms],
        "invite": leg.invite,
        "stream": leg.stream,
    }


if __name__ == "__main__":
    sys.exit(main())
