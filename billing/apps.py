from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the apps are loaded: the trail registers billing's models with auditlog.
        from billing.audit.trail import register_models

        register_models()
