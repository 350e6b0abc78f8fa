"""Right-party verification, the step between identifying an account and saying anything about
its debt: the caller keys a value on file (postal code or date of birth), with a few tries.

Until it succeeds the IVR offers only the agent and voicemail. Every try is journaled by the
`Verifier` (accounts/verification.py: lock-out, attempts and the audit of failures, written
through the call's CallLog); the keys themselves never reach the call journal (see
Steps.gather(secret=True)).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from accounts.views import AccountSummary
from voice.ivr.steps import Steps

# Why the debt will not be discussed is heard whole (no barge-in): the caller must know it is
# not a fault and that the agent is still there.
LABELS = {"postal_code": "postal code", "date_of_birth": "date of birth"}


class Verifier(Protocol):
    kind: str  # "postal_code" | "date_of_birth"
    prompt: str  # the prompt key that asks for it
    max_digits: int

    async def on_file(self, account_id: int) -> bool: ...
    async def locked_until(self, account_id: int) -> dt.datetime | None: ...
    async def attempt(self, account_id: int, keyed: str, tries: int) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    verified: bool
    text: str  # for the call's note: how the caller was (not) verified


NOT_REQUIRED = Verdict(True, "not required (ivr.verify = none)")


async def verify(steps: Steps, verifier: Verifier, account: AccountSummary, tries: int) -> Verdict:
    label = LABELS[verifier.kind]
    if not await verifier.on_file(account.id):
        await steps.journal.event("verify", {"result": "not_on_file", "kind": verifier.kind})
        await steps.play(["verify_unavailable"], barge_in=False)
        return Verdict(False, f"not verified: no {label} on file, nothing about the debt said")
    until = await verifier.locked_until(account.id)
    if until is not None:
        detail = {"result": "locked", "kind": verifier.kind, "until": until.isoformat()}
        await steps.journal.event("verify", detail)
        await steps.play(["verify_locked"], barge_in=False)
        return Verdict(False, f"not verified: too many failed verifications, tries locked "
                              f"until {until:%Y-%m-%d %H:%M} UTC")  # fmt: skip
    # Keys typed ahead (during the greeting) are kept: a caller who knows the question answers
    # it early; a menu key typed ahead is a wrong try, not a lock-out guess (see attempt()).
    wrong = 0
    for attempt in range(1, tries + 1):
        keyed = await steps.gather([verifier.prompt], max_digits=verifier.max_digits, secret=True)
        if keyed == "":
            await steps.journal.event("verify", {"result": "no_input", "try": attempt})
            await steps.play(["no_input"])
            continue
        if await verifier.attempt(account.id, keyed, attempt):
            await steps.journal.event("verify", {"result": "verified", "kind": verifier.kind,
                                                 "try": attempt})  # fmt: skip
            tried = f" (try {attempt} of {tries})" if attempt > 1 else ""
            return Verdict(True, f"verified by {label}{tried}")
        wrong += 1
        await steps.journal.event("verify", {"result": "wrong", "kind": verifier.kind,
                                             "try": attempt})  # fmt: skip
        if attempt < tries:
            await steps.play(["verify_wrong"])
    await steps.play(["verify_failed"], barge_in=False)
    return Verdict(False, f"not verified: {wrong} wrong {label}{'s' if wrong != 1 else ''} "
                          f"in {tries} tries, nothing about the debt said")  # fmt: skip
