"""What the HTTP API, the pages and the control socket ask of the running fleet: its health,
placing calls (a dial, Make a Call) on the least busy worker, and operations on a call in
progress (PCI pause, live transcript, hang-up) sent to whichever worker holds it.

The supervisor (voice/supervisor.py) owns the processes; this only talks to them over their
control sockets (voice/control.py) and reads their state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from voice import control, procinfo
from voice.config import Config
from voice.keeper import TranscriberState, WorkerState, ZygoteKeeper

HEALTH_TIMEOUT = 1.0  # seconds a worker may take to answer a health request


class FleetOps:
    """The fleet as the API sees it (`app.state.fleet`): `cfg`, `health()` and the call
    operations. `kamailio()` gives the front's process once started (None in developer mode)."""

    def __init__(
        self,
        cfg: Config,
        workers: dict[str, WorkerState],
        transcribers: dict[str, TranscriberState],
        keeper: ZygoteKeeper,
        stopping: asyncio.Event,
        kamailio: Callable[[], Any],
    ) -> None:
        self.cfg = cfg
        self.workers = workers
        self.transcribers = transcribers
        self._keeper = keeper
        self._stopping = stopping
        self._kamailio = kamailio

    async def _ask(self, worker: WorkerState, op: str, **args: Any) -> dict[str, Any]:
        return await control.request(worker.spec.control_path, op, HEALTH_TIMEOUT, **args)

    async def _healths(self) -> dict[str, dict[str, Any]]:
        """Each live worker's health answer, by name; a worker that does not answer is absent."""
        live = [w for w in self.workers.values() if w.alive]
        answers = await asyncio.gather(
            *(self._ask(w, "health") for w in live), return_exceptions=True
        )
        return {w.spec.name: a for w, a in zip(live, answers, strict=True) if isinstance(a, dict)}

    async def _ask_holder(self, call_id: int, op: str, **args: Any) -> tuple[str, dict[str, Any]]:
        """Send `op` to whichever live worker holds `call_id`: (its name, its reply)."""
        for worker in self.workers.values():
            if worker.alive:
                with contextlib.suppress(control.ControlError):
                    reply = await self._ask(worker, op, call_id=call_id, **args)
                    reply.pop("ok", None)
                    return worker.spec.name, reply
        raise LookupError(f"no worker holds call {call_id}")

    async def health(self) -> dict[str, Any]:
        by_name = await self._healths()
        workers = []
        for worker in self.workers.values():
            answer = by_name.get(worker.spec.name)
            ready = answer is not None
            use = procinfo.usage(worker.pid) if worker.pid else None
            workers.append(
                {
                    "name": worker.spec.name,
                    "alive": worker.alive,
                    "ready": ready,
                    "pid": worker.pid,
                    "sip_port": worker.spec.sip.port,
                    "restarts": worker.restarts,
                    "exits": worker.exits,
                    "calls": answer["calls"] if ready else None,
                    "max_calls": worker.spec.sip.max_calls,
                    "draining": answer["draining"] if ready else None,
                    "counters": answer["counters"] if ready else None,
                    "memory_kb": use.as_dict() if use else None,
                }
            )
        front = self._kamailio()
        kamailio_ok = front is None or front.alive
        zygote = self._keeper.process
        others = [os.getpid()] + ([zygote.pid] if zygote else [])
        total_pss = sum(w["memory_kb"]["pss_kb"] for w in workers if w["memory_kb"]) + sum(
            u.pss_kb for pid in others if (u := procinfo.usage(pid))
        )
        ok = all(w["ready"] for w in workers) and kamailio_ok and not self._stopping.is_set()
        return {
            "status": "ok" if ok else "degraded",
            "workers": workers,
            "kamailio": None if front is None else {"alive": front.alive, "pid": front.pid},
            "zygote_pid": zygote.pid if zygote else None,
            "transcribers": [
                {"name": t.name, "pid": t.pid, "restarts": t.restarts, "exits": t.exits}
                for t in self.transcribers.values()
            ],
            "asr_model": self._keeper.model,
            "capacity": {
                "calls": sum(w["calls"] or 0 for w in workers),
                "max_calls": sum(w["max_calls"] for w in workers if w["ready"]),
            },
            "memory_total_pss_kb": total_pss,
        }

    async def dial(self, to: str) -> dict[str, Any]:
        """Place a call on the least busy worker that has a free slot."""
        worker = await self._least_busy(slots=1)
        reply = await control.request(worker.spec.control_path, "dial", 10.0, to=to)
        return {"worker": worker.spec.name, "call_id": reply["call_id"]}

    async def click_to_call(self, **request: Any) -> dict[str, Any]:
        """Ring a collector, then their customer, and bridge them (both legs on one worker).

        `request`: collector, customer, account_id, user, caller_id (voice/api/dialout.py).
        """
        worker = await self._least_busy(slots=2)
        reply = await control.request(worker.spec.control_path, "click_to_call", 10.0, **request)
        reply.pop("ok", None)
        return {"worker": worker.spec.name, **reply}

    async def _least_busy(self, slots: int) -> WorkerState:
        free = sorted(
            (a["calls"], name)
            for name, a in (await self._healths()).items()
            if not a["draining"] and a["calls"] + slots <= a["max_calls"]
        )
        if not free:
            raise RuntimeError(f"no call worker has {slots} free slot(s)")
        return self.workers[free[0][1]]

    async def pause_recording(self, call_id: int, paused: bool) -> dict[str, Any]:
        """PCI pause/resume on whichever worker holds the call."""
        try:
            _, reply = await self._ask_holder(call_id, "pause_recording", paused=paused)
        except LookupError:
            raise LookupError(f"no recording in progress for call {call_id}") from None
        return reply

    async def live_transcript(self, call_id: int) -> dict[str, Any]:
        """The transcript so far, partial words included, from the worker holding the call."""
        _, reply = await self._ask_holder(call_id, "transcript")
        return reply

    async def hangup(self, call_id: int) -> dict[str, Any]:
        name, _ = await self._ask_holder(call_id, "hangup")
        return {"worker": name, "call_id": call_id}
