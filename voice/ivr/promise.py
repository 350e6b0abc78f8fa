"""Promise to pay by keypad (menu 4, verified callers only): the caller keys an amount and a
date, hears them read back and confirms with 1; the promise is then stored as a
`promise_to_pay` outcome for the account's collector, once.

Every refusal is said and asked again, never stored: an amount of 0 or above the open balance,
a date that is not a date, in the past or more than `ivr.max_promise_days` ahead.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Protocol

from accounts.money import money_text
from accounts.views import AccountSummary
from voice.ivr import say
from voice.ivr.steps import Steps

AMOUNT_DIGITS = 12  # cents: up to 9,999,999,999.99
_KEYED_DATE = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{4})")  # MMDDYYYY


class Promises(Protocol):
    async def today(self) -> dt.date:
        """Today in the account's own time zone (the promise's day is the customer's)."""
        ...

    async def store(self, amount_cents: int, date: dt.date) -> bool:
        """Store the promise once; False when it could not be (the caller is told)."""
        ...


def parse_amount(keys: str) -> int | None:
    """Keyed cents ("50000" is 500.00), or None when it is not a number."""
    return int(keys) if keys.isdigit() and len(keys) <= AMOUNT_DIGITS else None


def parse_date(keys: str) -> dt.date | None:
    match = _KEYED_DATE.fullmatch(keys)
    if match is None:
        return None
    month, day, year = (int(part) for part in match.groups())
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def amount_problem(cents: int | None, open_cents: int) -> str | None:
    """The prompt key that refuses an amount, or None when it may be promised."""
    if cents is None:
        return "promise_amount_invalid"
    if cents == 0:
        return "promise_amount_zero"
    if cents > open_cents:
        return "promise_amount_too_high"
    return None


def date_problem(date: dt.date | None, today: dt.date, max_days: int) -> str | None:
    if date is None:
        return "promise_date_invalid"
    if date < today:
        return "promise_date_past"
    if date > today + dt.timedelta(days=max_days):
        return "promise_date_too_far"
    return None


async def arrange_payment(
    steps: Steps, promises: Promises, account: AccountSummary, open_cents: int
) -> str:
    """Run the dialogue; returns what happened, for the note."""
    cfg = steps.cfg
    for _ in range(cfg.promise_tries):
        cents = await _amount(steps, open_cents)
        if cents is None:
            continue
        today = await promises.today()
        date = await _date(steps, today)
        if date is None:
            continue
        readback = [
            "promise_readback", *say.money(cents, account.currency),
            "promise_on", *say.date(date), "promise_confirm",
        ]  # fmt: skip
        answer = await steps.gather(readback, max_digits=1, timeout=cfg.menu_timeout)
        if answer != "1":
            await steps.journal.event("promise", {"result": "not_confirmed", "key": answer})
            continue
        detail = {"amount_cents": cents, "date": date.isoformat()}
        if not await promises.store(cents, date):
            await steps.journal.event("promise", {"result": "not_stored", **detail})
            break
        await steps.journal.event("promise", {"result": "stored", **detail})
        await steps.play(["promise_saved"])
        return f"promise to pay {money_text(cents, account.currency)} by {date.isoformat()}"
    await steps.play(["promise_not_saved"])
    return "promise to pay: not completed"


async def _amount(steps: Steps, open_cents: int) -> int | None:
    keys = await steps.gather(
        ["promise_amount"], max_digits=AMOUNT_DIGITS, timeout=steps.cfg.menu_timeout
    )
    cents = parse_amount(keys)
    problem = amount_problem(cents, open_cents) if keys else "no_input"
    if problem is None:
        return cents
    await steps.journal.event("promise", {"result": problem.removeprefix("promise_")})
    await steps.play([problem])
    return None


async def _date(steps: Steps, today: dt.date) -> dt.date | None:
    keys = await steps.gather(["promise_date"], max_digits=8, timeout=steps.cfg.menu_timeout)
    date = parse_date(keys)
    problem = date_problem(date, today, steps.cfg.max_promise_days) if keys else "no_input"
    if problem is None:
        return date
    await steps.journal.event("promise", {"result": problem.removeprefix("promise_")})
    tokens = [problem]
    if problem == "promise_date_too_far":
        tokens += [*say.number(steps.cfg.max_promise_days), "promise_days"]
    await steps.play(tokens)
    return None
