"""schemathesis against the portal's own OpenAPI schema, in process over PostgreSQL, with a valid API key.

Every operation gets schemathesis' boundary cases for valid input (its coverage phase) and generated
requests, valid and invalid (its fuzzing phase). Each answer must be: no 5xx, a status the schema
documents for the operation, a body matching that status's schema, schema-valid input accepted
(schemathesis.toml names the few operations where a documented 400 answers a rule no schema can state)
and invalid input refused. Derandomized, so every run sends the same requests. bench/api_fuzz.sh is the
deeper, random run against a live server: more examples, invalid boundary cases, undeclared methods and
stateful sequences.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig

from billing.models import Practice
from integrations.ehr import keys
from portal.wsgi import application
from tests.integrations.ehr.conftest import SOURCE, Call, appointment_body, client_body, clinician_body

# On one pytest-xdist worker, all of them: test_the_run_made_enough_requests counts this process's requests.
pytestmark = [pytest.mark.django_db, pytest.mark.xdist_group("api_fuzz")]

ROOT = Path(__file__).resolve().parents[4]
# Generated requests per operation, on top of the boundary cases: with the 24 operations the run makes
# over 1,000 requests (MINIMUM_REQUESTS) in about a minute on a 2-core machine.
EXAMPLES = 22
MINIMUM_REQUESTS = 1000

# The key is known before any test runs: schemathesis builds its boundary cases, credentials included, when
# the tests are collected. Each test issues it again inside its own transaction (the portal fixture).
KEY_PREFIX, KEY_SECRET = "f0220000", "fuzz-only-key-for-the-schema-test-000000000"
FUZZ_KEY = f"{keys.KEY_PREFIX}_{KEY_PREFIX}_{KEY_SECRET}"


def fuzz_config() -> SchemathesisConfig:
    """schemathesis.toml, with its hooks file found from the repository rather than the working directory,
    and the key for the schema's ApiKey scheme (schemathesis leaves it off where it checks for 401)."""
    data = tomllib.loads((ROOT / "schemathesis.toml").read_text())
    data["hooks"] = str(ROOT / data["hooks"])
    # Boundary cases for valid input only, and no undeclared methods: the invalid ones and the methods
    # double the requests, so they are left to bench/api_fuzz.sh (invalid input is still generated below).
    data.setdefault("phases", {})["coverage"] = {"generation": {"mode": "positive"}, "unexpected-methods": []}
    data["auth"] = {"openapi": {"ApiKey": {"api_key": f"Api-Key {FUZZ_KEY}"}}}
    return SchemathesisConfig.from_dict(data)


def served_schema() -> dict[str, Any]:
    """What /api/schema/ serves, made the way its view makes it: built here because collection has no
    database, which the application's middleware reads on every request."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    return dict(json.loads(OpenApiJsonRenderer().render(generated, renderer_context={})))


schema = schemathesis.openapi.from_dict(served_schema(), config=fuzz_config())
# Every request goes straight to the WSGI application, inside the test's transaction.
schema.app = application


@pytest.fixture
def portal(practice: Practice, put: Call, post: Call, monkeypatch: pytest.MonkeyPatch,
           settings: Any) -> Iterator[None]:
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]  # the host schemathesis' WSGI client sends
    with monkeypatch.context() as patch:
        patch.setattr(secrets, "token_hex", lambda nbytes=None: KEY_PREFIX)
        patch.setattr(secrets, "token_urlsafe", lambda nbytes=None: KEY_SECRET)
        assert keys.api_key_create(source=SOURCE, now=timezone.now(), name="fuzz").key == FUZZ_KEY
    # Records under the id generation tries first ("0"), so that reads, partial updates and payments reach
    # a record and its answer is checked against the schema, not only the 404.
    put("clinicians/0/", clinician_body())
    put("clients/0/", client_body("Ana", session_rate_cents=15000))
    put("clients/0/coverage/", {"payer_id": "60054", "member_id": "M-1", "copay_cents": 2500})
    put("appointments/0/", appointment_body(["0"], clinician="0", status="completed",
                                            note_signed_at="2026-11-23T11:00:00-05:00"))
    post("insurance-payments/", {"appointment": "0", "client": "0", "allowed_cents": 12000, "paid_cents": 9500,
                                 "patient_responsibility_cents": 2500, "paid_on": "2026-12-01", "reference": "0"})
    # Django closes the database connection around each request it finds inside a transaction, as this
    # test's requests are; its own test client stops that the same way.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


# Requests sent, by operation, in this process.
requests_made: Counter[str] = Counter()


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate],
          # The portal fixture's records are meant to last across examples; generation is slow on a busy machine.
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_api_answers_as_its_schema_says(case: Any, portal: None) -> None:
    requests_made[case.operation.label] += 1
    case.call_and_validate()


def test_the_run_made_enough_requests() -> None:
    if len(requests_made) < len(list(schema.get_all_operations())):
        pytest.skip("Only some operations ran in this process (a selection, or tests spread over workers).")
    print(f"{requests_made.total()} requests over {len(requests_made)} operations")  # shown with -rP
    assert requests_made.total() >= MINIMUM_REQUESTS, requests_made
