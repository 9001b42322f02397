from django.apps import AppConfig


class EhrConfig(AppConfig):
    name = "integrations.ehr"
    label = "ehr"
    verbose_name = "EHR integration"
    default_auto_field = "django.db.models.BigAutoField"
