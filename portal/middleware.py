from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils import timezone

from billing.audit.access import clients_of_admin_row, record_access
from billing.models import Client, Practice
from integrations.ehr.models import ApiKey
from portal.security import client_ip

ADMIN_PAGE = re.compile(r"^billing_(?P<model>[a-z0-9]+)_(?P<view>change|history|refund)$")
# The EHR API's read routes (integrations/ehr/api/urls.py) whose answers carry client data.
API_READS = {"clients", "client", "coverage", "balance", "appointments", "appointment", "charges", "charge",
             "insurance-payments", "reconciliation"}


class PracticeTimezoneMiddleware:
    """Show times in the practice's own zone; they are stored in UTC."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        timezone.activate(Practice.current_zone())
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


def _external_ids(data: Any, route: str) -> set[str]:
    """The clients' external ids in an API answer (a page of rows, or one row)."""
    rows: list[Any] = [data]
    if isinstance(data, dict):
        for key in ("results", "findings"):
            if isinstance(data.get(key), list):
                rows = data[key]
    found: set[str] = set()
    for row in rows:
        if not isinstance(row, dict):
            continue
        if route in ("clients", "client") and isinstance(row.get("external_id"), str):
            found.add(row["external_id"])
        if isinstance(row.get("client"), str):
            found.add(row["client"])
        for attendee in row.get("clients") or []:
            if isinstance(attendee, str):
                found.add(attendee)
            elif isinstance(attendee, dict) and isinstance(attendee.get("external_id") or attendee.get("client"), str):
                found.add(attendee.get("external_id") or attendee["client"])
    return found


class ClientAccessLogMiddleware:
    """Writes the ACCESS entries for staff views (admin) and API reads of client data; see the module doc."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method in ("GET", "HEAD") and response.status_code == 200:
            match = getattr(request, "resolver_match", None)
            if match is not None:
                if match.namespace == "admin":
                    self._admin_view(request, match.url_name or "", match.kwargs)
                elif match.namespace == "api:v1" and match.url_name in API_READS:
                    self._api_read(request, response, match.url_name or "")
        return response

    def _remote_addr(self, request: HttpRequest) -> str | None:
        return client_ip(request)

    def _admin_view(self, request: HttpRequest, url_name: str, kwargs: dict[str, Any]) -> None:
        page = ADMIN_PAGE.match(url_name)
        if page is None or "object_id" not in kwargs or not request.user.is_authenticated:
            return
        try:
            model = apps.get_model("billing", page["model"])
        except LookupError:
            return
        client_ids = clients_of_admin_row(model, str(kwargs["object_id"]))
        record_access(client_ids=client_ids, actor=request.user, remote_addr=self._remote_addr(request),
                      additional_data={"via": "admin", "page": f"{model._meta.model_name} {page['view']}",
                                       "object_id": str(kwargs["object_id"])})

    def _api_read(self, request: HttpRequest, response: HttpResponse, route: str) -> None:
        api_key = getattr(request, "auth", None)
        data = getattr(response, "data", None)
        if not isinstance(api_key, ApiKey) or data is None:
            return
        external_ids = _external_ids(data, route)
        client_ids = Client.objects.filter(source=api_key.source, external_id__in=external_ids) \
            .values_list("pk", flat=True) if external_ids else []
        record_access(client_ids=client_ids, actor=api_key.user, remote_addr=self._remote_addr(request),
                      additional_data={"via": "api", "route": route, "source": api_key.source,
                                       "api_key": api_key.prefix})


class QueryStringGuardMiddleware:
    """Query strings no page can use are a 400 before any view runs, never a database or date error.

    - A NUL character (``%00``) anywhere: PostgreSQL refuses NUL in text, so a search or filter holding
      one (``/admin/billing/client/?q=%00``) would fail inside the query. No parameter needs one.
    - On admin lists, a year filter (``?starts_at__year=99999``, or the date drill-down at 9999-12-31) outside
      1900-2199: Django works out the year's bounds in Python, past the calendar's end.

    The EHR API checks each of its parameters itself and answers in its own JSON format, so it is left out.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            return self.get_response(request)
        pairs = [(key, value) for key, values in request.GET.lists() for value in values]
        if any("\x00" in key or "\x00" in value for key, value in pairs):
            return _bad_query("The address holds a NUL character (%00), which no search or filter accepts.")
        if request.path.startswith("/admin/") and any(
                YEAR_LOOKUP.search(key) and not _plausible_year(value) for key, value in pairs):
            return _bad_query("A year in the address must be from 1900 to 2199.")
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view: Callable[..., HttpResponse], args: Any,
                     kwargs: Any) -> HttpResponse | None:
        """An admin action on rows whose ids are not ids (a changed form): Django would fail evaluating
        ``pk__in``; a 400 instead, before the action runs."""
        model_admin = getattr(view, "model_admin", None)
        if model_admin is None or request.method != "POST" or ACTION_CHECKBOX_NAME not in request.POST:
            return None
        pk = model_admin.model._meta.pk
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                if "\x00" in value:
                    raise ValidationError("NUL")
                pk.to_python(value)
            except ValidationError:
                return HttpResponseBadRequest("The rows chosen for the action are not valid; nothing was done. "
                                              "Go back, reload the list and choose again.\n",
                                              content_type="text/plain; charset=utf-8")
        return None


YEAR_LOOKUP = re.compile(r"__(?:iso_)?year$")


def _plausible_year(value: str) -> bool:
    return len(value) == 4 and value.isascii() and value.isdigit() and 1900 <= int(value) <= 2199


def _bad_query(message: str) -> HttpResponse:
    return HttpResponseBadRequest(f"{message} Remove it from the address and try again.\n",
                                  content_type="text/plain; charset=utf-8")
