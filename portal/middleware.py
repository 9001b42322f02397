from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from billing.audit.access import clients_of_admin_row, record_access
from billing.models import Client, Practice
from integrations.ehr.models import ApiKey
from portal.security import client_ip

ADMIN_PAGE = re.compile(r"^billing_(?P<model>[a-z0-9]+)_(?P<view>change|history|refund)$")
# The EHR API's read routes (integrations/ehr/urls.py) whose answers carry client data.
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
