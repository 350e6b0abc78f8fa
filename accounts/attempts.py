"""Outbound attempts reserved under a per-account lock, so the attempt limit cannot be raced.

12 CFR 1006.14(b)(2)(i) counts attempts. Counting the account's calls and dialling afterwards
lets two requests racing for the last allowed attempt both pass. So the check that allows a
call runs in one transaction that first locks the account (`lock_account`: PostgreSQL
`SELECT ... FOR UPDATE` of its row; SQLite `BEGIN IMMEDIATE`, the database's one write lock)
and ends by inserting the attempt (`reserve`); the next check waits on that lock and counts it.

The reservation is the attempt, counted from its commit. The worker attaches it to the call it
journals (`attach`, which also puts the call on the account: one transaction, so a call and its
reservation never count twice nor go uncounted in between). A dial that fails before anything
was sent `release`s it. Counted (`attempt_times`): every attached attempt, every attempt not
released, and every outbound call on the account that no attempt is attached to (calls placed
before reservations existed, or by paths that reserve none). An attempt that is neither attached
nor released (the process asking died in between) keeps counting: the rule errs towards not
calling.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, or_, select, union_all, update
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Account, Call, OutboundAttempt, utcnow


def lock_account(session: Session, account_id: int) -> Account | None:
    """The account, locked against other reservations until `session` commits.

    On SQLite the lock is the database's write lock, so it must be taken before anything of the
    transaction is read: pysqlite opens none for plain SELECTs, and one that already wrote holds
    the write lock anyway.
    """
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        if not conn.connection.dbapi_connection.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # waits up to busy_timeout for the lock
        return session.get(Account, account_id, populate_existing=True)
    stmt = (
        select(Account)
        .where(Account.id == account_id)
        .with_for_update(of=Account)  # the account row only, not its eager-loaded customer
        .execution_options(populate_existing=True)
    )
    return session.scalar(stmt)


def reserve(session: Session, account_id: int, destination: str, source: str) -> int:
    """Insert the attempt (the caller holds `lock_account` and commits); its id."""
    attempt = OutboundAttempt(
        account_id=account_id,
        destination=destination,
        source=source[:120],
        reserved_at=utcnow(),
    )
    session.add(attempt)
    session.flush()
    return attempt.id


def attempt_times(
    session: Session, account_id: int, since: dt.datetime, limit: int
) -> list[dt.datetime]:
    """When the account's counted attempts since `since` were made, newest first, at most
    `limit` of them."""
    held = select(OutboundAttempt.reserved_at.label("at")).where(
        OutboundAttempt.account_id == account_id,
        OutboundAttempt.reserved_at >= since,
        or_(OutboundAttempt.call_id.is_not(None), OutboundAttempt.released_at.is_(None)),
    )
    unreserved = select(Call.started_at.label("at")).where(
        Call.account_id == account_id,
        Call.direction == "outbound",
        Call.started_at >= since,
        ~exists().where(OutboundAttempt.call_id == Call.id),
    )
    both = union_all(held, unreserved).subquery()
    return list(session.scalars(select(both.c.at).order_by(both.c.at.desc()).limit(limit)))


def attach(sessions: sessionmaker[Session], attempt_id: int, call_id: int) -> None:
    """The journaled call is the reserved attempt: put it on the attempt's account, linked."""
    with sessions.begin() as session:
        attach_in(session, attempt_id, call_id)


def attach_in(session: Session, attempt_id: int, call_id: int) -> None:
    """`attach` inside the caller's transaction (a write-behind batch's)."""
    attempt = session.get(OutboundAttempt, attempt_id)
    call = session.get(Call, call_id)
    if attempt is None or call is None:
        raise LookupError(f"no attempt {attempt_id} or no call {call_id} to attach")
    call.account_id = attempt.account_id
    attempt.call_id = call_id


def release(sessions: sessionmaker[Session], attempt_id: int, reason: str) -> bool:
    """Nothing was sent: the attempt stops counting, unless a call is (or gets) attached."""
    with sessions.begin() as session:
        stmt = (
            update(OutboundAttempt)
            .where(OutboundAttempt.id == attempt_id, OutboundAttempt.call_id.is_(None))
            .values(released_at=utcnow(), release_reason=reason[:200])
        )
        return bool(session.execute(stmt).rowcount)
