"""Money is integer cents everywhere. Rounding to the cent happens here and nowhere else.

The rule: a share of an amount (coinsurance percent of an allowed amount) is rounded half up
to the nearest cent, so 20% of $100.03 (2000.6 cents) is 2001 cents and 20% of 12.5 cents
rounds 2.5 up to 3. Amounts are never negative after rounding.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def percent_of(amount_cents: int, percent: Decimal | int | str) -> int:
    """``percent`` % of ``amount_cents``, rounded half up to a whole cent."""
    share = Decimal(amount_cents) * Decimal(percent) / Decimal(100)
    return int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_cents(amount_cents: int) -> str:
    """$1,234.56 (and -$12.00 for credits)."""
    sign = "-" if amount_cents < 0 else ""
    dollars, cents = divmod(abs(amount_cents), 100)
    return f"{sign}${dollars:,}.{cents:02d}"


def cents_as_dollars(amount_cents: int) -> str:
    """1234.56 (and -12.00): dollars as a plain number, for CSV columns a spreadsheet adds up."""
    sign = "-" if amount_cents < 0 else ""
    dollars, cents = divmod(abs(amount_cents), 100)
    return f"{sign}{dollars}.{cents:02d}"
