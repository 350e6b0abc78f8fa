"""Right-party verification: the values on file the IVR checks before it says anything about a
debt, and every attempt, so guessing by dialling runs into a lock-out.

Caller ID is trivially spoofed and account numbers are short, so telling a balance to whoever
keys one would be the third-party disclosure collections law forbids (FDCPA 15 USC 1692c(b)).
The IVR therefore asks for a value from the ERP (postal code or date of birth) first.

The values are stored like passwords (scrypt, a salt per row), never in clear: no API or page
can read them back, and a copied database does not hand them out. They are low-entropy (a ZIP
code is one of 100,000), which is why the lock-out matters more than the hash: a caller number
or an account with `failures` failed calls within `window` gets no more tries until the oldest
of them is out of the window. A failed call is one in which a wrong value was keyed and no right
one followed, so hanging up after a wrong try still counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from accounts import audit
from accounts.models import Base, UtcDateTime, utcnow
from accounts.phones import InvalidPhone, normalize
from accounts.retry import retry_db

KINDS = ("postal_code", "date_of_birth")
READ_TRIES = 3  # a read blocks the caller (the attempt's write: voice/calls/journal.py)
WITHHELD = "withheld"  # the caller key of every call without a usable caller ID: one bucket
# scrypt at 2 MiB: measured 6-12 ms a value here (one core, idle to loaded), so trying every
# ZIP code of one account offline costs ~10-20 core-minutes, per account and salt; cheap for one
# caller, and an import of 100,000 accounts hashes in ~10 minutes. Stored with the digest, so
# they can be raised later without invalidating rows.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**11, 8, 1
_US_ZIP = re.compile(r"[0-9]{5}(?:[0-9]{4})?")
_POSTAL_DIGITS = re.compile(r"[0-9]{3,10}")
_POSTAL_SEPARATORS = re.compile(r"[\s\-]+")
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_KEYED_DATE = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{4})")  # MMDDYYYY, as US callers say it


class VerifierValueError(ValueError):
    """A postal code or date of birth that cannot be keyed back on a phone; says why."""


class AccountVerifier(Base):
    __tablename__ = "account_verifiers"
    __table_args__ = (UniqueConstraint("account_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(20))
    digest: Mapped[str] = mapped_column(String(200))  # scrypt$N$r$p$salt$hash (hex)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class VerificationAttempt(Base):
    __tablename__ = "verification_attempts"
    __table_args__ = (
        Index("ix_verification_caller_at", "caller", "at"),
        Index("ix_verification_account_at", "account_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    caller: Mapped[str] = mapped_column(String(16))  # E.164, or WITHHELD
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    kind: Mapped[str] = mapped_column(String(20))
    ok: Mapped[bool]


# -- values: what the ERP exports, what a caller keys ---------------------------------------


def postal_code_on_file(raw: str, region: str = "US") -> str:
    """The digits a caller keys for an imported postal code: US ZIP or ZIP+4 -> 5 digits."""
    value = _POSTAL_SEPARATORS.sub("", raw)
    if region == "US":
        if not _US_ZIP.fullmatch(value):
            raise VerifierValueError(
                f"postal_code {raw!r} is not a US ZIP code (12345 or 12345-6789)"
            )
        return value[:5]
    if not _POSTAL_DIGITS.fullmatch(value):
        raise VerifierValueError(
            f"postal_code {raw!r} must be 3 to 10 digits (callers key it on a phone keypad)"
        )
    return value


def date_of_birth_on_file(raw: str, today: dt.date | None = None) -> str:
    """YYYY-MM-DD from the ERP -> YYYYMMDD; a real date, in the past, after 1900."""
    match = _ISO_DATE.fullmatch(raw.strip())
    if match is None:
        raise VerifierValueError(f"date_of_birth {raw!r} is not a date (YYYY-MM-DD)")
    try:
        born = dt.date(*(int(part) for part in match.groups()))
    except ValueError as exc:
        raise VerifierValueError(f"date_of_birth {raw!r} is not a date ({exc})") from None
    if not dt.date(1900, 1, 1) <= born < (today or dt.date.today()):
        raise VerifierValueError(f"date_of_birth {raw!r} is not a plausible birth date")
    return born.strftime("%Y%m%d")


def keyed_value(kind: str, digits: str) -> str | None:
    """What the caller keyed, in the stored form; None when it cannot be a value of `kind`."""
    if not digits.isdigit():
        return None
    if kind == "postal_code":
        return digits
    match = _KEYED_DATE.fullmatch(digits)
    if match is None:
        return None
    month, day, year = (int(part) for part in match.groups())
    try:
        return dt.date(year, month, day).strftime("%Y%m%d")
    except ValueError:
        return None


def digest(value: str) -> str:
    salt = secrets.token_bytes(16)
    hashed = _scrypt(value, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${hashed.hex()}"


def matches(stored: str, value: str) -> bool:
    try:
        scheme, n, r, p, salt, hashed = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = _scrypt(value, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False  # a corrupted row verifies nobody
    return hmac.compare_digest(candidate, bytes.fromhex(hashed))


def _scrypt(value: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(value.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20, dklen=32)


def caller_key(raw: str | None, region: str = "US") -> str:
    """The lock-out bucket of a caller: their number in E.164, or WITHHELD for anything else
    (a withheld or unparsable caller ID must not escape the limit by being unique)."""
    if not raw:
        return WITHHELD
    try:
        return normalize(raw, region)
    except InvalidPhone:
        return WITHHELD


def set_value(session: Session, account_id: int, kind: str, value: str) -> None:
    """Store (or replace) an account's value of `kind`, already in stored form."""
    session.execute(
        delete(AccountVerifier).where(
            AccountVerifier.account_id == account_id, AccountVerifier.kind == kind
        )
    )
    session.add(AccountVerifier(account_id=account_id, kind=kind, digest=digest(value)))


def record_attempt(
    session: Session,
    caller: str,
    account_id: int,
    call_id: int | None,
    kind: str,
    ok: bool,
    try_no: int,
) -> None:
    """Journal one attempt in `session`; a failed one is also an audit row (who tried which
    account). A call writes it through its CallLog (voice/calls/journal.py), at once."""
    session.add(
        VerificationAttempt(caller=caller, account_id=account_id, call_id=call_id, kind=kind, ok=ok)
    )
    if not ok:
        audit.record(
            session,
            audit.SystemActor("ivr"),
            None,
            "verify.failed",
            "account",
            account_id,
            {"caller": caller, "call_id": call_id, "kind": kind, "try": try_no},
        )


# -- the service the IVR uses --------------------------------------------------------------


@dataclass(frozen=True)
class Lockout:
    failures: int  # failed calls in the window
    window: dt.timedelta


class Verifications:
    """Checks values and counts the lock-out; synchronous (the IVR's adapter runs it off the
    loop). The attempts it counts are written by `record_attempt`."""

    def __init__(self, sessions: sessionmaker[Session], lockout: Lockout) -> None:
        self._sessions = sessions
        self._lockout = lockout

    def on_file(self, account_id: int, kind: str) -> bool:
        with self._sessions() as session:
            return self._digest(session, account_id, kind) is not None

    def check(self, account_id: int, kind: str, keyed: str) -> bool:
        value = keyed_value(kind, keyed)
        with self._sessions() as session:
            stored = self._digest(session, account_id, kind)
        return stored is not None and value is not None and matches(stored, value)

    def locked_until(
        self, caller: str, account_id: int, now: dt.datetime | None = None
    ) -> dt.datetime | None:
        """When the caller's number or the account may try again; None: it may now."""
        now = now or utcnow()
        since = now - self._lockout.window
        with self._sessions() as session:
            rows = session.execute(
                select(VerificationAttempt.call_id, VerificationAttempt.at, VerificationAttempt.ok)
                .where(
                    (VerificationAttempt.caller == caller)
                    | (VerificationAttempt.account_id == account_id),
                    VerificationAttempt.at > since,
                )
                .order_by(VerificationAttempt.at)
                .limit(10_000)  # bounded: far beyond any lock-out threshold
            ).all()
        first_failure: dict[int | None, dt.datetime] = {}
        passed: set[int | None] = set()
        for call_id, at, ok in rows:
            if ok:
                passed.add(call_id)
            else:
                first_failure.setdefault(call_id, at)
        failed = sorted(at for call, at in first_failure.items() if call not in passed)
        if len(failed) < self._lockout.failures:
            return None
        return failed[-self._lockout.failures] + self._lockout.window

    @staticmethod
    def _digest(session: Session, account_id: int, kind: str) -> str | None:
        return session.scalar(
            select(AccountVerifier.digest).where(
                AccountVerifier.account_id == account_id, AccountVerifier.kind == kind
            )
        )


class AttemptLog(Protocol):
    """Where a call's attempts are written: its CallLog (voice/calls/journal.py), which owns
    every write a call makes, with their retries (named by shape: accounts/ imports no voice
    module)."""

    async def verification_attempt(
        self, caller: str, account_id: int, kind: str, ok: bool, try_no: int
    ) -> None: ...


class CallVerifier:
    """The IVR's `Verifier` (voice/ivr/verify.py) for one call: the configured kind, the
    caller's lock-out bucket, the database off the event loop and retried, each attempt
    written through the call's log."""

    def __init__(
        self, service: Verifications, kind: str, caller: str | None, journal: AttemptLog,
        region: str = "US",
    ) -> None:  # fmt: skip
        if kind not in KINDS:
            raise ValueError(f"verification kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "date_of_birth":
            self.prompt, self.max_digits = "verify_date_of_birth", 8
        elif region == "US":
            self.prompt, self.max_digits = "verify_zip_code", 5
        else:
            self.prompt, self.max_digits = "verify_postal_code", 10
        self._service = service
        self._caller = caller_key(caller, region)
        self._journal = journal

    def plausible(self, keyed: str) -> bool:
        """Could `keyed` be a value of this kind at all? Only those count toward a lock-out."""
        value = keyed_value(self.kind, keyed)
        return value is not None and (self.prompt != "verify_zip_code" or len(value) == 5)

    async def on_file(self, account_id: int) -> bool:
        return await retry_db(READ_TRIES, self._service.on_file, account_id, self.kind)

    async def locked_until(self, account_id: int) -> dt.datetime | None:
        return await retry_db(READ_TRIES, self._service.locked_until, self._caller, account_id)

    async def attempt(self, account_id: int, keyed: str, tries: int) -> bool:
        if not self.plausible(keyed):
            return False  # a wrong try, but no guess at a value (a menu key typed ahead)
        ok = await retry_db(READ_TRIES, self._service.check, account_id, self.kind, keyed)
        # In the database before the caller hears the answer (the journal writes it at once): the
        # lock-out check of their next call must count it. A write that still fails is logged
        # there and the answer stands; only the lock-out count misses this one.
        await self._journal.verification_attempt(self._caller, account_id, self.kind, ok, tries)
        return ok
