"""No client data in the logs: a filter every handler applies (see LOGGING in portal/settings.py).

The code does not log clients' names or contact details in the first place; this filter is the net under
that rule for what arrives from elsewhere: request lines (runserver's, Django's 404 and 500 reports) that
carry a client link's token, an email in a query string, an exception whose message quotes a row.

Redacted: client-link tokens (``/p/<token>/`` → ``/p/[link]/``), email addresses (also URL-encoded),
card-like numbers (13 to 19 digits), phone numbers, Stripe client secrets, API keys, and the values of
query parameters that hold secrets.
"""

from __future__ import annotations

import logging
import re

REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A client link's token, wherever the URL appears (request lines, redirects, error reports).
    (re.compile(r"/p/[^/\s?#\"']+"), "/p/[link]"),
    # Stripe client secrets (PaymentIntent and SetupIntent) let a browser confirm a payment.
    (re.compile(r"\b(?:pi|seti)_[A-Za-z0-9]+_secret_[A-Za-z0-9]+"), "[client-secret]"),
    # Credentials in headers, then the EHR API's keys anywhere else: pbp_<prefix>_<secret>.
    (re.compile(r"(?i)\b(Api-Key|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"\bpbp_[A-Za-z0-9]+_[A-Za-z0-9_-]+"), "pbp_[key]"),
    # Query parameters and form fields that carry secrets.
    (re.compile(r"(?i)\b(token|key|secret|client_secret|password|otp_token|code|signature)=[^&\s\"']+"),
     r"\1=[redacted]"),
    # Emails, plain or URL-encoded (%40).
    (re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "[email]"),
    # Card-like numbers: 13 to 19 digits, optionally grouped by spaces or dashes.
    (re.compile(r"(?<![\w.])(?:\d[ -]?){12,18}\d(?![\w.])"), "[number]"),
    # North American phone numbers in their usual spellings: (555) 123-4567, 555-123-4567, +1 555.123.4567.
    (re.compile(r"(?<![\w.])(?:\+?1[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w.])"), "[phone]"),
    (re.compile(r"(?<![\w.:-])\+?1?\d{10}(?![\w.:-])"), "[phone]"),
)


def redact(text: str) -> str:
    for pattern, replacement in REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactClientData(logging.Filter):
    """Rewrites each record's message (and its exception text) with client data taken out; never drops it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: keep the format string only
            message = str(record.msg)
        record.msg = redact(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
