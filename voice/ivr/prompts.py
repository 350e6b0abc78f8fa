"""The prompt library: every fixed sentence the IVR speaks, by key.

A key is rendered once by the TTS engine and cached; a studio recording named `KEY.wav` in the
prompts folder replaces it. `{company}` is filled from `ivr.company_name` at render time.
"""

from __future__ import annotations

PROMPTS: dict[str, str] = {
    "recording_notice": "This call may be recorded and transcribed for quality and compliance.",
    "collector_disclosure": (
        "This is a communication from a debt collector. "
        "Any information obtained will be used for that purpose."
    ),
    "greeting": "Thank you for calling {company}.",
    "which_account": (
        "We found several accounts for your number. "
        "Please enter the last four digits of your account number."
    ),
    "enter_account": "Please enter your account number, followed by the pound key.",
    "account_not_found": "Sorry, we could not find that account.",
    "identify_failed": (
        "We could not identify your account. Please call again with your account number ready."
    ),
    "menu": (
        "For your balance, press 1. For your last invoice, press 2. "
        "For your last payment, press 3. To arrange a payment, press 4. "
        "To speak with an agent, press 0. To hear these options again, press star."
    ),
    "menu_unverified": (
        "To speak with an agent or leave a message, press 0. To hear this again, press star."
    ),
    # Right-party verification (voice/ivr/verify.py): asked before anything about the debt.
    # Short: said on every call before the menu (measured in bench/ivr_latency.py).
    "verify_zip_code": "For your privacy, please enter your five digit ZIP code.",
    "verify_postal_code": (
        "To protect your privacy, please enter the postal code on your account, "
        "followed by the pound key."
    ),
    "verify_date_of_birth": (
        "To protect your privacy, please enter your date of birth: two digits for the month, "
        "two for the day, and four for the year."
    ),
    "verify_wrong": "Sorry, that does not match our records.",
    "verify_failed": (
        "We could not verify you, so we cannot discuss this account on this call. "
        "You can still speak with an agent or leave a message."
    ),
    "verify_locked": (
        "For your security, we cannot verify you on this call. Please try again in an hour, "
        "or speak with an agent."
    ),
    "verify_unavailable": (
        "We cannot verify you by phone for this account. "
        "You can speak with an agent or leave a message."
    ),
    # Promise to pay by keypad (voice/ivr/promise.py).
    "promise_amount": (
        "Please enter the amount you will pay, in dollars and cents with no decimal point, "
        "followed by the pound key. For fifty dollars, enter 5 0 0 0."
    ),
    "promise_amount_invalid": "Sorry, that is not an amount.",
    "promise_amount_zero": "The amount must be more than zero.",
    "promise_amount_too_high": "That is more than your open balance.",
    "promise_date": (
        "Please enter the date you will pay: two digits for the month, two for the day, "
        "and four for the year."
    ),
    "promise_date_invalid": "Sorry, that is not a valid date.",
    "promise_date_past": "That date is in the past.",
    "promise_date_too_far": "That date is too far away. Please choose a date within",
    "promise_days": "days from today.",
    "promise_readback": "You promise to pay",
    "promise_on": "on",
    "promise_confirm": "To confirm, press 1. To change it, press 2.",
    "promise_saved": "Thank you. Your promise to pay has been recorded.",
    "promise_not_saved": "Your promise to pay was not recorded.",
    "invalid_choice": "Sorry, that is not a valid choice.",
    "no_input": "Sorry, we did not receive your choice.",
    "not_understood": "Sorry, I did not understand that.",
    "too_many_failures": "We are unable to process your request. Goodbye.",
    "balance_open": "Your total open balance is",
    "balance_past_due": "of which the amount past due is",
    "balance_none": "Your account has no open balance.",
    "nothing_past_due": "Nothing is past due.",
    "invoice_number": "Your last invoice, number",
    "invoice_amount": "was for",
    "invoice_due": "and is due on",
    "invoice_none": "There are no invoices on your account.",
    "payment_amount": "Your last payment of",
    "payment_date": "was received on",
    "payment_none": "We have no payments on record for your account.",
    "agent_unavailable": "Sorry, no agent is available right now.",
    "voicemail_greeting": (
        "Sorry, nobody is available to take your call. "
        "Please leave a message after the tone, then press the pound key or hang up."
    ),
    "voicemail_thanks": "Thank you, your message has been recorded. Goodbye.",
    "agent_busy_customer": "The customer's line is busy.",
    "agent_no_answer_customer": "The customer did not answer.",
    "goodbye": "Thank you for calling. Goodbye.",
}
