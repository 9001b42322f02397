"""API keys in the staff console: create (the key is shown once, in a message), see last use, revoke."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils import timezone

from integrations.ehr.keys import api_key_create, api_key_revoke
from integrations.ehr.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("source", "name", "key_hint", "created_at", "last_used_at", "revoked_at")
    list_filter = ("source", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("source", "name", "prefix")
    fields = ("source", "name")
    readonly_fields = ("key_hint", "created_at", "created_by", "last_used_at", "revoked_at")
    actions = ["revoke"]

    @admin.display(description="key")
    def key_hint(self, obj: ApiKey) -> str:
        return f"pbp_{obj.prefix}_…"

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        return ("source", "name") if obj is None else ("source", "name", *self.readonly_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        # A key's source is fixed once issued: its records' external ids belong to that source.
        return self.readonly_fields if obj is None else ("source", *self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = api_key_create(source=obj.source, name=obj.name, now=timezone.now(),
                                created_by=request.user.get_username())
        # The admin goes on with this instance (its redirect and log entry need the saved row).
        obj.pk = issued.api_key.pk
        obj.__dict__.update({k: v for k, v in issued.api_key.__dict__.items() if not k.startswith("_")})
        obj._state.adding = False
        messages.warning(request, f"The new API key for {obj.source} is {issued.key} — copy it now: it is shown "
                                  "only this once and cannot be recovered, only revoked and replaced.")

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoke instead: the row keeps when the key was used

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        now = timezone.now()
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key, now=now)
        self.message_user(request, "Revoked. Requests with those keys now get 401.", messages.SUCCESS)
