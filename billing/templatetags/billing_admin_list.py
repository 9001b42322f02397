"""The staff lists' date drill-down (``date_hierarchy``) without reading every row.

Django's lists the years, months or days that have rows with ``SELECT DISTINCT`` over every row of the
list (all sessions for the years, a year's for the months): its cost grows with the table. This one
offers the periods between the table's first and last row (one MIN/MAX of the unfiltered table, read off
the column's index: with a search or filter applied, finding the first matching row could read them
all), within the year or month chosen, so a period may be offered that has no rows in the list. The rest
(links, titles, template) is Django's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django import template
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.contrib.admin.views.main import ChangeList
from django.db.models import Max, Min
from django.utils import timezone

register = template.Library()


class _PeriodsFromRange:
    """Stands in for the list's queryset in Django's ``date_hierarchy``: ``dates``/``datetimes`` answer from
    the table's first and last row's dates (read once), within the chosen year and month."""

    def __init__(self, queryset: Any, field_name: str, year: str | None, month: str | None) -> None:
        self.queryset, self.field_name = queryset, field_name
        self.year = int(year) if year and year.isdigit() else None
        self.month = int(month) if month and month.isdigit() and 1 <= int(month) <= 12 else None
        self._range: dict[str, Any] | None = None

    def aggregate(self, **kwargs: Any) -> dict[str, Any]:
        if self._range is None:
            self._range = self.queryset.aggregate(first=Min(self.field_name), last=Max(self.field_name))
        return self._range

    def _bounds(self) -> tuple[dt.date, dt.date] | None:
        found = self.aggregate()
        first, last = found["first"], found["last"]
        if first is None or last is None:
            return None
        if isinstance(first, dt.datetime):
            first, last = (timezone.localtime(v) if timezone.is_aware(v) else v for v in (first, last))
            return first.date(), last.date()
        return first, last

    def dates(self, field_name: str, kind: str) -> list[dt.date]:
        bounds = self._bounds()
        if bounds is None:
            return []
        first, last = bounds
        if self.year is not None and kind != "year":
            chosen_start = dt.date(self.year, self.month or 1, 1)
            chosen_end = (dt.date(self.year + 1, 1, 1) if self.month in (None, 12)
                          else dt.date(self.year, (self.month or 0) + 1, 1)) - dt.timedelta(days=1)
            first, last = max(first, chosen_start), min(last, chosen_end)
            if first > last:
                return []
        if kind == "year":
            return [dt.date(year, 1, 1) for year in range(first.year, last.year + 1)]
        if kind == "month":
            months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
            return [dt.date(n // 12, n % 12 + 1, 1) for n in months]
        return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]

    datetimes = dates


class _List:
    """The change list, with its queryset answering the date drill-down from the range."""

    def __init__(self, cl: Any) -> None:
        self._cl = cl
        field = cl.date_hierarchy
        self.queryset = _PeriodsFromRange(cl.root_queryset, field, cl.params.get(f"{field}__year"),
                                          cl.params.get(f"{field}__month"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cl, name)


def date_hierarchy_from_range(cl: Any) -> Any:
    return date_hierarchy(cast(ChangeList, _List(cl)))


@register.tag(name="date_hierarchy_from_range")
def date_hierarchy_from_range_tag(parser: Any, token: Any) -> InclusionAdminNode:
    # django-stubs name a first argument Django's InclusionAdminNode does not take.
    return InclusionAdminNode(parser, token, func=date_hierarchy_from_range,  # type: ignore[call-arg]
                              template_name="date_hierarchy.html", takes_context=False)
