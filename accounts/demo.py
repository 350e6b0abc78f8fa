"""Demo data so a fresh install can be called and exercised before any real import.

Dates are relative to today (so something is always past due); everything else is fixed.
"Today" below is the day the data is loaded.

Collectors: "Dana Whitfield" (sip:dana@collections.example), "Marcus Lee" (sip:marcus@...).

Verification (ivr.verify): the ZIP code a caller keys is 10001 for 10042 (date of birth
1976-07-04, keyed 07041976), 60601 for 20001 and 20002, 94105 for 30003.

Phone +12125550101 -> one account:
  10042  Northwind Traders, USD, Dana.
         INV-0999  issued -130, due -100,  600.00, paid (open 0.00)
         INV-1001  issued  -90, due  -60, 1,250.00 open  (past due)
         INV-1002  issued  -20, due  +10,   480.00 open
         payment CHK-5001, -95 days, 600.00
         balance: open 1,730.00, past due 1,250.00

Phone +12125550102 -> two accounts of the same customer (the caller must choose):
  20001  Fabrikam Inc, USD, Marcus.
         F-2001  issued -40, due -10, 2,000.00, open 1,500.00 (past due)
         payment ACH-7001, -5 days, 500.00
         balance: open 1,500.00, past due 1,500.00
  20002  Fabrikam Inc, USD, Marcus.
         F-3001  issued -10, due +20, 320.00 open; no payments
         balance: open 320.00, past due 0.00

Phone +12125550103 -> only account 30003 (reach it from the numbers above by keying 30003):
  30003  Tailspin Toys, USD, America/Los_Angeles, no collector.
         T-4001  issued -200, due -170, 5,000.00, open 4,250.00 (past due)
         payment WIRE-9001, -150 days, 750.00
         balance: open 4,250.00, past due 4,250.00
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Account, Collector, Contact, Customer, Invoice, Payment
from accounts.verification import set_value


def _days(today: dt.date, offset: int) -> dt.date:
    return today + dt.timedelta(days=offset)


def load_demo_if_empty(sessions: sessionmaker[Session]) -> bool:
    """Insert the demo data when there are no accounts at all; True if it was inserted."""
    today = dt.date.today()
    with sessions.begin() as session:
        if session.scalar(select(func.count(Account.id))):
            return False

        dana = Collector(
            name="Dana Whitfield",
            email="dana@collections.example",
            sip_uri="sip:dana@collections.example",
            active=True,
        )
        marcus = Collector(
            name="Marcus Lee",
            email="marcus@collections.example",
            sip_uri="sip:marcus@collections.example",
            active=True,
        )
        northwind = Customer(name="Northwind Traders")
        fabrikam = Customer(name="Fabrikam Inc")
        tailspin = Customer(name="Tailspin Toys")
        session.add_all([dana, marcus, northwind, fabrikam, tailspin])
        session.flush()

        def account(
            number: str,
            customer: Customer,
            collector: Collector | None,
            timezone: str = "America/New_York",
        ) -> Account:
            acct = Account(
                number=number,
                customer_id=customer.id,
                collector_id=collector.id if collector else None,
                currency="USD",
                timezone=timezone,
            )
            session.add(acct)
            session.flush()
            return acct

        a10042 = account("10042", northwind, dana)
        a20001 = account("20001", fabrikam, marcus)
        a20002 = account("20002", fabrikam, marcus)
        a30003 = account("30003", tailspin, None, "America/Los_Angeles")

        # Right-party verification values (accounts/verification.py), stored hashed.
        for acct, zip_code in ((a10042, "10001"), (a20001, "60601"), (a20002, "60601"),
                               (a30003, "94105")):  # fmt: skip
            set_value(session, acct.id, "postal_code", zip_code)
        set_value(session, a10042.id, "date_of_birth", "19760704")

        session.add_all(
            [
                Contact(account_id=a10042.id, phone_e164="+12125550101", label="AP desk"),
                Contact(account_id=a20001.id, phone_e164="+12125550102", label="Accounts payable"),
                Contact(account_id=a20002.id, phone_e164="+12125550102", label="Accounts payable"),
                Contact(account_id=a30003.id, phone_e164="+12125550103", label="Owner"),
            ]
        )

        def invoice(
            acct: Account, number: str, issued: int, due: int, amount_cents: int, open_cents: int
        ) -> Invoice:
            return Invoice(
                account_id=acct.id,
                number=number,
                issue_date=_days(today, issued),
                due_date=_days(today, due),
                amount_cents=amount_cents,
                open_cents=open_cents,
            )

        session.add_all(
            [
                invoice(a10042, "INV-0999", -130, -100, 60000, 0),
                invoice(a10042, "INV-1001", -90, -60, 125000, 125000),
                invoice(a10042, "INV-1002", -20, 10, 48000, 48000),
                invoice(a20001, "F-2001", -40, -10, 200000, 150000),
                invoice(a20002, "F-3001", -10, 20, 32000, 32000),
                invoice(a30003, "T-4001", -200, -170, 500000, 425000),
            ]
        )
        session.add_all(
            [
                Payment(
                    account_id=a10042.id,
                    date=_days(today, -95),
                    amount_cents=60000,
                    reference="CHK-5001",
                ),
                Payment(
                    account_id=a20001.id,
                    date=_days(today, -5),
                    amount_cents=50000,
                    reference="ACH-7001",
                ),
                Payment(
                    account_id=a30003.id,
                    date=_days(today, -150),
                    amount_cents=75000,
                    reference="WIRE-9001",
                ),
            ]
        )
    return True
