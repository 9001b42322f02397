from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.parsers import JSONParser

from integrations.ehr.errors import PayloadTooLarge


class LimitedJSONParser(JSONParser):
    """JSON with a size limit (413). DRF reads the stream itself, bypassing DATA_UPLOAD_MAX_MEMORY_SIZE."""

    def parse(self, stream: IO[Any], media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = settings.EHR_API_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        if request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit // (1024 * 1024)} MB; "
                                      "send events in batches of at most 1,000.")
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit // (1024 * 1024)} MB.")
        return super().parse(io.BytesIO(body), media_type, parser_context)
