"""API keys: created (shown once), checked on every request, revoked. Services, keyword-only."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q

from integrations.ehr.models import ApiKey, validate_source

KEY_PREFIX = "pbp"
# last_used_at is a convenience for staff ("is this key still in use?"): never a write per request.
TOUCH_INTERVAL = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    key: str  # the only time the full key exists outside the caller's hands


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _service_user(source: str) -> User:
    """The account the audit trail names for a source's pushes; it has no password and cannot log in."""
    user, created = User.objects.get_or_create(
        username=f"api-{source}", defaults={"is_active": False, "is_staff": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def api_key_create(*, source: str, now: dt.datetime, name: str = "", created_by: str = "") -> IssuedKey:
    validate_source(source)
    with transaction.atomic():
        user = _service_user(source)
        for _ in range(5):
            prefix = secrets.token_hex(4)
            key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
            try:
                with transaction.atomic():
                    api_key = ApiKey.objects.create(source=source, name=name[:100], prefix=prefix,
                                                    key_hash=_hash(key), user=user, created_at=now,
                                                    created_by=created_by[:150])
            except IntegrityError:  # the 32-bit prefix collided: draw again
                continue
            return IssuedKey(api_key, key)
    raise RuntimeError("Could not draw a unique API key prefix.")


def api_key_revoke(*, api_key: ApiKey, now: dt.datetime) -> ApiKey:
    if api_key.revoked_at is None:
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        api_key.revoked_at = now
    return api_key


def api_key_check(*, key: str) -> ApiKey | None:
    """The active key ``key`` names, or None. Compares hashes in constant time."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1].isalnum() or len(parts[1]) > 16:
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=parts[1]).first()
    if api_key is None or not hmac.compare_digest(api_key.key_hash, _hash(key)) or api_key.revoked_at:
        return None
    return api_key


def api_key_touch(*, api_key: ApiKey, now: dt.datetime) -> None:
    """Record use, at most once per TOUCH_INTERVAL (a conditional UPDATE: concurrent requests write once)."""
    if api_key.last_used_at is not None and now - api_key.last_used_at < TOUCH_INTERVAL:
        return
    ApiKey.objects.filter(pk=api_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOUCH_INTERVAL)).update(last_used_at=now)
    api_key.last_used_at = now
