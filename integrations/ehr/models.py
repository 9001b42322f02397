from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

validate_source = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,49}\Z",
    "A source is a short lowercase name such as simplepractice: letters, digits, - and _.")


class ApiKey(models.Model):
    """A key an EHR integration uses: bound to one source, shown once, stored as a hash.

    The key is ``pbp_<prefix>_<secret>``; the prefix finds the row and is safe to show, the secret has
    256 random bits, so one SHA-256 of the whole key is enough (no slow hash is needed for keys nobody
    chose). ``user`` is a service account that cannot log in: the audit trail names it as the actor.
    """

    source = models.CharField(max_length=50, validators=[validate_source],
                              help_text="The EHR this key pushes for; its external ids are unique within it.")
    name = models.CharField(max_length=100, blank=True, help_text="What uses the key, e.g. 'nightly sync'.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", editable=False)
    created_at = models.DateTimeField(editable=False)
    created_by = models.CharField(max_length=150, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False,
                                        help_text="Updated at most once a minute.")

    class Meta:
        verbose_name = "API key"
        ordering = ["source", "-created_at"]

    def __str__(self) -> str:
        return f"{self.source} · pbp_{self.prefix}_…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class CsvImportStatus(models.TextChoices):
    PREVIEWING = "previewing", "Dry run in progress"
    PREVIEWED = "previewed", "Previewed (nothing written)"
    APPLYING = "applying", "Applying"
    APPLIED = "applied", "Applied"
    REFUSED = "refused", "Not applied (rows rejected)"
    FAILED = "failed", "Failed (nothing written)"
    DISCARDED = "discarded", "Discarded"


class CsvImport(models.Model):
    """One CSV file staff uploaded: its preview, and whether it was applied. The file itself is staged
    under a per-upload directory and deleted once applied or discarded. The dry run and the apply each
    run in the task cluster as a ``CsvImportJob``."""

    source = models.CharField(max_length=50, validators=[validate_source],
                              help_text="The EHR the file was exported from; external ids are unique within it.")
    kind = models.CharField(max_length=30)
    preset = models.CharField(max_length=30)
    mapping = models.TextField(blank=True, help_text="Column=field pairs that override the preset.")
    file_name = models.CharField(max_length=255)
    size_bytes = models.PositiveBigIntegerField(default=0)
    staged_path = models.CharField(max_length=500, blank=True, editable=False)
    status = models.CharField(max_length=20, choices=CsvImportStatus.choices, default=CsvImportStatus.PREVIEWING)
    report = models.JSONField(default=dict, help_text="Counts, the first rows' outcomes and the first problems.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField()
    applied_at = models.DateTimeField(null=True, blank=True)
    rows_per_second = models.FloatField(null=True, blank=True)

    class Meta:
        verbose_name = "CSV import"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.kind}, {self.source})"


class CsvImportJobAction(models.TextChoices):
    PREVIEW = "preview", "Dry run"
    APPLY = "apply", "Apply"


class CsvImportJobStatus(models.TextChoices):
    QUEUED = "queued", "Waiting for the task queue"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class CsvImportJob(models.Model):
    """One run of a CSV import in the task cluster (integrations/ehr/imports/csv_jobs.py): the dry run or the apply.

    ``rows_done`` and ``progress_at`` are written while the import's transaction is still open, through a
    connection of their own, so the admin's progress bar moves while nothing of the import is visible yet.
    The outcome (counts, rows, problems) goes to the import's ``report``; ``summary`` is its one line.
    """

    csv_import = models.ForeignKey(CsvImport, on_delete=models.CASCADE, related_name="jobs")
    action = models.CharField(max_length=10, choices=CsvImportJobAction.choices)
    status = models.CharField(max_length=10, choices=CsvImportJobStatus.choices, default=CsvImportJobStatus.QUEUED)
    rows_total = models.PositiveIntegerField(null=True, blank=True, help_text="Counted before the run starts.")
    rows_done = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True, help_text="When rows_done was last written.")
    finished_at = models.DateTimeField(null=True, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    task_id = models.CharField(max_length=40, blank=True, help_text="The task queue's id for the run.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Runs started (more than one after the "
                                                                      "task queue restarted mid-run).")

    class Meta:
        verbose_name = "CSV import run"
        ordering = ["-queued_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} of {self.csv_import} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in (CsvImportJobStatus.QUEUED, CsvImportJobStatus.RUNNING)


class WebhookEndpoint(models.Model):
    """Where the portal tells a source's EHR side about money: one URL per source, signed with its secret."""

    source = models.CharField(max_length=50, unique=True, validators=[validate_source],
                              help_text="Events about this source's clients go here.")
    url = models.URLField(max_length=500, help_text="HTTPS in production; receives POSTed JSON events.")
    secret = models.CharField(max_length=100, editable=False,
                              help_text="Signs each delivery (HMAC-SHA256); shown once when created.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "write-back webhook"
        ordering = ["source"]

    def __str__(self) -> str:
        return f"{self.source} → {self.url}"


class WebhookEventStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Gave up (retry by hand)"


class WebhookEvent(models.Model):
    """The outbox: one event about one charge for one endpoint, written in the charge change's transaction.

    Delivered at least once and in order per charge: an event is not sent while an earlier one for the
    same charge and endpoint is undelivered.
    """

    event_id = models.CharField(max_length=40, unique=True, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="events")
    charge = models.ForeignKey("billing.Charge", on_delete=models.PROTECT, related_name="+")
    type = models.CharField(max_length=40)
    payload = models.JSONField()
    occurred_at = models.DateTimeField()
    status = models.CharField(max_length=20, choices=WebhookEventStatus.choices, default=WebhookEventStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        verbose_name = "write-back event"
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhook_event_due"),
            models.Index(fields=["endpoint", "charge", "id"], name="webhook_event_charge_order"),
        ]

    def __str__(self) -> str:
        return f"{self.type} for charge #{self.charge_id}"


class RemittanceUploadStatus(models.TextChoices):
    PREVIEWED = "previewed", "Previewed (nothing posted yet)"
    APPLIED = "applied", "Posted"
    DISCARDED = "discarded", "Discarded"


class RemittanceUpload(models.Model):
    """An 835 file staff uploaded: its dry run, then posted all at once (or discarded)."""

    file_name = models.CharField(max_length=255)
    content = models.TextField(help_text="The file as uploaded (remittances are small).")
    status = models.CharField(max_length=10, choices=RemittanceUploadStatus.choices,
                              default=RemittanceUploadStatus.PREVIEWED)
    report = models.JSONField(default=list, help_text="One report per payment in the file.")
    summary = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField()
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "ERA (835) upload"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.file_name
