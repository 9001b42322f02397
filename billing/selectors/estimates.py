"""Good faith estimates: who still needs one."""

from __future__ import annotations

import datetime as dt

from django.db.models import Exists, OuterRef, QuerySet

from billing.models import BillingType, Client, EstimateStatus, GoodFaithEstimate

# Who gets an estimate: clients who pay for themselves (the law's uninsured or self-pay individuals).
ESTIMATE_BILLING_TYPES = (BillingType.SELF_PAY, BillingType.SLIDING_SCALE)


def clients_without_estimate(*, today: dt.date) -> QuerySet[Client]:
    """Active self-pay and sliding-scale clients with no estimate in force for ``today``."""
    in_force = GoodFaithEstimate.objects.filter(client=OuterRef("pk"), status=EstimateStatus.ISSUED,
                                                period_start__lte=today, period_end__gte=today)
    return (Client.objects.filter(active=True, billing_type__in=ESTIMATE_BILLING_TYPES)
            .filter(~Exists(in_force)).order_by("last_name", "first_name", "pk"))
