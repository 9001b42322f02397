from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.db.models.signals import post_migrate


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Client portal"

    def ready(self) -> None:
        # Imported once the apps are loaded: these use the models (audit actors, roles, the deploy checks).
        from billing.audit.access import install_command_actor, install_task_actor, register_staff_models
        from billing.roles import sync_after_migrate
        from portal import checks  # registers the system checks

        register_staff_models()
        install_command_actor()
        install_task_actor()
        post_migrate.connect(sync_after_migrate, dispatch_uid="portal.roles_sync")
        checks.refuse_unsafe_start()


class PortalAdminConfig(AdminConfig):
    """The staff console: Django's admin with the practice's own site (portal/admin_site.py)."""

    default_site = "portal.admin_site.PracticeAdminSite"
