"""Request-level security: the client's address, staff sessions (timeout and second factor), the
Content-Security-Policy with Stripe's origins, and the client links' rate limit. SECURITY.md has the why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from auditlog.middleware import AuditlogMiddleware as BaseAuditlogMiddleware
from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.audit.access import auditlog_context_restored
from billing.models import Practice
from portal.security_otp import has_confirmed_device

LAST_SEEN_KEY = "portal_last_seen"


def client_ip(request: HttpRequest) -> str | None:
    """The address the request came from.

    Without a proxy (TRUSTED_PROXY_COUNT = 0) that is the socket's address; a client-sent X-Forwarded-For
    is ignored, since anyone can write one. Behind N proxies that each append to the header, it is the
    N-th address from the right, the last one a proxy we trust saw.
    """
    trusted = settings.TRUSTED_PROXY_COUNT
    if trusted > 0:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= trusted:
            return hops[-trusted]
    return request.META.get("REMOTE_ADDR") or None


class AuditlogMiddleware(BaseAuditlogMiddleware):
    """django-auditlog's middleware, with the address taken by ``client_ip`` (not a spoofable header)."""

    @staticmethod
    def _get_remote_addr(request: HttpRequest) -> str | None:
        return client_ip(request)

    @staticmethod
    def _get_remote_port(request: HttpRequest) -> int | None:
        return None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with auditlog_context_restored():
            return super().__call__(request)


# --- Staff sessions ---------------------------------------------------------------------------------------

def _admin_url(name: str) -> str:
    try:
        return reverse(f"admin:{name}")
    except NoReverseMatch:  # pragma: no cover - the admin is always installed
        return ""


def is_verified(user: object) -> bool:
    """Did this staff member pass the second factor in this session (django-otp)?"""
    check = getattr(user, "is_verified", None)
    return bool(check and check())


class StaffSessionMiddleware:
    """Signs a staff member off after STAFF_IDLE_MINUTES without a request, and keeps a staff member who has
    not passed the second factor in this session on the sign-in pages: enrollment when they have no
    confirmed device yet, the code page otherwise. No other admin page answers them.
    """

    # Admin pages reachable with the password alone (the second factor is asked for on them).
    OPEN = ("login", "logout", "otp_verify", "otp_enroll", "jsi18n")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user.is_authenticated:
            now = timezone.now().timestamp()
            last_seen = request.session.get(LAST_SEEN_KEY)
            if last_seen is not None and now - float(last_seen) > settings.STAFF_IDLE_MINUTES * 60:
                logout(request)
                messages.info(request, f"You were signed out after {settings.STAFF_IDLE_MINUTES} minutes without "
                                       "activity. Please sign in again.")
                if request.path.startswith(_admin_url("index")):
                    login = _admin_url("login")
                    return HttpResponseRedirect(f"{login}?{urlencode({'next': request.get_full_path()})}")
            else:
                request.session[LAST_SEEN_KEY] = now
        redirect = self._second_factor_redirect(request)
        return redirect or self.get_response(request)

    def _second_factor_redirect(self, request: HttpRequest) -> HttpResponse | None:
        user = request.user
        admin_root = _admin_url("index")
        if not (user.is_authenticated and user.is_staff and admin_root and request.path.startswith(admin_root)):
            return None
        if is_verified(user):
            return None
        if request.path in {_admin_url(name) for name in self.OPEN}:
            return None

        target = _admin_url("otp_verify" if has_confirmed_device(user) else "otp_enroll")
        next_url = request.get_full_path() if request.method == "GET" else admin_root
        return HttpResponseRedirect(f"{target}?{urlencode({'next': next_url})}")


# --- Content-Security-Policy ------------------------------------------------------------------------------

def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


class StripeAwareCSPMiddleware(CSPMiddleware):
    """django-csp's middleware, adding Stripe's origins as the settings name them at request time:
    Stripe.js (STRIPE_JS_URL) may run and frame, and it and the page may call the Stripe API."""

    def get_policy_parts(self, request: HttpRequest, response: HttpResponseBase,
                         report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if report_only:
            return parts
        js = _origin(settings.STRIPE_JS_URL)
        api = _origin(settings.STRIPE_API_BASE) if settings.STRIPE_API_BASE else "https://api.stripe.com"
        extra: dict[str, list[str]] = {"script-src": [], "frame-src": [], "connect-src": []}
        if js:
            extra["script-src"].append(js)
            extra["frame-src"].append(js)
            extra["connect-src"].append(js)
        if api:
            extra["connect-src"].append(api)
        update = dict(parts.update or {})
        for directive, sources in extra.items():
            current = update.get(directive) or []
            current = [current] if isinstance(current, str) else list(current)
            update[directive] = [*current, *(s for s in sources if s not in current)]
        parts.update = update
        return parts


# --- Client links: rate limit -----------------------------------------------------------------------------

class PortalLinkThrottleMiddleware:
    """Client-link pages (/p/...) answer at most PORTAL_LINK_RATE_PER_MINUTE requests a minute per address,
    and an address that presented PORTAL_BAD_LINKS_PER_10_MINUTES unknown or expired links in ten minutes
    waits: tokens have 256 random bits and are signed, so this only slows a guesser (and a scraper) down.
    The counts live in Django's cache (CACHE_URL: use a shared one with several processes).
    """

    PREFIX = "/p/"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(self.PREFIX):
            return self.get_response(request)
        address = client_ip(request) or "unknown"
        minute = int(time.time() // 60)
        window = int(time.time() // 600)
        bad_key = f"portal-bad-links:{address}:{window}"
        if (cache.get(bad_key) or 0) >= settings.PORTAL_BAD_LINKS_PER_10_MINUTES:
            return self._too_many(request, retry_after=600 - int(time.time() % 600))
        if settings.PORTAL_LINK_RATE_PER_MINUTE and _count(f"portal-rate:{address}:{minute}", 60) \
                > settings.PORTAL_LINK_RATE_PER_MINUTE:
            return self._too_many(request, retry_after=60 - int(time.time() % 60))
        response = self.get_response(request)
        if response.status_code in (404, 410):
            _count(bad_key, 600)
        return response

    def _too_many(self, request: HttpRequest, retry_after: int) -> HttpResponse:
        response = render(request, "portal/too_many.html", {"practice": Practice.load()}, status=429)
        response["Retry-After"] = str(max(retry_after, 1))
        response["Cache-Control"] = "no-store"
        return response


def _count(key: str, timeout: int) -> int:
    """Add one to a counter in the cache, starting it with its expiry; the new value."""
    if cache.add(key, 1, timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout)
        return 1
