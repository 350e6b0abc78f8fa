"""`/today`: whom to call now, in order (accounts/worklist.py `order`), one page at a time.

Collectors see their own accounts; supervisors and administrators choose a collector or all.
Each row shows what is due, the past-due amount, the age of the oldest open invoice, the last
contact and its outcome, and each contact's callable state from the guardrails, with a Make a
Call button where a call is allowed now (collectors: their own phone rings first).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from accounts import audit
from accounts.guardrails import Guardrails
from accounts.models import Collector
from accounts.users import Principal
from accounts.worklist import last_contacts, order, standings
from voice.api.auth import client_addr, clock_of, sessions_of
from voice.api.dialout import DIALERS
from voice.pages.callable import contact_states, guardrails
from voice.pages.web import page, render

PAGE_SIZE = 25
WORKERS = ("collector", "supervisor", "admin")  # who works the list


@page(*WORKERS)
async def today(request: Request, user: Principal) -> Response:
    chosen = _chosen_collector(request, user)
    number = _page_number(request.query_params.get("page"))
    day = clock_of(request)().astimezone().date()  # as GET /api/followups counts "today"
    args = (request, user, chosen, number, day, guardrails(request))
    ctx = await run_in_threadpool(_worklist, *args)
    return render(request, user, "today.html", **ctx, can_call=user.role in DIALERS)


def _chosen_collector(request: Request, user: Principal) -> int | None:
    """Collectors: themselves. Others: ?collector=ID, or all (None)."""
    if user.role == "collector":
        return user.collector_id if user.collector_id is not None else -1
    value = request.query_params.get("collector", "all")
    return int(value) if value.isdigit() and len(value) < 19 else None


def _page_number(value: str | None) -> int:
    return int(value) if value and value.isdigit() and 0 < len(value) < 7 else 1


def _worklist(
    request: Request,
    user: Principal,
    chosen: int | None,
    number: int,
    day: dt.date,
    guard: Guardrails,
) -> dict[str, Any]:
    sessions = sessions_of(request)
    with sessions.begin() as session:
        ordered = order(standings(session, chosen, day))
        pages = max(1, -(-len(ordered) // PAGE_SIZE))
        number = min(number, pages)
        rows = ordered[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        ids = [r.account_id for r in rows]
        contacts = contact_states(session, guard, ids)
        last = last_contacts(session, ids)
        detail = {"collector": chosen, "page": number, "accounts": [r.number for r in rows]}
        audit.record(session, user, client_addr(request), "worklist.read", "account", None, detail)
        collectors = _collectors(session) if user.role != "collector" else []
    return {
        "rows": rows,
        "contacts": contacts,
        "last": last,
        "today": day,
        "page": number,
        "pages": pages,
        "total": len(ordered),
        "chosen": chosen,
        "collectors": collectors,
        "position": (number - 1) * PAGE_SIZE,
    }


def _collectors(session: Session) -> list[tuple[int, str]]:
    stmt = select(Collector.id, Collector.name).order_by(Collector.name)
    return [(cid, name) for cid, name in session.execute(stmt)]


ROUTES: list[BaseRoute] = [Route("/today", today, methods=["GET"])]
