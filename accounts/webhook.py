"""Notes to the CRM: each new note is POSTed as JSON to `webhook.url`, signed, at least once.

Every note committed through the ORM queues a `WebhookOutbox` row in its own transaction
(accounts/models.py), so a note is never stored without its delivery being owed, and the debt
survives restarts. `deliver_due(now)` sends what is due; a failure (no answer, timeout, any
status but 2xx, a redirect) is retried after `backoff_initial * 2**(attempts-1)` seconds, at
most `backoff_max`, until `max_attempts`, after which the row is kept as failed.

The request, for a receiver to check:

    POST <url>
    Content-Type: application/json
    X-Voice-Event: note.created
    X-Voice-Delivery: 42                 (same id on every retry: deduplicate on it)
    X-Voice-Timestamp: 1795000000        (Unix seconds when sent)
    X-Voice-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

    {"event": "note.created", "delivery": 42, "note": {"id": 7, "account": "10042", ...}}

A call's transcript is finished only after the call (its last utterance ends with the audio),
so once it is stored a second event for the same note follows, with the utterances:

    X-Voice-Event: note.transcript
    {"event": "note.transcript", "delivery": 43, "note": {...},
     "transcript": [{"speaker": "caller", "start": 3.9, "end": 5.1, "text": ..., ...}, ...]}

The timestamp is inside the signed text, so a captured request cannot be replayed later with
a fresh one: receivers refuse a timestamp older than a few minutes (`check_signature`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Account, Note, Transcript, WebhookOutbox, utcnow
from accounts.retry import DB_ERRORS, DB_TRIES, backoff, retry_pause

if TYPE_CHECKING:
    from voice.config import Config, WebhookConfig

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voice-Signature"
TIMESTAMP_HEADER = "X-Voice-Timestamp"
DELIVERY_HEADER = "X-Voice-Delivery"
EVENT_HEADER = "X-Voice-Event"
TRANSCRIPT_EVENT = "note.transcript"
REPLAY_TOLERANCE = 300.0  # seconds a receiver should accept a timestamp either side of its clock
_ERROR_BYTES = 200  # of a failed response's body kept in last_error


class DeliveryError(Exception):
    """One attempt failed; the message is what `last_error` keeps."""


# A transport posts (url, body, headers, timeout) and raises DeliveryError unless 2xx.
Transport = Callable[[str, bytes, dict[str, str], float], None]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def check_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: float = REPLAY_TOLERANCE,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(stamp), body), given)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is a failure: a redirected POST would lose its body or its target


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(_ERROR_BYTES)
    except urllib.error.HTTPError as exc:
        text = exc.read(_ERROR_BYTES).decode("utf-8", "replace").strip()
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}: {text}".rstrip(": ")) from None
    except urllib.error.URLError as exc:
        raise DeliveryError(f"no answer: {exc.reason}") from None
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise DeliveryError(f"connection failed: {exc}") from None


@dataclass
class DeliveryReport:
    delivered: list[int] = field(default_factory=list)  # outbox ids
    retrying: list[int] = field(default_factory=list)
    gave_up: list[int] = field(default_factory=list)


def _payload(session: Session, row: WebhookOutbox) -> dict[str, Any]:
    found = session.execute(
        select(Note, Account.number)
        .join(Account, Account.id == Note.account_id)
        .where(Note.id == row.note_id)
    ).first()
    if found is None:
        raise DeliveryError(f"note {row.note_id} no longer exists")
    note, number = found
    extra: dict[str, Any] = {}
    if row.event == TRANSCRIPT_EVENT and note.call_id is not None:
        extra["transcript"] = Transcript.of_call(session, note.call_id)
    return {
        "event": row.event,
        "delivery": row.id,
        "note": {
            "id": note.id,
            "account": number,
            "call_id": note.call_id,
            "created_at": note.created_at.isoformat(),
            "author": note.author,
            "kind": note.kind,
            "body": note.body,
        },
        **extra,
    }


class Outbox:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        cfg: WebhookConfig,
        transport: Transport = post_json,
    ) -> None:
        self._sessions = sessions
        self._cfg = cfg
        self._post = transport

    def due(self, now: dt.datetime) -> list[WebhookOutbox]:
        stmt = (
            select(WebhookOutbox)
            .where(
                WebhookOutbox.delivered_at.is_(None),
                WebhookOutbox.failed_at.is_(None),
                WebhookOutbox.next_attempt_at <= now,
            )
            .order_by(WebhookOutbox.next_attempt_at, WebhookOutbox.id)
            .limit(self._cfg.batch)
        )
        with self._sessions() as session:
            return list(session.scalars(stmt))

    def deliver_due(
        self, now: dt.datetime, stop: Callable[[], bool] | None = None
    ) -> DeliveryReport:
        """Attempt every delivery due at `now` (up to `webhook.batch`), oldest first;
        `stop()` true ends the scan between two deliveries."""
        report = DeliveryReport()
        if not self._cfg.url:
            return report
        for row in self.due(now):
            if stop is not None and stop():
                break
            if self._claim(row, now):
                self._attempt(row, now, report)
        return report

    def _claim(self, row: WebhookOutbox, now: dt.datetime) -> bool:
        # Push the row out of reach for the length of an attempt, only if nobody else did:
        # two supervisors sharing one database never send the same delivery at once.
        lease = now + dt.timedelta(seconds=self._cfg.timeout + 60)
        with self._sessions.begin() as session:
            claimed = session.execute(
                update(WebhookOutbox)
                .where(
                    WebhookOutbox.id == row.id,
                    WebhookOutbox.next_attempt_at == row.next_attempt_at,
                    WebhookOutbox.delivered_at.is_(None),
                )
                .values(next_attempt_at=lease)
                .execution_options(synchronize_session=False)
            )
            return claimed.rowcount == 1

    def _attempt(self, row: WebhookOutbox, now: dt.datetime, report: DeliveryReport) -> None:
        attempts = row.attempts + 1
        try:
            with self._sessions() as session:
                payload = _payload(session, row)
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
            stamp = int(now.timestamp())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "collections-voice-webhook",
                EVENT_HEADER: row.event,
                DELIVERY_HEADER: str(row.id),
                TIMESTAMP_HEADER: str(stamp),
                SIGNATURE_HEADER: sign(self._cfg.secret, stamp, body),
            }
            self._post(self._cfg.url, body, headers, self._cfg.timeout)
        except DeliveryError as exc:
            self._failed(row.id, attempts, str(exc)[:1000], now, report)
            return
        self._delivered(row.id, attempts, now)
        report.delivered.append(row.id)

    def _delivered(self, rid: int, attempts: int, now: dt.datetime) -> None:
        """Mark a sent delivery, retried while the database refuses: left unmarked, it would
        be sent again once its lease ran out, a duplicate no attempt count shows (found by
        bench/soak.py on SQLite under load: 10 of 633)."""
        for attempt in range(DB_TRIES):
            try:
                with self._sessions.begin() as session:
                    session.execute(
                        update(WebhookOutbox)
                        .where(WebhookOutbox.id == rid)
                        .values(
                            attempts=attempts, delivered_at=now, next_attempt_at=None,
                            last_error=None,
                        )
                        .execution_options(synchronize_session=False)
                    )  # fmt: skip
                return
            except DB_ERRORS:
                if attempt == DB_TRIES - 1:
                    log.error("webhook delivery %d sent but not marked: it will be sent again", rid)
                    raise
                time.sleep(retry_pause(attempt))

    def _failed(
        self, rid: int, attempts: int, error: str, now: dt.datetime, report: DeliveryReport
    ) -> None:
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if attempts >= self._cfg.max_attempts:
            values.update(failed_at=now, next_attempt_at=None)
            report.gave_up.append(rid)
            log.error("webhook delivery %d given up after %d attempts: %s", rid, attempts, error)
        else:
            wait = backoff(attempts, self._cfg.backoff_initial, self._cfg.backoff_max)
            values["next_attempt_at"] = now + dt.timedelta(seconds=wait)
            report.retrying.append(rid)
            log.warning("webhook delivery %d failed (attempt %d): %s", rid, attempts, error)
        with self._sessions.begin() as session:
            session.execute(
                update(WebhookOutbox)
                .where(WebhookOutbox.id == rid)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def retry_failed(self, now: dt.datetime) -> int:
        """Give every given-up delivery a fresh set of attempts, due at `now`."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(WebhookOutbox)
                .where(WebhookOutbox.failed_at.is_not(None), WebhookOutbox.delivered_at.is_(None))
                .values(failed_at=None, attempts=0, next_attempt_at=now)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount


async def run_outbox(
    cfg: Config,
    stop_event: asyncio.Event,
    sessions: sessionmaker[Session] | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> None:
    """Deliver due notes every `webhook.poll_interval` seconds until `stop_event` is set.

    Without `webhook.url` it only waits for the stop. A failing scan (database away) is
    logged and retried at the next interval; the loop ends only on `stop_event`.
    """
    if not cfg.webhook.url:
        await stop_event.wait()
        return
    engine = None
    if sessions is None:
        from accounts.db import make_engine, make_sessions

        engine = make_engine(cfg.database_url, cfg.database.busy_timeout_ms)
        sessions = make_sessions(engine)
    outbox = Outbox(sessions, cfg.webhook)
    try:
        while not stop_event.is_set():
            try:
                await asyncio.to_thread(outbox.deliver_due, clock(), stop_event.is_set)
            except Exception:
                log.exception("webhook outbox scan failed; next in %gs", cfg.webhook.poll_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), cfg.webhook.poll_interval)
    finally:
        if engine is not None:
            engine.dispose()
