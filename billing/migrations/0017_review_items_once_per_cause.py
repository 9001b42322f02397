"""One open review item per cause and record.

A cause about the client (no card on file, a Stripe customer to link, charges waiting for a choice) was
opened once per session, so a client with a weekly session was listed every week. The duplicates are
closed, the oldest kept, and a constraint keeps it that way. Items of other causes with no session
(which the per-session constraint could not catch) are closed the same way.
"""

from django.db import migrations, models
from django.db.models import Count
from django.utils import timezone

CLIENT_KINDS = ("no_card", "stripe_link", "waiting_choice")


def close_duplicates(apps, schema_editor):
    ReviewItem = apps.get_model("billing", "ReviewItem")
    now = timezone.now()
    open_items = ReviewItem.objects.filter(status="open")
    for items in (open_items.filter(kind__in=CLIENT_KINDS),
                  open_items.exclude(kind__in=CLIENT_KINDS).filter(appointment__isnull=True)):
        repeated = items.values("kind", "client_id").annotate(n=Count("id")).filter(n__gt=1).order_by()
        for group in repeated:
            kept, *others = items.filter(kind=group["kind"], client_id=group["client_id"]).order_by("created_at", "id")
            for item in others:
                item.status = "resolved"
                item.resolved_at = now
                item.resolution_note = f"Closed as a repeat of review item #{kept.pk}: one open item per cause."
                item.save(update_fields=["status", "resolved_at", "resolution_note"])
            # The oldest item stays (how long it has waited), naming what the newest named: its session and
            # charge are the ones most likely still waiting, and closing the item for them finds it.
            newest = others[-1]
            kept.appointment_id, kept.charge_id, kept.reason = newest.appointment_id, newest.charge_id, newest.reason
            kept.save(update_fields=["appointment", "charge", "reason"])


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0016_outbound_email_charge_amounts_and_weekly_payment"),
    ]

    operations = [
        migrations.RunPython(close_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="reviewitem",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind__in", ("no_card", "stripe_link", "waiting_choice")), ("status", "open")),
                fields=("kind", "client"), name="review_open_once_per_client"),
        ),
    ]
