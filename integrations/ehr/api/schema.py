"""drf-spectacular hooks: one path per route, and request bodies that say what the API refuses."""

from __future__ import annotations

import re
from typing import Any

from integrations.ehr.api.serializers import EVENT_TYPES

Endpoint = tuple[str, str, str, Any]


def only_canonical_paths(endpoints: list[Endpoint], **kwargs: Any) -> list[Endpoint]:
    """The v1 routes accept an optional trailing slash (``/?$``); the schema shows the slashed form only."""
    out = []
    for path, path_regex, method, callback in endpoints:
        if path.startswith("/api/v1/"):
            path = re.sub(r"/\?$", "/", path)
            if not path.endswith("/"):
                path += "/"
        out.append((path, path_regex, method, callback))
    return out


def closed_request_bodies(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Input serializers refuse unknown fields (integrations.ehr.api.serializers.Strict): say so in the schema,
    so generated clients and fuzzers know that an extra property is an error, not ignored."""
    schemas = result.get("components", {}).get("schemas", {})
    for name, component in schemas.items():
        if name.endswith("InRequest") and component.get("type") == "object":
            component["additionalProperties"] = False
    if "EventInRequest" in schemas:
        _open_event_items(schemas)
    info = result.setdefault("info", {})
    info["description"] = (info.get("description", "") + WEBHOOKS_DESCRIPTION).strip()
    return result


WEBHOOKS_DESCRIPTION = """

## Write-back webhooks

Staff give each source an endpoint URL (admin: *Write-back webhooks*) and hand its signing secret to the
receiver. When a charge for one of the source's clients succeeds, fails, is refunded or (a fee) is waived,
the portal POSTs a JSON event: `{"id", "type", "occurred_at", "data": {"charge", "kind", "client",
"appointment", "amount_cents", "refunded_cents", "status", "payment_reference"}}` with `type` one of
`charge.succeeded`, `charge.failed`, `charge.refunded`, `charge.fee_waived`. Nothing clinical is sent.

Any 2xx answer delivers it; otherwise it is retried with exponential backoff (30 s doubling, at most 6 h
apart). Delivery is at least once (dedupe on `id`, also in the `Portal-Event-Id` header) and in order per
charge.

Signature: `Portal-Signature: t=<unix seconds>,v1=<hex>`, where `v1` is HMAC-SHA256 with the secret over
the string `<t>.<raw request body>`. Recompute it, compare in constant time, and refuse a `t` more than
five minutes from your clock.
"""


def _open_event_items(schemas: dict[str, Any]) -> None:
    """The events batch checks each event on its own and answers 200 with one result per event, an invalid
    one included ("a bad event never stops the others"). So an item may be anything: its fields are
    described, not constrained. The batch itself is an object ``{"events": [...]}`` or a bare array."""
    event = schemas["EventInRequest"]
    schemas["EventInRequest"] = {
        "description": "One event: `type` (" + ", ".join(f"`{t}`" for t in _event_types(event)) + "), `external_id` "
                       "and `data` (the body of the matching single-resource call). Checked on its own: a bad "
                       "event gets an error result and the others go on.",
        "properties": {name: {"description": prop.get("description", "")}
                       for name, prop in event.get("properties", {}).items()},
    }
    batch = schemas.get("EventBatchInRequest", {})
    items = batch.get("properties", {}).get("events", {})
    limit = items.get("maxItems", 1000)
    array = {"type": "array", "maxItems": limit, "items": {"$ref": "#/components/schemas/EventInRequest"}}
    schemas["EventBatchInRequest"] = {"oneOf": [
        {"type": "object", "properties": {"events": array}, "required": ["events"], "additionalProperties": False},
        array]}


def _event_types(event: dict[str, Any]) -> list[str]:
    return list(EVENT_TYPES)
