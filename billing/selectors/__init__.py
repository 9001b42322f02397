"""Reads shared by the API, the admin and reports: balances and AR aging, derived from the ledger in SQL.

A balance is the sum of a client's ledger entries. Aging groups the same sum by how old each entry's
``occurred_on`` is (the date of service for charges): ``current`` is 0-30 days (and anything dated in the
future), then 31-60, 61-90 and over 90 days.

Entries are netted inside their own bucket first (a payment dated in the same bucket as the session it
paid clears it there). A credit left over in any bucket (a card payment dated the day it was taken, a
balance payment, a write-off) then pays off that client's oldest debt first, as AR aging conventionally
applies unallocated credits; a client in credit overall shows the credit as ``current``. The buckets
always add up to the balance, and one client's credit never hides another client's debt.

That one definition is ``_AGING_SQL``: a single statement (conditional SUMs per client, then the
settling with GREATEST) used for one client, a page of clients, and the practice's total, so the
API's balance, the admin report and the dashboard cannot disagree. Reading many clients never costs a
query per client.

Balances are kept by the database (``ClientBalance``, one row per client with a ledger, updated by
triggers in the same transaction as every ledger insert): the client list sorts and filters by them.
So are the amounts by age as of the day the tick last rolled them (``aging_roll``, once a day; the
triggers age each new entry against that day): on that day aging reads no ledger row at all; on another
day (the tick not run yet) it reads the balances and only the last 90 days' entries. Neither sums the
whole ledger. ``balance_mismatches`` and ``aging_mismatches`` (``manage.py verify_balances``) compare
them with the ledger's own sums.

Filtered by clinician, a client's AR is the part of their ledger behind that clinician's sessions:
entries tied to one of the clinician's appointments (charges, fees, adjustments, card payments and
refunds of those charges), and the share of any portal balance payment that paid those sessions' charges
(``BalanceAllocation``). Filtered by billing type, it is the clients of that type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Count, F, IntegerField, Q, QuerySet, Value
from django.db.models.functions import Coalesce

from billing.models import (
    AgingDay,
    Appointment,
    BalanceAllocation,
    Charge,
    Client,
    ClientBalance,
    FindingKind,
    FindingStatus,
    LedgerEntry,
    LedgerKind,
    ReconciliationFinding,
)

BUCKETS = ("current", "days_31_60", "days_61_90", "days_over_90")


@dataclass(frozen=True)
class Aging:
    """A balance split by age, in cents. ``current`` is 0-30 days."""

    current: int = 0
    days_31_60: int = 0
    days_61_90: int = 0
    days_over_90: int = 0

    @property
    def total(self) -> int:
        return self.current + self.days_31_60 + self.days_61_90 + self.days_over_90

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in BUCKETS}

    def __add__(self, other: Aging) -> Aging:
        return Aging(*(getattr(self, name) + getattr(other, name) for name in BUCKETS))


def client_balance(client: Client | int) -> int:
    """What ``client`` owes now, in cents (negative: the client is in credit)."""
    client_id = client if isinstance(client, int) else client.pk
    return client_balances([client_id])[client_id]


def client_balances(client_ids: Iterable[int]) -> dict[int, int]:
    """Balances for many clients in one query; a client with no entries owes 0."""
    ids = list(client_ids)
    balances = dict.fromkeys(ids, 0)
    for client_id, total in ClientBalance.objects.filter(client_id__in=ids).values_list("client_id", "balance_cents"):
        balances[client_id] = int(total)
    return balances


def clients_with_balance(queryset: QuerySet[Client]) -> QuerySet[Client]:
    """``queryset`` with ``balance_cents`` on every row (the kept balance: ClientBalance), in the same query."""
    return queryset.annotate(balance_cents=Coalesce(F("balance_row__balance_cents"), Value(0),
                                                    output_field=IntegerField()))



_LEDGER, _APPOINTMENT = LedgerEntry._meta.db_table, Appointment._meta.db_table
_ALLOCATION, _CHARGE, _CLIENT = BalanceAllocation._meta.db_table, Charge._meta.db_table, Client._meta.db_table
_BALANCE, _AGING_DAY = ClientBalance._meta.db_table, AgingDay._meta.db_table

_AGING_SQL = """
WITH {netted},
parts AS (
    SELECT client_id, GREATEST(n0, 0) AS o0, GREATEST(n1, 0) AS o1, GREATEST(n2, 0) AS o2, GREATEST(n3, 0) AS o3,
           GREATEST(-n0, 0) + GREATEST(-n1, 0) + GREATEST(-n2, 0) + GREATEST(-n3, 0) AS credit
    FROM netted
),
settled AS (
    -- The credit pays the oldest debt first; what is left of it is a current credit.
    SELECT client_id,
           o0 - GREATEST(credit - o3 - o2 - o1, 0) AS current,
           GREATEST(o1 - GREATEST(credit - o3 - o2, 0), 0) AS days_31_60,
           GREATEST(o2 - GREATEST(credit - o3, 0), 0) AS days_61_90,
           GREATEST(o3 - credit, 0) AS days_over_90
    FROM parts
)
{select}
"""


# Netted by age from every entry read: a clinician's view (its entries are not a client's whole ledger) or
# the balance as it stood at the end of an earlier day (``until``), where the kept balances cannot stand in.
_NETTED_FROM_ENTRIES = """entries AS ({entries}),
netted AS (
    SELECT client_id,
           COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on >= %(d30)s), 0) AS n0,
           COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(d30)s AND occurred_on >= %(d60)s), 0) AS n1,
           COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(d60)s AND occurred_on >= %(d90)s), 0) AS n2,
           COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(d90)s), 0) AS n3
    FROM entries GROUP BY client_id
)"""

# The same from the kept balances (ClientBalance): only the last 90 days' entries are read (an index-only
# scan of ledger_date_amounts); what is older is the balance less them. A client whose balance is 0 has
# nothing in any bucket once the credit is settled, so only clients with a balance are read.
_RECENT = """recent AS (
    SELECT l.client_id,
           COALESCE(SUM(l.amount_cents) FILTER (WHERE l.occurred_on >= %(d30)s), 0) AS n0,
           COALESCE(SUM(l.amount_cents) FILTER (WHERE l.occurred_on < %(d30)s AND l.occurred_on >= %(d60)s), 0) AS n1,
           COALESCE(SUM(l.amount_cents) FILTER (WHERE l.occurred_on < %(d60)s), 0) AS n2
    FROM {ledger} l WHERE l.occurred_on >= %(d90)s{recent_where} GROUP BY l.client_id
)"""
_FROM_RECENT = """SELECT b.client_id, COALESCE(r.n0, 0) AS n0, COALESCE(r.n1, 0) AS n1, COALESCE(r.n2, 0) AS n2,
           b.balance_cents - COALESCE(r.n0, 0) - COALESCE(r.n1, 0) - COALESCE(r.n2, 0) AS n3
    FROM {balances} b LEFT JOIN recent r ON r.client_id = b.client_id
    WHERE b.balance_cents <> 0{balance_where}"""


# On PostgreSQL, the kept amounts by age when the tick has rolled them to this very day (aging_roll): no
# ledger row is read. Both ways are in the one statement; PostgreSQL runs only the one whose day matches
# (an uncorrelated condition, checked once before the rest of its branch).
_NETTED_KEPT_OR_RECENT = """{recent},
netted AS (
    SELECT b.client_id, b.aged_0_30_cents AS n0, b.aged_31_60_cents AS n1, b.aged_61_90_cents AS n2,
           b.balance_cents - b.aged_0_30_cents - b.aged_31_60_cents - b.aged_61_90_cents AS n3
    FROM {balances} b
    WHERE (SELECT as_of FROM {aging_day} WHERE id = 1) = %(today)s AND b.balance_cents <> 0{balance_where}
    UNION ALL
    {from_recent} AND (SELECT as_of FROM {aging_day} WHERE id = 1) IS DISTINCT FROM %(today)s
)"""


def _client_filters(column: str, *, client_ids: list[int] | None, billing_type: str | None,
                    params: dict[str, Any]) -> list[str]:
    where = []
    if client_ids is not None:
        # Integers, written into the statement.
        where.append(f"{column} IN ({', '.join(str(int(pk)) for pk in client_ids) or 'NULL'})")
    if billing_type:
        params["billing_type"] = billing_type
        where.append(f"{column} IN (SELECT id FROM {_CLIENT} WHERE billing_type = %(billing_type)s)")
    return where


def _netted_sql(*, client_ids: list[int] | None, clinician_id: int | None, billing_type: str | None,
                params: dict[str, Any], until: dt.date | None = None) -> str:
    if clinician_id is None and until is None:
        recent = "".join(f" AND {w}" for w in _client_filters(
            "l.client_id", client_ids=client_ids, billing_type=None, params=params))
        balance = "".join(f" AND {w}" for w in _client_filters(
            "b.client_id", client_ids=client_ids, billing_type=billing_type, params=params))
        parts = {"recent": _RECENT.format(ledger=_LEDGER, recent_where=recent),
                 "from_recent": _FROM_RECENT.format(balances=_BALANCE, balance_where=balance)}
        return _NETTED_KEPT_OR_RECENT.format(**parts, balances=_BALANCE, aging_day=_AGING_DAY, balance_where=balance)
    where = _client_filters("l.client_id", client_ids=client_ids, billing_type=billing_type, params=params)
    if until is not None:
        params["until"] = until
        where.append("l.occurred_on <= %(until)s")
    if clinician_id is None:
        return _NETTED_FROM_ENTRIES.format(
            entries=f"SELECT l.client_id, l.occurred_on, l.amount_cents FROM {_LEDGER} l WHERE {' AND '.join(where)}")
    params["clinician_id"] = clinician_id
    params["payment"] = LedgerKind.PAYMENT
    extra = "".join(f" AND {w}" for w in where)
    entries = (f"SELECT l.client_id, l.occurred_on, l.amount_cents FROM {_LEDGER} l "
               f"JOIN {_APPOINTMENT} a ON a.id = l.appointment_id WHERE a.clinician_id = %(clinician_id)s{extra} "
               f"UNION ALL SELECT l.client_id, l.occurred_on, -ba.amount_cents FROM {_LEDGER} l "
               f"JOIN {_ALLOCATION} ba ON ba.payment_id = l.charge_id JOIN {_CHARGE} c ON c.id = ba.charge_id "
               f"JOIN {_APPOINTMENT} a ON a.id = c.appointment_id WHERE l.appointment_id IS NULL "
               f"AND l.kind = %(payment)s AND a.clinician_id = %(clinician_id)s{extra}")
    return _NETTED_FROM_ENTRIES.format(entries=entries)


def _aging_query(select: str, *, today: dt.date, client_ids: Iterable[int] | None = None,
                 clinician_id: int | None = None, billing_type: str | None = None,
                 extra: Mapping[str, Any] | None = None, until: dt.date | None = None) -> list[tuple[Any, ...]]:
    # 0-30 days old is occurred_on >= today - 30 (future dates count as current).
    params: dict[str, Any] = {"d30": today - dt.timedelta(days=30), "d60": today - dt.timedelta(days=60),
                              "d90": today - dt.timedelta(days=90), **(extra or {})}
    params["today"] = today
    netted = _netted_sql(client_ids=None if client_ids is None else list(client_ids), clinician_id=clinician_id,
                         billing_type=billing_type, params=params, until=until)
    sql = _AGING_SQL.format(netted=netted, select=select)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def client_aging(client: Client | int, today: dt.date) -> Aging:
    """``client``'s balance by age as of ``today`` (the practice's local date)."""
    client_id = client if isinstance(client, int) else client.pk
    return clients_aging([client_id], today).get(client_id, Aging())


def clients_aging(client_ids: Iterable[int] | None, today: dt.date, *,
                  until: dt.date | None = None) -> dict[int, Aging]:
    """Aging for many clients (or every client with ledger entries, for ``None``) in one query; with ``until``,
    of the balance as it stood at the end of that day (entries dated later left out)."""
    rows = _aging_query("SELECT client_id, current, days_31_60, days_61_90, days_over_90 FROM settled",
                        today=today, client_ids=client_ids, until=until)
    return {row[0]: Aging(*(int(v) for v in row[1:])) for row in rows}


_TOTAL_SELECT = ("SELECT COUNT(*) FILTER (WHERE current <> 0 OR days_31_60 <> 0 OR days_61_90 <> 0 "
                 "OR days_over_90 <> 0), COALESCE(SUM(current), 0), COALESCE(SUM(days_31_60), 0), "
                 "COALESCE(SUM(days_61_90), 0), COALESCE(SUM(days_over_90), 0) FROM settled")


def ar_aging(today: dt.date, *, clinician_id: int | None = None, billing_type: str | None = None) -> Aging:
    """The practice's accounts receivable by age: each client's aging, added up (one query)."""
    return ar_aging_summary(today, clinician_id=clinician_id, billing_type=billing_type)[1]


def ar_aging_summary(today: dt.date, *, clinician_id: int | None = None,
                     billing_type: str | None = None) -> tuple[int, Aging]:
    """How many clients have a balance, and the total by age (one query)."""
    row = _aging_query(_TOTAL_SELECT, today=today, clinician_id=clinician_id, billing_type=billing_type)[0]
    return int(row[0]), Aging(*(int(v) for v in row[1:]))


@dataclass(frozen=True)
class ClientAgingRow:
    client_id: int
    name: str
    billing_type: str
    aging: Aging


AGING_ORDERS = {
    "-total": "total DESC, s.client_id",
    "-days_over_90": "s.days_over_90 DESC, total DESC, s.client_id",
    "name": "c.last_name, c.first_name, s.client_id",
}


def ar_aging_by_client(today: dt.date, *, clinician_id: int | None = None, billing_type: str | None = None,
                       order: str = "-total", limit: int | None = 100, offset: int = 0) -> list[ClientAgingRow]:
    """Clients with a balance, each by age, sorted and paged in the database (one query per page)."""
    select = ("SELECT s.client_id, c.first_name, c.last_name, c.billing_type, s.current, s.days_31_60, "
              "s.days_61_90, s.days_over_90, s.current + s.days_31_60 + s.days_61_90 + s.days_over_90 AS total "
              f"FROM settled s JOIN {_CLIENT} c ON c.id = s.client_id "
              "WHERE s.current <> 0 OR s.days_31_60 <> 0 OR s.days_61_90 <> 0 OR s.days_over_90 <> 0 "
              f"ORDER BY {AGING_ORDERS.get(order, AGING_ORDERS['-total'])}")
    extra: dict[str, Any] = {}
    if limit is not None:
        select += " LIMIT %(limit)s OFFSET %(offset)s"
        extra = {"limit": limit, "offset": offset}
    rows = _aging_query(select, today=today, clinician_id=clinician_id, billing_type=billing_type, extra=extra)
    return [ClientAgingRow(row[0], f"{row[2]}, {row[1]}", row[3], Aging(*(int(v) for v in row[4:8])))
            for row in rows]


def balance_mismatches() -> list[tuple[int, int, int]]:
    """Clients whose kept balance (ClientBalance) is not the sum of their ledger: (client id, kept, ledger
    sum), in client order. One query over the whole ledger: a check, not a page."""
    sql = (f"SELECT COALESCE(l.client_id, b.client_id), COALESCE(b.balance_cents, 0), COALESCE(l.total, 0) "
           f"FROM (SELECT client_id, SUM(amount_cents) AS total FROM {_LEDGER} GROUP BY client_id) l "
           f"FULL OUTER JOIN {_BALANCE} b ON b.client_id = l.client_id "
           f"WHERE COALESCE(b.balance_cents, 0) <> COALESCE(l.total, 0) ORDER BY 1")
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [(int(a), int(b), int(c)) for a, b, c in cursor.fetchall()]


def aging_mismatches() -> list[tuple[int, tuple[int, int, int], tuple[int, int, int]]]:
    """Clients whose kept aged amounts (0-30, 31-60, 61-90 days as of AgingDay) are not their ledger's:
    (client id, kept, ledger). None to compare before the first roll."""
    as_of = AgingDay.objects.filter(pk=1).values_list("as_of", flat=True).first()
    if as_of is None:
        return []
    params = {"d30": as_of - dt.timedelta(days=30), "d60": as_of - dt.timedelta(days=60),
              "d90": as_of - dt.timedelta(days=90)}
    sql = f"""
        WITH ledger AS (
            SELECT client_id,
                   COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on >= %(d30)s), 0) AS n0,
                   COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(d30)s AND occurred_on >= %(d60)s), 0) AS n1,
                   COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(d60)s AND occurred_on >= %(d90)s), 0) AS n2
            FROM {_LEDGER} GROUP BY client_id
        )
        SELECT COALESCE(l.client_id, b.client_id), COALESCE(b.aged_0_30_cents, 0), COALESCE(b.aged_31_60_cents, 0),
               COALESCE(b.aged_61_90_cents, 0), COALESCE(l.n0, 0), COALESCE(l.n1, 0), COALESCE(l.n2, 0)
        FROM ledger l FULL OUTER JOIN {_BALANCE} b ON b.client_id = l.client_id
        WHERE (COALESCE(b.aged_0_30_cents, 0), COALESCE(b.aged_31_60_cents, 0), COALESCE(b.aged_61_90_cents, 0))
              <> (COALESCE(l.n0, 0), COALESCE(l.n1, 0), COALESCE(l.n2, 0))
        ORDER BY 1"""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(int(r[0]), (int(r[1]), int(r[2]), int(r[3])), (int(r[4]), int(r[5]), int(r[6])))
                for r in cursor.fetchall()]


# --- Reconciliation findings -----------------------------------------------------------------------------

FINDING_KINDS = tuple(FindingKind.values)  # the API's finding kinds (docs/api.md)

def findings_for_source(*, week: dt.date, source: str) -> list[ReconciliationFinding]:
    """The week's current findings about one EHR's records, and the unmatched Stripe payments (which
    belong to no EHR record), in a stable order."""
    about_source = (Q(appointment__source=source) | Q(appointment__isnull=True, client__source=source)
                    | Q(appointment__isnull=True, client__isnull=True))
    return list(ReconciliationFinding.objects.filter(about_source, week=week, gone_at__isnull=True)
                .select_related("appointment", "client").order_by("service_date", "kind", "key"))


def open_findings_by_kind() -> dict[str, int]:
    """Open findings still found, by kind (one query)."""
    rows = (ReconciliationFinding.objects.filter(status=FindingStatus.OPEN, gone_at__isnull=True)
            .values("kind").annotate(n=Count("pk")).order_by().values_list("kind", "n"))
    return dict(rows)
