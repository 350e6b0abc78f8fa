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
        "For your last payment, press 3. To speak with an agent, press 0. "
        "To hear these options again, press star."
    ),
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
