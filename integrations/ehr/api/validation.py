"""Validation of a batch's events, each distinct field value checked once.

A schedule push repeats most values from one event to the next (the same service code, status, duration,
a handful of clinicians), and running a DRF serializer over 1,000 bodies was a tenth of a batch's time.
``BatchValidator.run(data)`` gives what ``serializer.run_validation(data)`` gives: it runs each field's
own validation (and the serializer's ``validate_<field>``), remembering the result per distinct value for
the rest of the batch. Any body it does not accept in full (a field error, an unknown field) goes through
the serializer itself, so the messages are always DRF's own. The memory lasts one batch: a date-time's
validated value depends on the time zone active for the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.fields import Field, SkipField, empty

_SKIP, _MISS = object(), object()
_SCALARS = (str, int, float, bool, type(None))


def _key(value: Any) -> Any:
    """A dictionary key that tells apart values the fields treat differently (1, 1.0, True and "1"),
    or None when the value is not one to remember (objects, nested lists)."""
    if value is empty:
        return empty
    if type(value) in _SCALARS:
        return type(value), value
    if type(value) is list and all(type(item) in _SCALARS for item in value):
        return list, tuple((type(item), item) for item in value)
    return None


def _remember_items(child: Field) -> None:
    """Have a list field's item validation remember each distinct item for the batch: a schedule's
    client lists differ from event to event, yet name the same few hundred clients. The list's own
    checks (its length, repeated items) still run on every list. ``child`` belongs to this batch's
    serializer, so the memory ends with the batch."""
    validate = child.run_validation
    memo: dict[Any, Any] = {}

    def run_validation(data: Any = empty) -> Any:
        key = _key(data)
        if key is None or type(data) is list:
            return validate(data)
        if key not in memo:
            memo[key] = validate(data)  # an invalid item raises, and is not remembered
        return memo[key]

    child.run_validation = run_validation  # type: ignore[method-assign]


class BatchValidator:
    def __init__(self, serializer: serializers.Serializer) -> None:
        self.serializer = serializer
        self.known = set(serializer.fields) | set(getattr(serializer, "tolerated", ()))
        self.fields: list[tuple[str, Field, Callable[[Any], Any] | None]] = [
            (str(field.field_name), field, getattr(serializer, f"validate_{field.field_name}", None))
            for field in serializer._writable_fields]
        # Only plain fields (stored under their own name) and no serializer-wide validators: anything
        # else is left to the serializer.
        self.lean = (all(field.source_attrs == [name] for name, field, _ in self.fields)
                     and not serializer.validators)
        self.memo: dict[tuple[str, Any], Any] = {}
        for _, field, _ in self.fields:
            if isinstance(field, serializers.ListField):
                _remember_items(field.child)
            if isinstance(field, serializers.DateTimeField) and not hasattr(field, "timezone"):
                zone = field.default_timezone()
                if zone is not None:
                    field.timezone = zone  # the zone it would look up for each value (the request's), once


    def run(self, data: dict[str, Any]) -> Any:
        value = self._lean(data) if self.lean else None
        return self.serializer.run_validation(data) if value is None else value

    def _lean(self, data: dict[str, Any]) -> dict[str, Any] | None:
        if any(name not in self.known for name in data):
            return None
        out: dict[str, Any] = {}
        for name, field, validate in self.fields:
            primitive = data.get(name, empty)
            key = _key(primitive)
            value = self.memo.get((name, key), _MISS) if key is not None else _MISS
            if value is _MISS:
                try:
                    value = field.run_validation(primitive)
                    if validate is not None:
                        value = validate(value)
                except SkipField:
                    value = _SKIP
                except (serializers.ValidationError, DjangoValidationError):
                    return None
                if key is not None:
                    self.memo[(name, key)] = value
            if value is _SKIP:
                continue
            out[name] = list(value) if type(value) is list else value  # each event its own list
        try:
            validated = self.serializer.validate(out)
        except (serializers.ValidationError, DjangoValidationError):
            return None
        return validated
