"""Staff sign-in's second factor (django-otp): enrollment, the code page and recovery codes.

Signing in to the staff console takes two steps: the password on Django's admin login page (django-axes
counts failures there), then a code from the staff member's authenticator app (TOTP) or one of their
recovery codes. Until the second step is passed, ``portal.security.StaffSessionMiddleware`` keeps them on
these pages. A staff member without a confirmed device is sent to enrollment: a QR code and the secret to
add to an authenticator app, a code to confirm it, then ten recovery codes shown once.

Recovery codes are django-otp static tokens, stored as an HMAC (keyed with SECRET_KEY) of the code rather
than the code itself, so a copy of the database does not hold usable codes. Each works once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from base64 import b32encode
from typing import Any

import qrcode
import qrcode.image.svg
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import logout
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString, mark_safe
from django_otp import login as otp_login
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
RECOVERY_DEVICE_NAME = "Recovery codes"
APP_DEVICE_NAME = "Authenticator app"


# --- Devices and codes ------------------------------------------------------------------------------------

def has_confirmed_device(user: AbstractBaseUser | AnonymousUser) -> bool:
    return TOTPDevice.objects.filter(user_id=user.pk, confirmed=True).exists()


def _normalise(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def recovery_digest(user: AbstractBaseUser, code: str) -> str:
    """What is stored for a recovery code: an HMAC of the user and the code (16 hex digits fit the column)."""
    message = f"{user.pk}:{_normalise(code)}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:16]


def recovery_codes_issue(user: AbstractBaseUser, codes: list[str] | None = None) -> list[str]:
    """Replace the staff member's recovery codes with new ones; returns them (shown once, never stored)."""
    codes = codes or ["-".join("".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(4)) for _ in range(3))
                      for _ in range(settings.OTP_RECOVERY_CODES)]
    with transaction.atomic():
        StaticDevice.objects.filter(user_id=user.pk).delete()
        device = StaticDevice.objects.create(user_id=user.pk, name=RECOVERY_DEVICE_NAME, confirmed=True)
        StaticToken.objects.bulk_create([StaticToken(device=device, token=recovery_digest(user, c)) for c in codes])
    return codes


def second_factor_check(user: AbstractBaseUser, code: str) -> TOTPDevice | StaticDevice | None:
    """The device that accepts the code: the authenticator app's (6 digits) or a recovery code (used up).

    django-otp throttles each device after failures (growing delays), on top of django-axes' lockout.
    """
    code = code.strip()
    digits = code.replace(" ", "")
    if digits.isdigit() and len(digits) == 6:
        for device in TOTPDevice.objects.filter(user_id=user.pk, confirmed=True):
            if device.verify_token(digits):
                return device
        return None
    for static in StaticDevice.objects.filter(user_id=user.pk, confirmed=True):
        if static.verify_token(recovery_digest(user, code)):
            return static
    return None


def second_factor_reset(user: AbstractBaseUser) -> int:
    """An administrator's reset for a lost device: every device goes; the next sign-in enrolls anew."""
    removed = TOTPDevice.objects.filter(user_id=user.pk).delete()[0]
    removed += StaticDevice.objects.filter(user_id=user.pk).delete()[0]
    return removed


def qr_svg(text: str) -> SafeString:
    """An inline SVG QR code of ``text``, drawn here (no image service, no CDN)."""
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    svg = image.to_string(encoding="unicode")
    # The XML declaration is not allowed inside HTML; the SVG itself is made by qrcode from our own text.
    return mark_safe(svg.split("?>", 1)[-1])


def secret_for_humans(device: TOTPDevice) -> str:
    secret = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


# --- Pages ------------------------------------------------------------------------------------------------

class CodeForm(forms.Form):
    code = forms.CharField(label="Code", max_length=32, strip=True,
                           widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True,
                                                         "inputmode": "text", "size": 20}))


def _next_url(request: HttpRequest) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                     require_https=request.is_secure()):
        return candidate
    return reverse("admin:index")


def _context(site: admin.AdminSite, request: HttpRequest, **extra: Any) -> dict[str, Any]:
    return {**site.each_context(request), "next": _next_url(request), **extra}


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


def _staff_or_login(request: HttpRequest) -> HttpResponse | None:
    if not (request.user.is_authenticated and request.user.is_active and request.user.is_staff):
        return HttpResponseRedirect(f"{reverse('admin:login')}?next={reverse('admin:index')}")
    return None


def verify_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """The second step of signing in: a code from the app, or a recovery code."""
    if (refused := _staff_or_login(request)) is not None:
        return refused
    user = request.user
    assert isinstance(user, AbstractBaseUser)
    if not has_confirmed_device(user):
        return HttpResponseRedirect(reverse("admin:otp_enroll"))
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = second_factor_check(user, form.cleaned_data["code"])
        if device is not None:
            otp_login(request, device)
            if isinstance(device, StaticDevice):
                left = device.token_set.count()
                messages.warning(request, f"You signed in with a recovery code; {left} left. If your phone is "
                                          "lost, ask an administrator to reset your second factor.")
            return HttpResponseRedirect(_next_url(request))
        # A wrong code counts toward the lockout like a wrong password (django-axes listens to this).
        user_login_failed.send(sender=__name__, credentials={"username": user.get_username()}, request=request)
        if getattr(request, "axes_locked_out", False):
            logout(request)
            return HttpResponseRedirect(reverse("admin:login"))
        form.add_error("code", "That code is not right. Check the time on your phone, or use a recovery code.")
    return _no_store(TemplateResponse(request, "admin/otp/verify.html", _context(
        site, request, title="Enter your sign-in code", form=form)))


def enroll_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """First sign-in (or after a reset): add the portal to an authenticator app, confirm, get recovery codes.

    Only for a staff member with no confirmed device: anyone who has one must pass it first, so a stolen
    password cannot enroll a second phone.
    """
    if (refused := _staff_or_login(request)) is not None:
        return refused
    user = request.user
    assert isinstance(user, AbstractBaseUser)
    if has_confirmed_device(user):
        return HttpResponseRedirect(reverse("admin:otp_verify"))
    device = TOTPDevice.objects.filter(user_id=user.pk, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user_id=user.pk, name=APP_DEVICE_NAME, confirmed=False)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        code = form.cleaned_data["code"].replace(" ", "")
        if code.isdigit() and device.verify_token(code):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            TOTPDevice.objects.filter(user_id=user.pk, confirmed=False).delete()
            codes = recovery_codes_issue(user)
            otp_login(request, device)
            return _no_store(TemplateResponse(request, "admin/otp/recovery_codes.html", _context(
                site, request, title="Your recovery codes", codes=codes, enrolled=True)))
        form.add_error("code", "That code did not match. Scan the QR code again and enter the newest code.")
    return _no_store(TemplateResponse(request, "admin/otp/enroll.html", _context(
        site, request, title="Set up your second sign-in step", form=form, qr=qr_svg(device.config_url),
        secret=secret_for_humans(device))))


def recovery_codes_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """A signed-in staff member replaces their recovery codes (the old ones stop working)."""
    user = request.user
    assert isinstance(user, AbstractBaseUser)
    codes: list[str] = []
    if request.method == "POST":
        codes = recovery_codes_issue(user)
    left = StaticDevice.objects.filter(user_id=user.pk).values_list("token_set", flat=True).exclude(
        token_set=None).count()
    return _no_store(TemplateResponse(request, "admin/otp/recovery_codes.html", _context(
        site, request, title="Recovery codes", codes=codes, left=left, enrolled=False)))
