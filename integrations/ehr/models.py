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
