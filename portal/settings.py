"""Settings for the practice billing portal.

Every value an operator sets comes from the environment (django-environ); a variable
named ``X_FILE`` reads the secret ``X`` from that file instead. The defaults run the
demo: this machine's PostgreSQL (``bin/demo`` sets ``DATABASE_URL``), the local fake Stripe server, emails
written to files, no credentials.
Production (``DEBUG`` off) refuses to start without its secrets: see ``portal/checks.py``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / "var"))

env = environ.Env()
environ.Env.smart_cast = False


def _secret(name: str, default: str = "") -> str:
    """Read NAME from the environment, or from the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


DEBUG = env.bool("DEBUG", default=True)
# The insecure default only ever serves the demo: the deploy check refuses it when DEBUG is off.
INSECURE_DEV_SECRET_KEY = "demo-only-insecure-key-never-use-in-production-0123456789"
SECRET_KEY = _secret("SECRET_KEY", INSECURE_DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "django_q",
    "auditlog",
    # Staff sign-in: a second factor (TOTP, recovery codes) and a lockout after repeated failures.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "csp",
    "portal.apps.PortalConfig",
    "billing.apps.BillingConfig",
    "integrations.apps.IntegrationsConfig",
    "integrations.ehr.apps.EhrConfig",
]
# The demo's commands and seed data (devtools/, not part of the installed package): with DEBUG on only.
if DEBUG and importlib.util.find_spec("devtools") is not None:
    INSTALLED_APPS.append("devtools.apps.DevtoolsConfig")

MIDDLEWARE = [
    # /healthz, answered first: no sign-in, no host check, no HTTPS redirect (portal/health.py).
    "portal.health.HealthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The Content-Security-Policy header, with Stripe's origins read from the settings on each request.
    "portal.security.StripeAwareCSPMiddleware",
    # Client links (/p/...): a per-address request budget, answered with 429 past it.
    "portal.security.PortalLinkThrottleMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Staff: signed off after inactivity; no admin page without a confirmed second factor.
    "portal.security.StaffSessionMiddleware",
    # A NUL (%00) in a search or filter, or an admin year filter past the calendar, is a 400.
    "portal.middleware.QueryStringGuardMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.middleware.PracticeTimezoneMiddleware",
    # django-auditlog's, reading the client address the way the rest of the portal does.
    "portal.security.AuditlogMiddleware",
    # Every staff view and API read of a client's record goes into the audit trail as an access entry.
    "portal.middleware.ClientAccessLogMiddleware",
    # django-axes last, as its documentation asks: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL only: the portal relies on its row locks (SKIP LOCKED), advisory locks and SQL. bin/demo and bin/test
# set DATABASE_URL (this machine's server, or an embedded one under var/: devtools/localpg.py).
DATABASE_URL_DEFAULT = "postgres://postgres@127.0.0.1:5432/portal_demo"
DATABASES = {"default": env.db_url("DATABASE_URL", default=DATABASE_URL_DEFAULT)}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(f"DATABASE_URL must name a PostgreSQL database (postgres://...); it names a "
                               f"{DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} one.")
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME") or None}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: it refuses a locked-out username before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# Stored times are UTC; the practice's own zone (set in the admin) is used for display and due dates.
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Email: EMAIL_FILE_PATH writes each message as a file (the demo); EMAIL_URL picks SMTP or console.
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default="")
if EMAIL_FILE_PATH:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
else:
    vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@practice.example")

# Stripe: unset STRIPE_API_BASE means real Stripe; the demo and tests point it at the local fake server.
STRIPE_SECRET_KEY = _secret("STRIPE_SECRET_KEY", "sk_test_demo" if DEBUG else "")
STRIPE_PUBLISHABLE_KEY = _secret("STRIPE_PUBLISHABLE_KEY", "pk_test_demo" if DEBUG else "")
STRIPE_WEBHOOK_SECRET = _secret("STRIPE_WEBHOOK_SECRET", "whsec_demo" if DEBUG else "")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
STRIPE_JS_URL = env.str("STRIPE_JS_URL", default="https://js.stripe.com/v3/")

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Unexpected input gets a 4xx with a message (integrations/ehr/api/errors.py), never a 500.
    "EXCEPTION_HANDLER": "integrations.ehr.api.errors.api_exception_handler",
    # Per API key (integrations.ehr.api.auth.ApiKeyThrottle); generous by default so a bulk sync is not slowed.
    "DEFAULT_THROTTLE_RATES": {"ehr_api": env.str("EHR_API_RATE", default="6000/min")},
}
# The EHR API refuses bodies above this with 413 (a full events batch of 1,000 is well under 1 MB).
EHR_API_MAX_BODY_BYTES = env.int("EHR_API_MAX_BODY_BYTES", default=5 * 1024 * 1024)
SPECTACULAR_SETTINGS = {
    "TITLE": "Practice billing portal API",
    "DESCRIPTION": "How EHRs push clients, benefits, sessions and insurance payments, and read back what was "
                   "charged. Authenticate with `Authorization: Api-Key <key>`. See docs/api.md for the contract.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["integrations.ehr.api.schema.only_canonical_paths"],
    "ENUM_NAME_OVERRIDES": {
        "AppointmentStatusEnum": "billing.models.AppointmentStatus",
        "ChargeStatusEnum": "integrations.ehr.api.serializers.API_CHARGE_STATUSES",
        "EventResultStatusEnum": "integrations.ehr.api.serializers.EVENT_RESULT_STATUSES",
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "integrations.ehr.api.schema.closed_request_bodies"],
}

# django-q2 runs billing_tick every minute. It delivers at least once and may cut a task off at
# its timeout, so retry stays above timeout and every task is idempotent.
Q_CLUSTER: dict[str, Any] = {
    "name": "portal",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": 240,
    "retry": 300,
    "max_attempts": 3,
    "catch_up": False,
    "label": "Task queue",
}
# The queue's broker: PostgreSQL itself (django-q2's ORM broker) unless Q_REDIS_URL names a Redis server
# (e.g. redis://redis:6379/0; pip install '.[redis]'), for many workers on several machines. The schedule,
# the results and every task's own work stay in PostgreSQL either way.
Q_REDIS_URL = env.str("Q_REDIS_URL", default="")
if Q_REDIS_URL:
    Q_CLUSTER["redis"] = Q_REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# /healthz and `manage.py doctor`: the tick runs every minute; past these ages something has stopped.
HEALTH_TICK_MAX_AGE_SECONDS = env.int("HEALTH_TICK_MAX_AGE_SECONDS", default=300)
HEALTH_QUEUE_MAX_LAG_SECONDS = env.int("HEALTH_QUEUE_MAX_LAG_SECONDS", default=300)

# --- Security (SECURITY.md) -------------------------------------------------------------------------------
# Production hardening; `manage.py check --deploy` is clean with DEBUG off (tests/security/test_deploy.py).
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# same-origin: our own forms still pass CSRF's referer check; no other site (Stripe.js included) sees a URL.
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Staff sessions: signed off after STAFF_IDLE_MINUTES without a request (15 by default). The expiry moves
# forward on every request (saved each time) and the middleware checks it too, so the server enforces it.
STAFF_IDLE_MINUTES = env.int("STAFF_IDLE_MINUTES", default=15)
SESSION_COOKIE_AGE = STAFF_IDLE_MINUTES * 60
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

# Second factor (django-otp): the issuer shown in the staff member's authenticator app.
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Practice billing")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
# How many recovery codes a staff member gets when enrolling or asking for new ones.
OTP_RECOVERY_CODES = 10

# Lockout (django-axes): after AXES_FAILURE_LIMIT wrong passwords (or codes) for a username, the next
# sign-in is refused, even with the right password, until the cool-off ends or an administrator unlocks
# the account (admin → Users → "Unlock sign-in"). Counted per username, not per address.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=30))
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "portal.security.client_ip"
AXES_VERBOSE = False
# axes.W006 asks for the address in the lockout key too. Deliberately not: a lockout per username holds
# however many addresses a guesser rotates through, and one office's shared address must not lock everyone.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
# Behind a proxy that appends to X-Forwarded-For, how many proxies to trust (0: use the socket's address).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# Client links: requests per address per minute on /p/ pages, and how many unknown or expired tokens an
# address may present per 10 minutes before it waits (guessing protection on top of 256-bit tokens).
PORTAL_LINK_RATE_PER_MINUTE = env.int("PORTAL_LINK_RATE_PER_MINUTE", default=120)
PORTAL_BAD_LINKS_PER_10_MINUTES = env.int("PORTAL_BAD_LINKS_PER_10_MINUTES", default=20)
# The throttles and API rate limits count in this cache: with several server processes use a shared one
# (e.g. CACHE_URL=redis://...).
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://portal")}

# Content-Security-Policy (django-csp 4). portal.security.StripeAwareCSPMiddleware adds the Stripe.js
# origin (from STRIPE_JS_URL) to script-src, frame-src and connect-src on each response, and the Stripe API
# origin to connect-src. No inline scripts anywhere: the portal's scripts are static files.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # The admin and the email previews use style attributes; scripts, not styles, are the risk.
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "https://*.stripe.com"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        # Stripe's Card Element and its 3-D Secure pages run in frames from these origins.
        "frame-src": ["'self'", "https://js.stripe.com", "https://hooks.stripe.com"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    },
}

if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# No client data in logs: every handler, runserver's request lines included, passes each record through
# portal.logging_filters.RedactClientData (emails, phone and card-like numbers, link tokens, names).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "portal.logging_filters.RedactClientData"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "django.server": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}",
                          "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Their INFO lines carry request URLs, which can hold a client's email (Stripe customer search).
        **{name: {"level": "WARNING"} for name in ("stripe", "httpx", "httpcore")},
        "django": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO"), "propagate": False},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
        # SQL with its parameters (names, emails) is never logged, whatever LOG_LEVEL says.
        "django.db.backends": {"level": "INFO"},
    },
}

AUDITLOG_INCLUDE_ALL_MODELS = False

# The gateway's own limits: stay below Stripe's rate (100/s live, 25/s test mode); 0 means no limit.
STRIPE_MAX_REQUESTS_PER_SECOND = env.float(
    "STRIPE_MAX_REQUESTS_PER_SECOND", default=80.0 if STRIPE_SECRET_KEY.startswith("sk_live_") else 20.0)
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=30.0)
# Due charges sent to Stripe at once by one billing_tick (several ticks may also run side by side).
STRIPE_PARALLEL_CHARGES = env.int("STRIPE_PARALLEL_CHARGES", default=4)
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
