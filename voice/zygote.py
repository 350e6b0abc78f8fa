"""The worker factory: loads the heavy, read-only parts once, then forks call workers on request.

Why fork from here rather than exec each worker: the Vosk model (hundreds of MB) and the Python
modules are loaded once, and every worker forked afterwards shares those pages copy-on-write (the
gunicorn `preload` pattern). The supervisor cannot fork workers itself: it runs uvicorn and thread
pools, and forking a threaded process is unsafe. This process stays single-threaded and never
touches pjsua2 (each worker creates its own Endpoint after the fork).

Protocol, JSON lines. stdin (from the supervisor): `{"op": "spawn", "name": "w3"}`.
stdout (to the supervisor): `{"event": "ready", "model": ...}`, `{"event": "started", "name":
"w3", "pid": 123}`, `{"event": "exited", "name": "w3", "pid": 123, "status": -9}` (negative:
killed by that signal). End of stdin means the supervisor is gone: the workers are sent SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import selectors
import signal
import sys
from typing import Any

from voice.asr.after import transcriber_names
from voice.config import Config
from voice.fleet import worker_specs

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _prctl(option: int, value: int | bytes) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the EOF on stdin still stops us
        log.debug("prctl unavailable")


def _die_with_parent(sig: int) -> None:
    """Linux: get `sig` when the parent process dies, so no process outlives its owner."""
    _prctl(PR_SET_PDEATHSIG, sig)


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _preload(cfg: Config) -> Any:
    # Imported here, before any fork, so workers start with the modules (and model) in memory.
    import voice.calls.worker  # noqa: F401
    from voice.asr.model import load_model

    return load_model(cfg.asr.model)


def _exit_status(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


class Zygote:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.specs = {spec.name: spec for spec in worker_specs(cfg)}
        self.transcribers = set(transcriber_names(cfg))  # after-call transcription processes
        self.children: dict[int, str] = {}
        self.model: Any = None

    def run(self) -> int:
        _die_with_parent(signal.SIGTERM)
        self.model = _preload(self.cfg)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        # A handler (not SIG_DFL) so the wakeup fd is written when a child exits.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._terminate_all())
        _emit(event="ready", model=self.cfg.asr.model if self.model is not None else None)
        sel = selectors.DefaultSelector()
        sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        buffer = b""
        while True:
            for key, _ in sel.select(timeout=1.0):
                if key.data == "signal":
                    os.read(wake_r, 4096)
                    continue
                chunk = os.read(sys.stdin.fileno(), 65536)
                if not chunk:  # supervisor gone or done with us
                    self._terminate_all()
                    self._reap(block=True)
                    return 0
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._command(line)
            self._reap(block=False)

    def _command(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            op, name = request["op"], request["name"]
        except (ValueError, KeyError, TypeError):
            _emit(event="error", error="unreadable command")
            return
        if op != "spawn" or (name not in self.specs and name not in self.transcribers):
            _emit(event="error", error=f"cannot {op} {name!r}")
            return
        if name in self.children.values():
            _emit(event="error", error=f"{name} is already running")
            return
        pid = os.fork()
        if pid == 0:
            self._become(name)  # never returns
        self.children[pid] = name
        _emit(event="started", name=name, pid=pid)

    def _become(self, name: str) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            _die_with_parent(signal.SIGKILL)  # a worker without its zygote is unmanaged
            _prctl(PR_SET_NAME, f"voice-{name}".encode()[:15])  # `ps -o comm`, top
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(2, 1)  # stdout is the supervisor's event pipe: workers log to stderr
            if name in self.transcribers:
                from voice.asr.after import run as transcribe

                transcribe(self.cfg, name, self.model)
            else:
                from voice.calls.worker import run

                run(self.cfg, self.specs[name], self.model)
            code = 0
        except BaseException:
            logging.getLogger("voice.calls.worker").exception("%s failed", name)
        finally:
            sys.stderr.flush()
            os._exit(code)

    def _reap(self, block: bool) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            name = self.children.pop(pid, None)
            if name is not None:
                _emit(event="exited", name=name, pid=pid, status=_exit_status(status))

    def _terminate_all(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def run(cfg: Config) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # no BLAS thread pool in a forking process
    return Zygote(cfg).run()
