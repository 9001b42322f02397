"""Settings for the practice billing portal.

Every value an operator sets comes from the environment (django-environ); a variable
named ``X_FILE`` reads the secret ``X`` from that file instead. The defaults run the
demo: SQLite, the local fake Stripe server, emails written to files, no credentials.
Production (``DEBUG`` off) refuses to start without its secrets: see ``portal/checks.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ

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
    "billing.apps.BillingAdminConfig",
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
    "portal.apps.PortalConfig",
    "billing.apps.BillingConfig",
    "integrations.apps.IntegrationsConfig",
    "integrations.ehr.apps.EhrConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.middleware.PracticeTimezoneMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
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

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo runs the web server and the task cluster on one SQLite file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME") or None}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
    # Unexpected input gets a 4xx with a message (integrations/ehr/errors.py), never a 500.
    "EXCEPTION_HANDLER": "integrations.ehr.errors.api_exception_handler",
    # Per API key (integrations.ehr.auth.ApiKeyThrottle); generous by default so a bulk sync is not slowed.
    "DEFAULT_THROTTLE_RATES": {"ehr_api": env.str("EHR_API_RATE", default="6000/min")},
}
# The EHR API refuses bodies above this with 413 (a full events batch of 1,000 is well under 1 MB).
EHR_API_MAX_BODY_BYTES = env.int("EHR_API_MAX_BODY_BYTES", default=5 * 1024 * 1024)
SPECTACULAR_SETTINGS = {
    "TITLE": "Practice billing portal API",
    "DESCRIPTION": "How EHRs push clients, benefits, sessions and insurance payments, and read back what was "
                   "charged. Authenticate with `Authorization: Api-Key <key>`. See API.md for the contract.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["integrations.ehr.schema.only_canonical_paths"],
    "ENUM_NAME_OVERRIDES": {
        "AppointmentStatusEnum": "billing.models.AppointmentStatus",
        "ChargeStatusEnum": "integrations.ehr.serializers.API_CHARGE_STATUSES",
        "EventResultStatusEnum": "integrations.ehr.serializers.EVENT_RESULT_STATUSES",
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "integrations.ehr.schema.closed_request_bodies"],
}

# django-q2 runs billing_tick every minute. It delivers at least once and may cut a task off at
# its timeout, so retry stays above timeout and every task is idempotent.
Q_CLUSTER = {
    "name": "portal",
    "orm": "default",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": 240,
    "retry": 300,
    "max_attempts": 3,
    "catch_up": False,
    "label": "Task queue",
}

# Production hardening; `manage.py check --deploy` stays clean with DEBUG off.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # Their INFO lines carry request URLs, which can hold a client's email (Stripe customer search).
    "loggers": {name: {"level": "WARNING"} for name in ("stripe", "httpx", "httpcore")},
}

AUDITLOG_INCLUDE_ALL_MODELS = False

# The gateway's own limits: stay below Stripe's rate (100/s live, 25/s test mode); 0 means no limit.
STRIPE_MAX_REQUESTS_PER_SECOND = env.float(
    "STRIPE_MAX_REQUESTS_PER_SECOND", default=80.0 if STRIPE_SECRET_KEY.startswith("sk_live_") else 20.0)
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=30.0)
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
