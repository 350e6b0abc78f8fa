"""Collector-placed calls' policy: the softphone's check, caller ID, and status words.

The calls themselves are scripts in voice/calls/collector.py. The customer is dialled through
Kamailio (`sip:+1...@<realm>`, which Kamailio sends to `kamailio.gateway`, the trunk)
presenting the caller ID in From and P-Asserted-Identity (`caller_id_headers`).
Each is one outbound `calls` row on the account; its `call_events` tell its progress:

    click_to_call | softphone_call    who asked, which collector, which number, caller ID
    collector_ringing, collector_answered | collector_no_answer | collector_busy | ...
    dialling_customer
    customer_answered | customer_busy | customer_no_answer | customer_failed
    bridged, ended {seconds, ended_by}

`status_of(events)` turns them into one status word for an API.

A softphone's call is checked before anything is dialled (`check_softphone_call`): the softphone
must belong to a collector, the number must be a contact of an account (the collector's own
first), and `Guardrails.reserve` must allow it (reserving the attempt the call then is);
otherwise the INVITE is refused with 403 and a `Reason: SIP;cause=403;text="..."` header, and
the refusal goes to the audit log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.guardrails import Guardrails, Refusal, record_refusal
from accounts.models import Account, Collector, Contact, Softphone
from accounts.phones import InvalidPhone, normalize
from voice.config import Config

log = logging.getLogger(__name__)

STATUS_EVENTS = {
    "click_to_call": "requested",
    "softphone_call": "requested",
    "collector_ringing": "ringing_collector",
    "collector_answered": "collector_answered",
    "collector_no_answer": "collector_no_answer",
    "collector_busy": "collector_busy",
    "collector_failed": "collector_failed",
    "dialling_customer": "dialling_customer",
    "customer_answered": "customer_answered",
    "customer_busy": "customer_busy",
    "customer_no_answer": "customer_no_answer",
    "customer_failed": "customer_failed",
    "bridged": "bridged",
    "ended": "ended",
}


@dataclass(frozen=True)
class SoftphoneCall:
    """A softphone's call that may go ahead: who places it, to whom, on which account."""

    softphone: str
    collector_id: int
    collector: str
    account_id: int
    account: str
    e164: str
    attempt: int  # reserved by the check (accounts/attempts.py); the call attaches it


@dataclass(frozen=True)
class SoftphoneActor:
    """The audit log's actor for a softphone (no API user)."""

    id: int | None
    name: str
    role: str = "collector"


def status_of(events: list[tuple[str, dict[str, object]]]) -> str:
    """The latest status word of a collector-placed call, from its call events."""
    status = "unknown"
    for kind, _ in events:
        status = STATUS_EVENTS.get(kind, status)
    return status


def sip_uri(user: str, realm: str) -> str:
    return f"sip:{user}@{realm}"


def caller_id_headers(caller_id: str, realm: str) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """(From URI, extra headers) presenting `caller_id`; (None, ()) for the trunk's default."""
    if not caller_id:
        return None, ()
    uri = sip_uri(caller_id, realm)
    return f"<{uri}>", (("P-Asserted-Identity", f"<{uri}>"),)


def check_softphone_call(
    cfg: Config, session: Session, guardrails: Guardrails, softphone: str, dialled: str | None
) -> SoftphoneCall | Refusal:
    """May `softphone` call the number it dialled? The call, or the refusal to answer with.

    An allowed call's attempt is reserved in `session` (`Guardrails.reserve`): commit it.
    """
    phone = session.scalar(select(Softphone).where(Softphone.username == softphone))
    if phone is None or phone.collector_id is None:
        return Refusal("softphone", 403, f"softphone {softphone} is not linked to a collector")
    collector = session.get(Collector, phone.collector_id)
    assert collector is not None  # a foreign key
    try:
        e164 = normalize(dialled or "", cfg.accounts.default_region)
    except InvalidPhone as exc:
        return Refusal("destination_not_allowed", 403, f"not a phone number: {exc.reason}")
    accounts = list(
        session.scalars(
            select(Account)
            .join(Contact, Contact.account_id == Account.id)
            .where(Contact.phone_e164 == e164)
            .order_by(Account.number)
        )
    )
    if not accounts:
        return Refusal("destination_not_allowed", 403, f"{e164} is not a contact of any account")
    own = [a for a in accounts if a.collector_id == collector.id]
    account = (own or accounts)[0]
    reserved = guardrails.reserve(session, account.id, e164, f"softphone:{softphone}")
    if isinstance(reserved, Refusal):
        return reserved
    return SoftphoneCall(
        softphone, collector.id, collector.name, account.id, account.number, e164, reserved
    )


def audit_softphone_refusal(
    session_factory: object, softphone: str, account: str | None, e164: str | None, refusal: Refusal
) -> None:
    actor = SoftphoneActor(None, f"softphone:{softphone}")
    record_refusal(session_factory, actor, None, account or "-", e164, refusal)  # type: ignore[arg-type]
