from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Client portal"

    def ready(self) -> None:
        from billing.audit.access import install_command_actor, install_task_actor, register_staff_models
        from billing.roles import sync_after_migrate
        from portal import checks  # registers the system checks

        register_staff_models()
        install_command_actor()
        install_task_actor()
        post_migrate.connect(sync_after_migrate, dispatch_uid="portal.roles_sync")
        checks.refuse_unsafe_start()
