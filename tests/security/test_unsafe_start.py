"""Production refuses to start unsafe: with DEBUG off, missing or demo secrets stop the process at start
(the web server, the task cluster, any command), not only under ``check --deploy``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SAFE = {"DEBUG": "false", "SECRET_KEY": "a-real-secret-key-for-this-practice-9f8e7d6c5b4a39281706",
        "STRIPE_SECRET_KEY": "sk_live_practice", "STRIPE_PUBLISHABLE_KEY": "pk_live_practice",
        "STRIPE_WEBHOOK_SECRET": "whsec_practice", "PORTAL_BASE_URL": "https://billing.practice.example",
        "ALLOWED_HOSTS": "billing.practice.example"}


def _start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "SECRET_KEY", "DEBUG"))}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("change", "named"), [
    ({"SECRET_KEY": ""}, "SECRET_KEY is the demo key"),
    ({"STRIPE_SECRET_KEY": ""}, "STRIPE_SECRET_KEY is not set"),
    ({"STRIPE_WEBHOOK_SECRET": "whsec_demo"}, "STRIPE_WEBHOOK_SECRET hold the demo's placeholder values"),
    ({"PORTAL_BASE_URL": "http://billing.practice.example"}, "must be an https:// address"),
])
def test_production_with_a_missing_or_demo_secret_stops_at_start(change: dict[str, str], named: str) -> None:
    env = {k: v for k, v in {**SAFE, **change}.items() if v}
    started = _start(env, "billing_tick", "--at", "2026-11-27T09:00:00-05:00")
    assert started.returncode != 0
    assert "The portal will not start in production" in started.stderr
    assert named in started.stderr


def test_check_deploy_still_lists_what_is_wrong() -> None:
    listed = _start({"DEBUG": "false"}, "check", "--deploy")
    assert "portal.E001" in listed.stderr and "portal.E002" in listed.stderr


def test_a_fully_configured_production_starts() -> None:
    started = _start(SAFE, "shell", "-c", "print('started')")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().endswith("started")
