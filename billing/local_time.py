"""Times are stored in UTC; every date and time a person reads is in the practice's zone.

A request has the practice's zone active (``portal.middleware.PracticeTimezoneMiddleware``); work that starts
elsewhere (``billing_tick``, management commands, the task cluster) activates it with ``practice_zone_active``,
so templates, ``timezone.localtime``/``localdate`` and Django's date lookups give the practice's day there too.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager

from django.utils import timezone

from billing.models import Practice


@contextmanager
def practice_zone_active(practice: Practice | None = None) -> Iterator[zoneinfo.ZoneInfo]:
    """Make the practice's zone Django's current zone for the block."""
    zone = practice.zone if practice is not None else Practice.current_zone()
    with timezone.override(zone):
        yield zone


def iso_local(value: dt.datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    """ISO 8601 in the practice's zone with its offset (``2026-11-27T20:30:00-08:00``), for CSV exports."""
    return timezone.localtime(value, zone).isoformat(timespec="seconds") if value is not None else ""
