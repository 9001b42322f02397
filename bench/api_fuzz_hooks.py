"""schemathesis hooks for the portal's API (loaded through schemathesis.toml, by bench/api_fuzz.sh and by
tests/integrations/ehr/api/test_api_fuzz.py)."""

from __future__ import annotations

import re
from typing import Any

import schemathesis

from billing.validators import npi_is_valid

DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # compared as text, as ISO dates sort


@schemathesis.deserializer("text/csv")
def csv_as_text(ctx: Any, response: Any) -> str:
    """?format=csv answers are documented as text (a CSV file, or an error's message): compare them as such."""
    return str(response.content.decode("utf-8"))


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Two rules no JSON schema can state, met on generated bodies so that valid ones are written rather
    than refused: an NPI's last digit is a check digit (nine in ten generated NPIs would fail it), and
    coverage cannot end before it starts. Each change keeps a case exactly as valid or invalid by the schema
    as it was (only a 10-digit NPI, only two dates, are touched). The refusals themselves are tested in
    tests/integrations/ehr/api/test_errors.py."""
    operation = context.operation
    body = case.body
    if operation is None or not isinstance(body, dict):
        return
    if operation.path.startswith("/api/v1/clinicians/"):
        npi = body.get("npi")
        if isinstance(npi, str) and re.fullmatch(r"[0-9]{10}", npi) and not npi_is_valid(npi):
            case.body = {**body, "npi": next(npi[:9] + d for d in "0123456789" if npi_is_valid(npi[:9] + d))}
    elif operation.path == "/api/v1/clients/{external_id}/coverage/":
        start, end = body.get("effective_from"), body.get("effective_to")
        # Both fields have the same schema, so swapping them keeps the case as valid or invalid as it was.
        if isinstance(start, str) and isinstance(end, str) and DAY.fullmatch(start) and DAY.fullmatch(end) \
                and end < start:
            case.body = {**body, "effective_from": end, "effective_to": start}
