"""The task queue runs billing_tick every minute (the same code as `manage.py billing_tick`)."""

from django.db import migrations


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="billing_tick",
        defaults={"func": "billing.tasks.billing_tick", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="billing_tick").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_charge_deductible_applied"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
