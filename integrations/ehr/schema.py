"""drf-spectacular hooks: one path per route, and request bodies that say what the API refuses."""

from __future__ import annotations

import re
from typing import Any

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
    """Input serializers refuse unknown fields (integrations.ehr.serializers.Strict): say so in the schema,
    so generated clients and fuzzers know that an extra property is an error, not ignored."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("InRequest") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result
