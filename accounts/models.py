"""Database tables for accounts, their contacts and documents, and the calls made about them.

Money is stored as integer cents: exact, and no Decimal conversion warnings from SQLite; 64-bit,
since a 32-bit PostgreSQL integer ends at 21,474,836.47.
Timestamps are timezone-aware UTC on the Python side whatever the backend stores.

The tables live by subject: accounts/orm.py (Base, UtcDateTime, utcnow), ledger.py (who owes
what), calltables.py (calls and what they leave), usertables.py (softphones, users, audit log);
importing this module maps every table (create_schema needs them all) and it keeps the
names every caller imports.
"""

from accounts.calltables import (
    ADDED_COLUMNS,
    CALL_DIRECTIONS,
    CALL_STATUSES,
    CALLS_BY_ACCOUNT,
    OUTCOME_KINDS,
    RECORDING_KINDS,
    RECORDING_STATUSES,
    RIGHT_PARTY_OUTCOMES,
    Call,
    CallEvent,
    CallOutcome,
    Note,
    OutboundAttempt,
    Recording,
    Transcript,
    WebhookOutbox,
    WrittenBatch,
)
from accounts.ledger import (
    ACCOUNT_NUMBER,
    Account,
    Collector,
    Contact,
    Customer,
    Invoice,
    Payment,
)
from accounts.orm import (
    Base,
    UtcDateTime,
    utcnow,
)
from accounts.usertables import (
    SOFTPHONE_USERNAME,
    USER_NAME,
    USER_ROLES,
    AuditEntry,
    Softphone,
    User,
)

__all__ = [
    "ACCOUNT_NUMBER",
    "ADDED_COLUMNS",
    "Account",
    "AuditEntry",
    "Base",
    "CALLS_BY_ACCOUNT",
    "CALL_DIRECTIONS",
    "CALL_STATUSES",
    "Call",
    "CallEvent",
    "CallOutcome",
    "Collector",
    "Contact",
    "Customer",
    "Invoice",
    "Note",
    "OUTCOME_KINDS",
    "OutboundAttempt",
    "Payment",
    "RECORDING_KINDS",
    "RECORDING_STATUSES",
    "RIGHT_PARTY_OUTCOMES",
    "Recording",
    "SOFTPHONE_USERNAME",
    "Softphone",
    "Transcript",
    "USER_NAME",
    "USER_ROLES",
    "User",
    "UtcDateTime",
    "WebhookOutbox",
    "WrittenBatch",
    "utcnow",
]
