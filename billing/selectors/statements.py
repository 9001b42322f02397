"""Monthly statements' figures, for every client at once, from the ledger in a fixed number of queries.

A ledger entry belongs to the month of its ``occurred_on`` (the practice's date: a session's date of service
in the practice's zone, the day a payment or refund was taken there), so an evening session far west of UTC
is in the month the client saw it in. For a month and each client:

- opening: the sum of the entries dated before the month (the balance at the end of the month before);
- charges: session charges and fees dated in the month (a re-priced session's correction included);
- payments: payments dated in the month, as a positive amount;
- refunds: refunds dated in the month (they add back to the balance);
- adjustments: everything else dated in the month (adjustments, write-offs, waived fees, canceled charges),
  signed as posted;
- closing = opening + charges - payments + refunds + adjustments: the balance at the end of the month's
  last day; aging is that balance by age on that day (``billing.selectors.clients_aging`` with ``until``).

A client gets a statement for a month when they had a balance coming into it or any entry dated in it.
``statement_figures`` costs two queries and ``statement_lines`` one, whatever the number of clients.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from billing.models import LedgerEntry, LedgerKind
from billing.selectors import Aging, clients_aging

CHARGE_KINDS = (LedgerKind.SESSION_CHARGE, LedgerKind.FEE)


def month_first(day: dt.date) -> dt.date:
    return day.replace(day=1)


def month_last(month: dt.date) -> dt.date:
    following = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return following - dt.timedelta(days=1)


def month_before(month: dt.date) -> dt.date:
    return month_first(month_first(month) - dt.timedelta(days=1))


@dataclass(frozen=True)
class MonthFigures:
    """One client's month, in cents."""

    client_id: int
    opening_cents: int
    charges_cents: int
    payments_cents: int
    refunds_cents: int
    adjustments_cents: int
    sessions: int
    entries: int
    aging: Aging = field(default_factory=Aging)

    @classmethod
    def nothing(cls, client_id: int) -> MonthFigures:
        return cls(client_id, 0, 0, 0, 0, 0, 0, 0)

    @property
    def closing_cents(self) -> int:
        return (self.opening_cents + self.charges_cents - self.payments_cents + self.refunds_cents
                + self.adjustments_cents)


_LEDGER = LedgerEntry._meta.db_table

def _kinds(*kinds: str) -> str:
    # The ledger's own kind names (constants, not input), written into the statement.
    return "(" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


_IN_MONTH = "occurred_on >= %(start)s"
_CHARGES = f"kind IN {_kinds(*CHARGE_KINDS)}"
_OTHER = f"kind NOT IN {_kinds(*CHARGE_KINDS, LedgerKind.PAYMENT, LedgerKind.REFUND)}"

_FIGURES_SQL = f"""
SELECT client_id,
       COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(start)s), 0),
       COALESCE(SUM(amount_cents) FILTER (WHERE {_IN_MONTH} AND {_CHARGES}), 0),
       COALESCE(-SUM(amount_cents) FILTER (WHERE {_IN_MONTH} AND kind = '{LedgerKind.PAYMENT}'), 0),
       COALESCE(SUM(amount_cents) FILTER (WHERE {_IN_MONTH} AND kind = '{LedgerKind.REFUND}'), 0),
       COALESCE(SUM(amount_cents) FILTER (WHERE {_IN_MONTH} AND {_OTHER}), 0),
       COUNT(DISTINCT appointment_id) FILTER (WHERE {_IN_MONTH} AND kind = '{LedgerKind.SESSION_CHARGE}'
                                              AND amount_cents > 0),
       COUNT(*) FILTER (WHERE {_IN_MONTH})
FROM {_LEDGER}
WHERE occurred_on <= %(end)s{{clients}}
GROUP BY client_id
HAVING COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(start)s), 0) <> 0
    OR COUNT(*) FILTER (WHERE {_IN_MONTH}) > 0
"""


def _clients_clause(client_ids: Iterable[int] | None) -> str:
    if client_ids is None:
        return ""
    # Integers, written into the statement (as billing.selectors does): one form whatever the count.
    return f" AND client_id IN ({', '.join(str(int(pk)) for pk in client_ids) or 'NULL'})"


def statement_figures(month: dt.date, *, client_ids: Iterable[int] | None = None) -> dict[int, MonthFigures]:
    """Every client's figures for ``month`` (any day of it), or those of ``client_ids``: two queries."""
    start, end = month_first(month), month_last(month)
    ids = None if client_ids is None else list(client_ids)
    params: dict[str, Any] = {"start": start, "end": end}
    with connection.cursor() as cursor:
        cursor.execute(_FIGURES_SQL.format(clients=_clients_clause(ids)), params)
        rows = cursor.fetchall()
    aging = clients_aging(ids, end, until=end)
    return {row[0]: MonthFigures(
        client_id=row[0], opening_cents=int(row[1]), charges_cents=int(row[2]), payments_cents=int(row[3]),
        refunds_cents=int(row[4]), adjustments_cents=int(row[5]), sessions=int(row[6]), entries=int(row[7]),
        aging=aging.get(row[0], Aging())) for row in rows}


@dataclass(frozen=True)
class StatementLine:
    date: dt.date
    kind: str
    memo: str
    service_code: str
    clinician: str
    amount_cents: int

    def as_json(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), "kind": self.kind, "memo": self.memo,
                "service_code": self.service_code, "clinician": self.clinician, "amount_cents": self.amount_cents}


def statement_lines(month: dt.date, *, client_ids: Iterable[int] | None = None) -> dict[int, list[StatementLine]]:
    """The entries dated in ``month``, by client, in date order (one query)."""
    start, end = month_first(month), month_last(month)
    entries = LedgerEntry.objects.filter(occurred_on__gte=start, occurred_on__lte=end)
    if client_ids is not None:
        entries = entries.filter(client_id__in=list(client_ids))
    lines: dict[int, list[StatementLine]] = {}
    for client_id, day, kind, memo, code, clinician, amount in entries.order_by(
            "client_id", "occurred_on", "created_at", "id").values_list(
            "client_id", "occurred_on", "kind", "memo", "appointment__service_code", "appointment__clinician__name",
            "amount_cents"):
        lines.setdefault(client_id, []).append(StatementLine(day, kind, memo, code or "", clinician or "", amount))
    return lines
