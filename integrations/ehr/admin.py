"""The EHR side of the staff console: API keys (shown once, revocable), CSV imports (upload, dry-run preview,
apply all or nothing) and write-back webhooks (endpoints with a signing secret, the outbox with retry now)."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from billing.admin.common import staff_user
from billing.services.remittances import PostReport
from integrations.ehr.era.posting import RemittanceFileError, era_post, summary
from integrations.ehr.imports.csv_import import ImportFileError, Report, csv_check, parse_mapping
from integrations.ehr.imports.csv_jobs import (
    ImportBusy,
    job_cancel,
    job_check_stopped,
    job_progress,
    job_start,
    latest_job,
    staging_root,
    unstage,
)
from integrations.ehr.imports.csv_presets import FIELDS, KINDS, PRESETS
from integrations.ehr.keys import api_key_create, api_key_revoke
from integrations.ehr.models import (
    ApiKey,
    CsvImport,
    CsvImportJobAction,
    CsvImportJobStatus,
    CsvImportStatus,
    RemittanceUpload,
    RemittanceUploadStatus,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventStatus,
    validate_source,
)
from integrations.ehr.writeback.webhooks import event_retry_now, events_deliver, secret_create


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


# --- CSV imports -------------------------------------------------------------------------------------------

def _upload_page_post(model_admin: Any, request: HttpRequest, object_id: str) -> tuple[Any, HttpResponse | None, str]:
    """An upload's own page (a CSV import, an ERA file): the record if this user may see it, and for a POST the
    action it names (apply, discard, ...) done by the admin's ``_act``: a redirect to the page when it worked,
    else the error to show on it."""
    record = model_admin.get_object(request, object_id)
    if record is None or not model_admin.has_view_permission(request, record):
        raise PermissionDenied
    if request.method != "POST":
        return record, None, ""
    if not model_admin.has_change_permission(request, record):
        raise PermissionDenied
    error = model_admin._act(request, record, request.POST.get("action", ""))
    return record, None if error else HttpResponseRedirect(model_admin._page(record)), error


class CsvUploadForm(forms.Form):
    source = forms.CharField(max_length=50, validators=[validate_source],
                             help_text="The EHR the file comes from, as its API key's source (e.g. simplepractice): "
                                       "records are matched by their id within it.")
    kind = forms.ChoiceField(choices=[(k, k.replace("-", " ").capitalize()) for k in KINDS])
    preset = forms.ChoiceField(choices=[(p.name, p.label) for p in PRESETS.values()])
    mapping = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text='Adjust the preset: "Column=field" pairs, separated by commas or lines (e.g. "Therapist=clinician").')
    file = forms.FileField(help_text="The CSV file as the EHR exported it (UTF-8, UTF-16 or Windows-1252).")

    def clean_mapping(self) -> str:
        text: str = self.cleaned_data.get("mapping", "")
        try:
            parse_mapping(text)
        except ImportFileError as error:
            raise forms.ValidationError(str(error)) from None
        return text


class CsvImportAdmin(admin.ModelAdmin):
    """Upload an EHR export, see the dry run row by row, then apply it all or nothing.

    The dry run and the apply run in the task cluster (integrations/ehr/imports/csv_jobs.py), whatever the file's
    size: while one runs, the import's page shows a progress bar that polls ``<id>/progress/``; once it has
    ended, the same page shows the report. Every POST redirects, so reloading a page never starts a run.
    """

    list_display = ("created_at", "file_name", "source", "kind", "preset", "status", "summary", "created_by")
    list_filter = ("status", "kind", "source")
    list_select_related = ("created_by",)
    show_full_result_count = False

    @admin.display(description="outcome")
    def summary(self, obj: CsvImport) -> str:
        return Report.from_dict(obj.report).summary() if obj.report else ""

    def has_delete_permission(self, request: HttpRequest, obj: CsvImport | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_progress"
        return [path("<path:object_id>/progress/", self.admin_site.admin_view(self.progress_view), name=name),
                *super().get_urls()]

    def _page(self, record: CsvImport) -> str:
        return reverse("admin:ehr_csvimport_change", args=[record.pk])

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
                 ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CsvUploadForm(request.POST or None, request.FILES or None,
                             initial={"preset": "simplepractice", "kind": "appointments"})
        error = ""
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            staged = Path(tempfile.mkdtemp(prefix="upload-", dir=staging_root())) / "export.csv"
            with staged.open("wb") as out:
                for piece in upload.chunks():
                    out.write(piece)
            record = CsvImport(source=form.cleaned_data["source"], kind=form.cleaned_data["kind"],
                               preset=form.cleaned_data["preset"], mapping=form.cleaned_data["mapping"],
                               file_name=Path(upload.name or "export.csv").name[:255], size_bytes=upload.size or 0,
                               staged_path=str(staged), created_by=staff_user(request), created_at=timezone.now())
            try:
                # What can be told from the first lines is told on this form, before anything is queued.
                csv_check(path=staged, kind=record.kind, preset=record.preset, mapping=parse_mapping(record.mapping))
            except ImportFileError as problem:
                unstage(record)
                error = str(problem)
            else:
                record.save()
                job_start(csv_import=record, action=CsvImportJobAction.PREVIEW, requested_by=staff_user(request),
                          now=timezone.now())
                return HttpResponseRedirect(self._page(record))
        return TemplateResponse(request, "admin/ehr/csvimport/upload.html", {
            **self.admin_site.each_context(request), "title": "Import a CSV export", "form": form, "error": error,
            "opts": self.model._meta, "presets": PRESETS.values(), "fields": FIELDS})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        record, done, error = _upload_page_post(self, request, object_id)
        if done is not None:
            return done
        job = latest_job(record)
        if job is not None and job.status == CsvImportJobStatus.RUNNING and job_check_stopped(job, timezone.now()):
            record.refresh_from_db()
        context = {**self.admin_site.each_context(request), "record": record, "job": job, "error": error,
                   "opts": self.model._meta, "preset": PRESETS.get(record.preset)}
        if job is not None and job.active:
            return TemplateResponse(request, "admin/ehr/csvimport/progress.html", {
                **context, "title": f"CSV import: {record.file_name}", "progress": job_progress(job, timezone.now()),
                "progress_url": reverse("admin:ehr_csvimport_progress", args=[record.pk]),
                "can_discard": job.status == CsvImportJobStatus.QUEUED and self.has_change_permission(request, record)})
        report = Report.from_dict(record.report) if record.report else None
        may_change = self.has_change_permission(request, record)
        staged = bool(record.staged_path)
        return TemplateResponse(request, "admin/ehr/csvimport/preview.html", {
            **context, "title": f"CSV import: {record.file_name}", "report": report,
            "jobs": record.jobs.select_related("requested_by"),
            "can_apply": (report is not None and record.status == CsvImportStatus.PREVIEWED and staged
                          and report.rows > 0 and not report.rejected and may_change),
            "can_preview": may_change and staged and record.status in (CsvImportStatus.PREVIEWED,
                                                                       CsvImportStatus.FAILED),
            "more_problems": report.rejected - len(report.problems) if report else 0,
            "more_rows": report.rows - len(report.preview) if report else 0})

    def _act(self, request: HttpRequest, record: CsvImport, action: str) -> str:
        """Discard, preview again or apply; returns an error for the page, or "" when done."""
        job = latest_job(record)
        if job is not None and job.status == CsvImportJobStatus.RUNNING:
            return "This import is running; wait for it to finish."
        finished = (CsvImportStatus.APPLIED, CsvImportStatus.REFUSED, CsvImportStatus.DISCARDED)
        if record.status in finished or not record.staged_path:
            return "This import is finished; upload the file again to import it anew."
        now = timezone.now()
        if action == "discard":
            if job is not None and job.status == CsvImportJobStatus.QUEUED and not job_cancel(
                    job=job, now=now, reason=f"Discarded by {request.user.get_username()} before it ran."):
                return "This import has just started; wait for it to finish."
            unstage(record)
            record.status = CsvImportStatus.DISCARDED
            record.save()
            self.message_user(request, "Discarded: nothing was imported and the file was deleted.", messages.INFO)
            return ""
        if job is not None and job.active:
            return "This import is waiting for the task queue; wait for it, or discard it."
        if action == "preview" and record.status in (CsvImportStatus.PREVIEWED, CsvImportStatus.FAILED):
            mapping = request.POST.get("mapping", "")
            try:
                csv_check(path=Path(record.staged_path), kind=record.kind, preset=record.preset,
                          mapping=parse_mapping(mapping))
            except ImportFileError as problem:
                record.mapping = mapping  # shown again in the form, to be corrected
                return str(problem)
            record.mapping = mapping
            return self._start(request, record, CsvImportJobAction.PREVIEW, now)
        if action == "apply" and record.status == CsvImportStatus.PREVIEWED:
            report = Report.from_dict(record.report) if record.report else None
            if report is None or report.rejected or not report.rows:
                return "Nothing can be imported while rows are rejected."
            return self._start(request, record, CsvImportJobAction.APPLY, now)
        return "That cannot be done to this import now."

    def _start(self, request: HttpRequest, record: CsvImport, action: str, now: dt.datetime) -> str:
        try:
            job_start(csv_import=record, action=action, requested_by=staff_user(request), now=now)
        except ImportBusy as busy:
            return str(busy)
        return ""

    def progress_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The progress bar's poll: the latest run's state as JSON (staff who may see the import only)."""
        record = self.get_object(request, object_id)
        if record is None:
            return JsonResponse({"error": "No such import."}, status=404)
        if not self.has_view_permission(request, record):
            return JsonResponse({"error": "You may not see this import."}, status=403)
        job = latest_job(record)
        if job is None:
            return JsonResponse({"error": "This import has not run."}, status=404)
        now = timezone.now()
        job_check_stopped(job, now)
        response = JsonResponse(job_progress(job, now))
        response["Cache-Control"] = "no-store"
        return response


# --- ERA (X12 835) uploads ----------------------------------------------------------------------------------

class EraUploadForm(forms.Form):
    file = forms.FileField(help_text="The 835 file as the insurer or clearinghouse sent it (.835, .txt, .edi).")


class RemittanceUploadAdmin(admin.ModelAdmin):
    """Upload an 835, see the dry run line by line, then post it all at once (or discard it).

    Billing staff's work: the page asks for the billing permission on remittance lines (the billing manager
    role posts; everyone who may see remittance lines sees the uploads). Every POST redirects.
    """

    list_display = ("created_at", "file_name", "status", "summary", "created_by")
    list_filter = ("status",)
    list_select_related = ("created_by",)
    show_full_result_count = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("billing.view_remittanceline")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_remittanceline")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("billing.change_remittanceline")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def _page(self, record: RemittanceUpload) -> str:
        return reverse("admin:ehr_remittanceupload_change", args=[record.pk])

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
                 ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = EraUploadForm(request.POST or None, request.FILES or None)
        error = ""
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            data = upload.read()
            name = Path(upload.name or "remittance.835").name[:255]
            now = timezone.now()
            try:
                reports = era_post(data=data, file_name=name, actor=f"staff:{staff_user(request).get_username()}",
                                   now=now, dry_run=True)
            except RemittanceFileError as problem:
                error = f"{name} cannot be posted: {problem} Nothing was posted."
            else:
                record = RemittanceUpload.objects.create(
                    file_name=name, content=data.decode("latin-1"), report=[r.as_dict() for r in reports],
                    summary=summary(reports), created_by=staff_user(request), created_at=now)
                return HttpResponseRedirect(self._page(record))
        return TemplateResponse(request, "admin/ehr/remittanceupload/upload.html", {
            **self.admin_site.each_context(request), "title": "Post an ERA (835) file", "form": form,
            "error": error, "opts": self.model._meta})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        record, done, error = _upload_page_post(self, request, object_id)
        if done is not None:
            return done
        reports = [PostReport.from_dict(r) for r in record.report]
        return TemplateResponse(request, "admin/ehr/remittanceupload/preview.html", {
            **self.admin_site.each_context(request), "title": f"ERA: {record.file_name}", "record": record,
            "reports": reports, "error": error, "opts": self.model._meta,
            "lines_url": reverse("admin:billing_remittanceline_changelist"),
            "can_apply": record.status == RemittanceUploadStatus.PREVIEWED and self.has_change_permission(request)})

    def _act(self, request: HttpRequest, record: RemittanceUpload, action: str) -> str:
        if record.status != RemittanceUploadStatus.PREVIEWED:
            return "This file is done with; upload it again to post it anew."
        if action == "discard":
            record.status, record.content = RemittanceUploadStatus.DISCARDED, ""
            record.save(update_fields=["status", "content"])
            self.message_user(request, "Discarded: nothing was posted.", messages.INFO)
            return ""
        if action != "apply":
            return "That cannot be done to this file."
        now = timezone.now()
        try:
            reports = era_post(data=record.content.encode("latin-1"), file_name=record.file_name,
                               actor=f"staff:{staff_user(request).get_username()}", now=now, dry_run=False)
        except RemittanceFileError as problem:
            return f"Not posted: {problem}"
        record.status, record.applied_at, record.content = RemittanceUploadStatus.APPLIED, now, ""
        record.report, record.summary = [r.as_dict() for r in reports], summary(reports)
        record.save()
        unmatched = sum(r.counts["unmatched"] for r in reports)
        self.message_user(request, f"Posted: {record.summary}." + (
            f" {unmatched} lines wait for you to pick their session." if unmatched else ""),
            messages.WARNING if unmatched else messages.SUCCESS)
        return ""


# --- Write-back webhooks -----------------------------------------------------------------------------------

class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("source", "url", "active", "secret_hint", "created_at")
    fields = ("source", "url", "active")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ["rotate_secret"]

    @admin.display(description="secret")
    def secret_hint(self, obj: WebhookEndpoint) -> str:
        return f"pws_…{obj.secret[-4:]}" if obj.secret else "-"

    def get_readonly_fields(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> Any:
        return ("source", "secret_hint") if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> Any:
        return ("source", "url", "active") if obj is None else ("source", "url", "active", "secret_hint")

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: ModelForm, change: bool) -> None:
        if not change:
            obj.secret = secret_create()
        super().save_model(request, obj, form, change)
        if not change:
            messages.warning(request, f"The signing secret for {obj.source} is {obj.secret} — give it to the "
                                      "receiver now: it is shown only this once (rotate it to get a new one).")

    def has_delete_permission(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> bool:
        return False  # set inactive instead: its events stay in the outbox

    @admin.action(description="Rotate the signing secret (shown once)", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            endpoint.secret = secret_create()
            endpoint.save(update_fields=["secret"])
            messages.warning(request, f"New signing secret for {endpoint.source}: {endpoint.secret} — shown once.")


class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "type", "charge_id", "endpoint", "status", "attempts", "next_attempt_at",
                    "last_status_code", "last_error")
    list_filter = ("status", "type", "endpoint")
    search_fields = ("=event_id", "=charge__id")
    list_select_related = ("endpoint",)
    readonly_fields = ("event_id", "endpoint", "charge", "type", "payload", "occurred_at", "status", "attempts",
                       "next_attempt_at", "claimed_at", "delivered_at", "last_status_code", "last_error")
    fields = readonly_fields
    actions = ["retry_now"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: WebhookEvent | None = None) -> bool:
        return False

    @admin.action(description="Retry now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        now = timezone.now()
        events = list(queryset.exclude(status=WebhookEventStatus.DELIVERED))
        for event in events:
            event_retry_now(event=event, now=now)
        delivered = events_deliver(now=now, only=[e.pk for e in events]) if events else 0
        self.message_user(request, f"Tried {len(events)} events again: {delivered} delivered now; the rest stay "
                                   "in the outbox with their error (earlier events for the same charge go first).",
                          messages.SUCCESS if delivered == len(events) else messages.WARNING)


admin.site.register(CsvImport, CsvImportAdmin)
admin.site.register(RemittanceUpload, RemittanceUploadAdmin)
admin.site.register(WebhookEndpoint, WebhookEndpointAdmin)
admin.site.register(WebhookEvent, WebhookEventAdmin)
