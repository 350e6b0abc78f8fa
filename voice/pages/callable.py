"""Whether each contact of an account may be called now: the guardrails' own answer.

Both `/today` and `/accounts/{number}` show it per contact; the answer is
accounts/guardrails.py `Guardrails.check`, the same call the API's
`GET /api/accounts/{number}/callable?to=` makes and POST /api/calls enforces.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request

from accounts.guardrails import Guardrails, Refusal
from accounts.models import Contact
from voice.api.auth import clock_of, config_of, sessions_of


@dataclass(frozen=True)
class ContactState:
    phone: str
    label: str | None
    refusal: Refusal | None  # None: may be called now

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def allowed_from(self) -> dt.datetime | None:
        return self.refusal.allowed_from if self.refusal else None


def guardrails(request: Request) -> Guardrails:
    cfg = config_of(request)
    return Guardrails(cfg.guardrails, sessions_of(request), clock_of(request))


def contact_states(
    session: Session, guard: Guardrails, account_ids: list[int]
) -> dict[int, list[ContactState]]:
    """Each account's contacts, in the order Make a Call picks them, with the guardrails' answer."""
    out: dict[int, list[ContactState]] = {account_id: [] for account_id in account_ids}
    if not account_ids:
        return out
    rows = session.execute(
        select(Contact.account_id, Contact.phone_e164, Contact.label)
        .where(Contact.account_id.in_(account_ids))
        .order_by(Contact.account_id, Contact.id)
    )
    for account_id, phone, label in rows:
        out[account_id].append(ContactState(phone, label, guard.check(account_id, phone)))
    return out
