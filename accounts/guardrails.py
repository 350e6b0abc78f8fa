"""Outbound call guardrails: may this account be called now, at this number?

`Guardrails(cfg, sessions, clock).check(account_id, "+13125550100")` returns None (call) or a
`Refusal` naming the rule, the HTTP status an API answers with, and a reason that says when
calling becomes allowed. Every refusal is logged here; `record_refusal` adds it to the audit
log for a caller that acts for a user. The clock is injected: tests fix it.

How the rules (`[guardrails]` in config.toml) are read here, first failing rule wins:

1. destination_not_allowed (403): the number is not E.164 or matches none of
   `allowed_destinations` ("+" and digits, a trailing "*" for any further digits). Toll-fraud
   protection: it applies even with `enabled = false`.
2. calling_hours (409): a call may start from `calling_hours_start` until before
   `calling_hours_end` (20:59 yes, 21:00 no), local time in the account's IANA `timezone`
   (12 CFR 1006.6(b)(1)(i)). An account whose time zone is unknown is refused: its local time
   cannot be known.
3. recent_conversation (409): no call for `quiet_days_after_conversation` calendar days after
   a conversation, the conversation's local day being day 1 (12 CFR 1006.14(b)(2)(ii)): with
   7, a conversation on Monday refuses calls through Sunday. A conversation is an outbound call
   on the account whose latest outcome (accounts/outcomes.py) is a right-party contact:
   reached, promise_to_pay, dispute or follow_up. Inbound calls never count (the issue:
   "inbound calls do not count"), nor does a call nobody marked.
4. attempt_limit (409): at most `max_attempts` outbound calls to the account within
   `attempt_window_days` calendar days, today included (12 CFR 1006.14(b)(2)(i)). Every
   outbound attempt counts, answered or not (a call row, or a reservation not given back:
   accounts/attempts.py); inbound calls never do.

Days are calendar days in the account's time zone, as the regulation counts them; so a DST
change never stretches or shrinks a window. A time a refusal names as "allowed from" is when
the rule stops refusing (a later rule may still refuse then).

`check` only asks. A caller about to dial calls `reserve(session, ...)` instead: the same rules,
under the account's lock, and the allowed attempt inserted before the lock goes
(accounts/attempts.py), so two requests racing for the last allowed attempt cannot both pass.
The attempt limit counts those reservations as well as outbound calls.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session, sessionmaker

from accounts import attempts, audit
from accounts.models import Account, utcnow
from accounts.outcomes import last_conversation
from accounts.phones import E164
from accounts.services import UnknownAccount

log = logging.getLogger(__name__)

REFUSED = "call.refused"  # audit action of `record_refusal`

Clock = Callable[[], dt.datetime]


class Rules(Protocol):
    """The `[guardrails]` settings the rules read: voice/config.py's `GuardrailsConfig`, named
    by its shape so that accounts/ (shared by the worker, the API and the pages) does not
    depend on the voice package. Read-only members: a frozen config satisfies them."""

    @property
    def enabled(self) -> bool: ...
    @property
    def calling_hours_start(self) -> str: ...
    @property
    def calling_hours_end(self) -> str: ...
    @property
    def hours(self) -> tuple[dt.time, dt.time]: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def attempt_window_days(self) -> int: ...
    @property
    def quiet_days_after_conversation(self) -> int: ...
    @property
    def allowed_destinations(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Refusal:
    rule: str  # calling_hours, attempt_limit, recent_conversation, destination_not_allowed
    status: int  # 409: not now; 403: never to this number
    reason: str
    allowed_from: dt.datetime | None = None  # UTC; None: waiting does not help

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "status": self.status,
            "reason": self.reason,
            "allowed_from": self.allowed_from.isoformat() if self.allowed_from else None,
        }


def destination_allowed(patterns: tuple[str, ...], e164: str) -> bool:
    """Does `e164` match one of `patterns` (exact, or a prefix before a trailing "*")?"""
    if not E164.fullmatch(e164):
        return False
    return any(e164.startswith(p[:-1]) if p.endswith("*") else e164 == p for p in patterns)


def check_destination(cfg: Rules, e164: str) -> Refusal | None:
    if destination_allowed(cfg.allowed_destinations, e164):
        return None
    if not E164.fullmatch(e164):
        reason = f"destination {e164!r} is not an E.164 number (+ and up to 15 digits)"
    else:
        allowed = ", ".join(cfg.allowed_destinations) or "none"
        reason = f"destination {e164} is not in guardrails.allowed_destinations ({allowed})"
    return Refusal("destination_not_allowed", 403, reason)


def check_hours(cfg: Rules, zone: ZoneInfo, now: dt.datetime) -> Refusal | None:
    start, end = cfg.hours
    local = now.astimezone(zone)
    if start <= local.time() < end:
        return None
    day = local.date() if local.time() < start else local.date() + dt.timedelta(days=1)
    allowed = _local(day, start, zone)
    reason = (
        f"outside calling hours {cfg.calling_hours_start}-{cfg.calling_hours_end} {zone.key} "
        f"(now {local:%H:%M} there); allowed from {_when(allowed, zone)}"
    )
    return Refusal("calling_hours", 409, reason, allowed)


class Guardrails:
    """The rules of `cfg` over the calls in the database, at the time `clock` says."""

    def __init__(self, cfg: Rules, sessions: sessionmaker[Session], clock: Clock = utcnow) -> None:
        self._cfg = cfg
        self._sessions = sessions
        self._clock = clock

    def check(
        self, account_id: int, destination_e164: str, session: Session | None = None
    ) -> Refusal | None:
        """May the account be called at this number now? None: yes. UnknownAccount if none.

        A caller inside a session passes it: a second connection per request can exhaust the
        pool when many requests wait for one (each holding its first).
        """
        refusal = check_destination(self._cfg, destination_e164) or self._account(
            account_id, session
        )
        if refusal is not None:
            _log_refusal(account_id, destination_e164, refusal)
        return refusal

    def reserve(
        self, session: Session, account_id: int, destination_e164: str, source: str
    ) -> Refusal | int:
        """Check and, if allowed, reserve the attempt: its id, or the refusal.

        Runs in the caller's transaction, which must commit soon (it holds the account's lock,
        on SQLite the database's write lock) and before anything is dialled.
        """
        refusal = check_destination(self._cfg, destination_e164)
        if refusal is None:
            now = self._now()
            account = attempts.lock_account(session, account_id)
            if account is None:
                raise UnknownAccount(f"no account with id {account_id}")
            refusal = self._rules(session, account, now)
        if refusal is not None:
            _log_refusal(account_id, destination_e164, refusal)
            return refusal
        return attempts.reserve(session, account_id, destination_e164, source)

    def check_account(self, account_id: int, session: Session | None = None) -> Refusal | None:
        """The account's rules alone (hours, conversation, attempts), whatever the number."""
        refusal = self._account(account_id, session)
        if refusal is not None:
            log.info(
                "call to account id %s refused (%s): %s", account_id, refusal.rule, refusal.reason
            )
        return refusal

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(f"clock returned naive {now!r}: it must be timezone-aware")
        return now

    def _account(self, account_id: int, session: Session | None) -> Refusal | None:
        now = self._now()
        if session is None:
            with self._sessions() as own:
                return self._account(account_id, own)
        account = session.get(Account, account_id)
        if account is None:
            raise UnknownAccount(f"no account with id {account_id}")
        return self._rules(session, account, now)

    def _rules(self, session: Session, account: Account, now: dt.datetime) -> Refusal | None:
        if not self._cfg.enabled:
            return None
        try:
            zone = ZoneInfo(account.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            reason = (
                f"account {account.number} has an unknown time zone "
                f"{account.timezone!r}: its calling hours cannot be checked"
            )
            return Refusal("calling_hours", 409, reason)
        return (
            check_hours(self._cfg, zone, now)
            or self._conversation(session, account, zone, now)
            or self._attempts(session, account, zone, now)
        )

    def _conversation(
        self, session: Session, account: Account, zone: ZoneInfo, now: dt.datetime
    ) -> Refusal | None:
        days = self._cfg.quiet_days_after_conversation
        if days == 0:
            return None
        since = _first_day(now, zone, days)
        found = last_conversation(session, account.id, since)
        if found is None:
            return None
        call_id, started = found
        day = started.astimezone(zone).date()
        allowed = _local(day + dt.timedelta(days=days), self._cfg.hours[0], zone)
        reason = (
            f"recent conversation: call {call_id} on {day} reached account {account.number}; "
            f"no calls for {days} days after a conversation; "
            f"allowed from {_when(allowed, zone)}"
        )
        return Refusal("recent_conversation", 409, reason, allowed)

    def _attempts(
        self, session: Session, account: Account, zone: ZoneInfo, now: dt.datetime
    ) -> Refusal | None:
        limit, days = self._cfg.max_attempts, self._cfg.attempt_window_days
        since = _first_day(now, zone, days)
        starts = attempts.attempt_times(session, account.id, since, limit)
        if len(starts) < limit:
            return None
        # The window drops the oldest of these `limit` calls on the day `days` after it.
        oldest = starts[-1].astimezone(zone).date()
        allowed = _local(oldest + dt.timedelta(days=days), self._cfg.hours[0], zone)
        reason = (
            f"attempt limit: {limit} outbound calls to account {account.number} since "
            f"{oldest} (at most {limit} in {days} days); allowed from {_when(allowed, zone)}"
        )
        return Refusal("attempt_limit", 409, reason, allowed)


def record_refusal(
    sessions: Session | sessionmaker[Session],
    user: audit.Actor | None,
    client_addr: str | None,
    account: str | int,
    destination: str | None,
    refusal: Refusal,
) -> None:
    """Append the refusal of a call to the audit log (action `call.refused`, target the
    account: its number, or id), for whoever asked for the call."""
    detail = {"to": destination, **refusal.as_dict()}
    audit.record(sessions, user, client_addr, REFUSED, "account", account, detail)


def _log_refusal(account_id: int, destination: str, refusal: Refusal) -> None:
    log.info(
        "outbound call to %r for account id %s refused (%s): %s",
        destination,
        account_id,
        refusal.rule,
        refusal.reason,
    )


def _first_day(now: dt.datetime, zone: ZoneInfo, days: int) -> dt.datetime:
    """Local midnight starting a window of `days` calendar days that ends today, in UTC."""
    today = now.astimezone(zone).date()
    return _local(today - dt.timedelta(days=days - 1), dt.time(), zone)


def _local(day: dt.date, time: dt.time, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, time, tzinfo=zone).astimezone(dt.UTC)


def _when(instant: dt.datetime, zone: ZoneInfo) -> str:
    return f"{instant.astimezone(zone):%Y-%m-%d %H:%M} {zone.key}"
