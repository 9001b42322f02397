"""A client with a good faith estimate: their completed sessions in an events batch are billed one by one,
each charge weighed by the dispute guard after the ones before it, so a batch holds exactly the charge that one
event at a time would hold."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.db import transaction

from billing.models import Charge, Client, Practice
from billing.services.estimates import ESTIMATE_HOLD_PREFIX, LineIn, estimate_create
from integrations.ehr.api import events as ehr_events
from tests.integrations.ehr.api.test_events_billed import NOW, _state, done
from tests.integrations.ehr.conftest import Call, client_body, clinician_body

pytestmark = pytest.mark.django_db

BATCH = [done(f"a-gfe-{day}", ["c-gfe"], day) for day in (2, 9, 16, 23)] + [done("a-other", ["c-other"], 2)]


def test_a_clients_sessions_under_an_estimate_are_weighed_one_at_a_time(practice: Practice, put: Call,
                                                                       post: Call) -> None:
    with time_machine.travel(NOW - dt.timedelta(hours=1), tick=False):
        put("clinicians/clin-1/", clinician_body())
        put("clients/c-gfe/", client_body("Gia", session_rate_cents=15000))
        put("clients/c-other/", client_body("Oz", session_rate_cents=15000))
        # Estimated: two sessions ($300). Billed: four ($600), so the third takes it $150 over (no hold yet)
        # and the fourth $300 over: warned at the default threshold; a fifth would be held.
        estimate_create(client=Client.objects.get(external_id="c-gfe"), period_start=dt.date(2026, 11, 1),
                        period_end=dt.date(2026, 12, 31), lines=[LineIn("90837", 2)], now=NOW, actor="test")
    billed: list[str] = []
    insert = ehr_events.appointments_insert_billed

    def counted(push: Any, items: list[Any], *args: Any) -> None:
        billed.extend(external_id for _, external_id, *_ in items)
        insert(push, items, *args)

    runs = []
    with time_machine.travel(NOW, tick=False), pytest.MonkeyPatch.context() as patch:
        patch.setattr(ehr_events, "appointments_insert_billed", counted)
        for bulk in (True, False):
            with transaction.atomic():
                if not bulk:
                    patch.setattr(ehr_events.BilledCreates, "take", lambda self, *args: False)
                post("events/", {"events": [*BATCH, done("a-gfe-30", ["c-gfe"], 30)]}, expect=200)
                runs.append((_state(), dict(Charge.objects.filter(hold_reason__startswith=ESTIMATE_HOLD_PREFIX)
                                            .values_list("appointment__external_id", "amount_cents"))))
                transaction.set_rollback(True)
    (bulk_state, bulk_held), (one_state, one_held) = runs
    assert billed == ["a-other"]  # only the client without an estimate went in bulk
    assert bulk_held == one_held == {"a-gfe-30": 15000}
    for table in bulk_state:
        assert bulk_state[table] == one_state[table], table

