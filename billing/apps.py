from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing.audit.trail import register_models

        register_models()


class BillingAdminConfig(AdminConfig):
    """The staff console: Django's admin with the practice's own front page."""

    default_site = "billing.admin.site.PracticeAdminSite"
