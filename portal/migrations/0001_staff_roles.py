"""The staff roles (billing/roles.py) as groups, and the ``system`` account that commands and tasks act as.

Permissions are normally created after all migrations have run; this creates them first so the roles can
be given them on a fresh database.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def forwards(apps, schema_editor):
    from billing.roles import roles_sync

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_sync(apps)
    user_model = apps.get_model("auth", "User")
    if not user_model.objects.filter(username="system").exists():
        # "!" starts an unusable password (django.contrib.auth.hashers.UNUSABLE_PASSWORD_PREFIX).
        user_model.objects.create(username="system", password="!system-account-cannot-sign-in", is_active=False,
                                  is_staff=False, first_name="System", last_name="(commands and tasks)")


def backwards(apps, schema_editor):
    from billing.roles import ROLES

    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("billing", "0011_staff_decisions"),
        ("ehr", "0001_initial"),
        ("auditlog", "0017_add_actor_email"),
        ("otp_totp", "0003_add_timestamps"),
        ("otp_static", "0003_add_timestamps"),
        ("axes", "0010_accessattemptexpiration"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
        ("sessions", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
