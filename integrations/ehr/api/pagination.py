from __future__ import annotations

import re
from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

# A cursor is DRF's (offset, reverse, position) written plainly, e.g. "p1234" or "o2rp1234", rather than
# DRF's base64: a pattern then states exactly which cursors are taken, so the schema says it and a fuzzer
# sends cursors that read. The position is a record id (below 10^18, well inside the id column's range).
_CURSOR = re.compile(r"(?:o(?P<offset>[1-9][0-9]{0,8}))?(?P<reverse>r?)(?:p(?P<position>[0-9]{1,18}))?")
CURSOR_PATTERN = "^" + re.sub(r"\(\?P<\w+>", "(?:", _CURSOR.pattern) + "$"


class IdCursorPagination(CursorPagination):
    """Pages in id order: stable while records are added, and cheap at any depth (no OFFSET)."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500
    template = None

    def decode_cursor(self, request: Request) -> Cursor | None:
        # DRF answers a bad cursor with 404: 400 instead, with the parameter named.
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        match = _CURSOR.fullmatch(encoded)
        if match is None:
            raise exceptions.ValidationError({"cursor": ["Invalid cursor: use the next or previous link as given."]})
        offset, position = match["offset"], match["position"]
        # Text, as DRF keeps the positions it reads from records and compares them with this one.
        return Cursor(offset=min(int(offset or 0), self.offset_cutoff), reverse=bool(match["reverse"]),
                      position=None if position is None else str(int(position)))  # type: ignore[arg-type]

    def encode_cursor(self, cursor: Cursor) -> str:
        encoded = "".join((f"o{cursor.offset}" if cursor.offset else "", "r" if cursor.reverse else "",
                           "" if cursor.position is None else f"p{cursor.position}"))
        assert self.base_url is not None  # set by paginate_queryset
        return str(replace_query_param(self.base_url, self.cursor_query_param, encoded))

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= self.max_page_size):
            raise exceptions.ValidationError({"page_size": [f"Give a whole number from 1 to {self.max_page_size}."]})
        return int(raw) if raw else self.page_size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        params = super().get_schema_operation_parameters(view)
        for param in params:
            if param["name"] == "page_size":
                param["schema"].update(minimum=1, maximum=self.max_page_size)
            if param["name"] == self.cursor_query_param:
                param["schema"].update(pattern=CURSOR_PATTERN)
        return params
