from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils import timezone


class PracticeTimezoneMiddleware:
    """Show times in the practice's own zone; they are stored in UTC."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from billing.models import Practice

        timezone.activate(Practice.current_zone())
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


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
