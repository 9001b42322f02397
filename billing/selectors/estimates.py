"""Good faith estimates: who still needs one."""

from __future__ import annotations

import datetime as dt

from django.db.models import Exists, OuterRef, QuerySet

from billing.models import ESTIMATE_BILLING_TYPES, Client, EstimateStatus, GoodFaithEstimate


def clients_without_estimate(*, today: dt.date) -> QuerySet[Client]:
    """Active self-pay and sliding-scale clients with no estimate in force for ``today``."""
    in_force = GoodFaithEstimate.objects.filter(client=OuterRef("pk"), status=EstimateStatus.ISSUED,
                                                period_start__lte=today, period_end__gte=today)
    return (Client.objects.filter(active=True, billing_type__in=ESTIMATE_BILLING_TYPES)
            .filter(~Exists(in_force)).order_by("last_name", "first_name", "pk"))
