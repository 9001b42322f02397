from django.apps import AppConfig


class EhrConfig(AppConfig):
    name = "integrations.ehr"
    label = "ehr"
    verbose_name = "EHR integration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the apps are loaded (the webhooks module uses the models): the EHR side connects its
        # write-back writer and deliverer to billing's outbox door.
        from billing.services.outbound import Writeback, writeback_connect
        from integrations.ehr.writeback.webhooks import events_deliver, events_enqueue

        writeback_connect(Writeback(enqueue=events_enqueue, deliver=events_deliver))
