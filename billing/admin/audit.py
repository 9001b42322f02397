"""The audit trail's search page: who saw or changed what, searched by client, staff member and date,
and exported as CSV. View only: nobody edits or deletes audit rows from the application.

The rows are django-auditlog's ``LogEntry``: creates, changes and deletes of client data (billing/audit/trail.py
registers the models) and ACCESS entries for every staff view and API read of a client's record
(billing/audit/access.py). Searching by client finds the entries on the client and on the rows that belong
to them (coverage, charges, sessions they attended, acknowledgments...). Needs ``auditlog.view_logentry``
(the auditor and administrator roles).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from typing import Any

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import DateTimeField, Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from billing.admin.people import clients_matching
from billing.csv_safe import csv_safe_writer
from billing.local_time import iso_local
from billing.models import Appointment, Client, Participant, Practice

PERMISSION = "auditlog.view_logentry"
PAGE_SIZE = 100
MAX_CLIENTS = 50
EARLIEST, LATEST = dt.date(1900, 1, 1), dt.date(2199, 12, 31)
ACTIONS = [("", "Any"), *((str(value), label) for value, label in LogEntry.Action.choices)]


class AuditSearchForm(forms.Form):
    client = forms.CharField(required=False, label="Client",
                             help_text="Name or email (every word must match), or #id.")
    staff = forms.CharField(required=False, label="Staff member or account",
                            help_text="Username, e.g. frontdesk; 'system' for commands and tasks.")
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))
    action = forms.ChoiceField(required=False, choices=ACTIONS)

    def clean(self) -> dict[str, Any]:
        # Checked here, before any query: a date near the calendar's ends overflows the date maths (a day
        # added, a time zone applied), and the CSV export must not fail once its download has started.
        data = super().clean() or {}
        for name in ("start", "end"):
            day = data.get(name)
            if day is not None and not EARLIEST <= day <= LATEST:
                self.add_error(name, f"Choose a date from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}.")
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            self.add_error("end", "The end date is before the start date.")
        return data


def _client_ids(term: str) -> list[int]:
    term = term.strip()
    if term.startswith("#") and term[1:].isdigit():
        return [int(term[1:])]
    return list(clients_matching(term).order_by("pk").values_list("pk", flat=True)[:MAX_CLIENTS])


def _about_clients(client_ids: list[int]) -> Q:
    """Entries on the clients, on the rows that belong to them, and the access entries that name them."""
    condition = Q(content_type=ContentType.objects.get_for_model(Client), object_id__in=client_ids)
    condition |= Q(additional_data__client_id__in=client_ids)
    for model in auditlog.get_models():
        if model is Client or model._meta.app_label != "billing":
            continue
        if model is Appointment:
            ids: Any = Participant.objects.filter(client_id__in=client_ids).values("appointment_id")
        elif any(f.name == "client" for f in model._meta.get_fields()):
            ids = model._default_manager.filter(client_id__in=client_ids).values("pk")
        else:
            continue
        condition |= Q(content_type=ContentType.objects.get_for_model(model), object_id__in=ids)
    return condition


def audit_entries(data: dict[str, Any]) -> QuerySet[LogEntry]:
    """The entries matching a search (cleaned AuditSearchForm data), newest first."""
    entries = LogEntry.objects.select_related("actor", "content_type").order_by("-timestamp", "-pk")
    if data.get("client"):
        entries = entries.filter(_about_clients(_client_ids(data["client"])))
    if data.get("staff"):
        users = get_user_model().objects.filter(username__iexact=data["staff"].strip())
        entries = entries.filter(actor__in=users)
    zone = Practice.current_zone()
    if data.get("start"):
        entries = entries.filter(timestamp__gte=dt.datetime.combine(data["start"], dt.time(), zone))
    if data.get("end"):
        entries = entries.filter(timestamp__lt=dt.datetime.combine(data["end"] + dt.timedelta(days=1), dt.time(),
                                                                   zone))
    if data.get("action"):
        entries = entries.filter(action=int(data["action"]))
    return entries


def describe(entry: LogEntry, zone: zoneinfo.ZoneInfo) -> dict[str, str]:
    """One entry as the page and the CSV show it, its times in the practice's ``zone`` with their offset."""
    extra = entry.additional_data if isinstance(entry.additional_data, dict) else {}
    via = str(extra.get("via", ""))
    if extra.get("page"):
        via += f": {extra['page']}"
    if extra.get("route"):
        via += f": {extra['route']} ({extra.get('source', '')})"
    if entry.action == LogEntry.Action.ACCESS:
        changes = "viewed"
    elif isinstance(entry.changes, dict):
        moments = _moment_fields(entry)
        changes = "; ".join(f"{field}: {_pair(value, zone if field in moments else None)}"
                            for field, value in sorted(entry.changes.items()))
    else:
        changes = entry.changes_text or ""
    return {
        "when": iso_local(entry.timestamp, zone),
        "who": entry.actor.get_username() if entry.actor else (entry.actor_email or "(unknown)"),
        "action": entry.get_action_display(),
        "what": entry.content_type.model if entry.content_type else "",
        "record": f"#{entry.object_pk} {entry.object_repr}",
        "changes": changes,
        "via": via,
        "from": entry.remote_addr or "",
        "entry": str(entry.pk),
    }


def _moment_fields(entry: LogEntry) -> set[str]:
    """The names of the entry's model's date-time fields (their changes are recorded as naive UTC)."""
    model = entry.content_type.model_class() if entry.content_type else None
    if model is None:
        return set()
    return {field.name for field in model._meta.concrete_fields if isinstance(field, DateTimeField)}


def _moment(value: Any, zone: zoneinfo.ZoneInfo | None) -> str:
    """A recorded date-time (naive UTC text) in the practice's zone with its offset; anything else as it is."""
    if zone is not None and isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return iso_local(moment, zone)
    return str(value)


def _pair(value: Any, zone: zoneinfo.ZoneInfo | None = None) -> str:
    if isinstance(value, list) and len(value) == 2:
        return f"{_moment(value[0], zone)} → {_moment(value[1], zone)}"
    return _moment(value, zone)


def _form(request: HttpRequest) -> AuditSearchForm:
    form = AuditSearchForm(request.GET or None)
    form.is_valid()
    return form


def _allowed(request: HttpRequest) -> None:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied


def audit_trail_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    _allowed(request)
    form = _form(request)
    data = form.cleaned_data if form.is_bound and not form.errors else {}
    page = Paginator(audit_entries(data), PAGE_SIZE).get_page(request.GET.get("page"))
    zone = Practice.current_zone()
    query = request.GET.copy()
    query.pop("page", None)
    return TemplateResponse(request, "admin/billing/audit_trail.html", {
        **site.each_context(request), "title": "Audit trail", "form": form, "page": page,
        "rows": [describe(entry, zone) for entry in page.object_list], "query": query.urlencode(),
        "csv_url": f"{reverse('admin:audit_trail_csv')}?{query.urlencode()}",
        "entry_url": reverse("admin:auditlog_logentry_changelist"),
    })


COLUMNS = ("when", "who", "action", "what", "record", "changes", "via", "from", "entry")


class _Echo:
    def write(self, value: str) -> str:
        return value


def audit_trail_csv(site: admin.AdminSite, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    _allowed(request)
    form = _form(request)
    if form.is_bound and form.errors:
        # Before the download starts: an export of everything instead of what was asked would mislead.
        problems = "; ".join(f"{name}: {' '.join(str(e) for e in errors)}" for name, errors in form.errors.items())
        return HttpResponse(f"The search is not valid, nothing was exported. {problems}\n", status=400,
                            content_type="text/plain; charset=utf-8")
    entries = audit_entries(form.cleaned_data if form.is_bound else {})  # every filter worked out up front
    writer = csv_safe_writer(_Echo())
    zone = Practice.current_zone()

    def rows() -> Iterator[str]:
        yield writer.writerow(COLUMNS)
        for entry in entries.iterator(chunk_size=2000):
            described = describe(entry, zone)
            yield writer.writerow([described[column] for column in COLUMNS])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime(timezone.now(), zone).strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response
