from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request


class IdCursorPagination(CursorPagination):
    """Pages in id order: stable while records are added, and cheap at any depth (no OFFSET)."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500
    template = None

    def decode_cursor(self, request: Request) -> Cursor | None:
        # DRF answers a bad cursor with 404 and would pass a garbled position to the query: 400 instead.
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            cursor = None
            bad = True
        else:
            position = None if cursor is None or cursor.position is None else str(cursor.position)
            bad = position is not None and not (position.isascii() and position.isdigit()
                                                and int(position) < 2**63)
        if bad:
            raise exceptions.ValidationError({"cursor": ["Invalid cursor: use the next or previous link as given."]})
        return cursor

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
        return params
