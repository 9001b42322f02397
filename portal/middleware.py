from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
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
