"""Serializer fields that turn away what the database or the billing code could not take (never a 500)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.core.validators import RegexValidator
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

# $1,000,000: far above any session fee, far below the database's integer limit.
MAX_CENTS = 100_000_000
# Dates outside this window are typing mistakes, and the far ends overflow time-zone arithmetic.
EARLIEST = dt.date(1900, 1, 1)
LATEST = dt.date(2199, 12, 31)
RANGE_MESSAGE = f"Give a date between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}."

EXTERNAL_ID_PATTERN = r"^[^\x00-\x1f\x7f/]{1,100}$"
external_id_validator = RegexValidator(EXTERNAL_ID_PATTERN, "An external id is 1 to 100 characters, "
                                                            "without control characters or '/'.")


def valid_unicode(value: str) -> None:
    # JSON may carry lone surrogates ("\ud800"), which PostgreSQL cannot store as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError("Text must be valid Unicode.") from None


not_blank = RegexValidator(r"\S", "This field may not be blank.")


class Text(serializers.CharField):
    """Text kept as sent. Not trimmed: trimming would let "  " pass a required field and 41 spaces pass a
    40-character limit, which the OpenAPI schema (what integrators and fuzzers go by) says are errors."""

    default_error_messages = {"not_text": "Give text (a JSON string)."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_blank", not kwargs.get("required", True))
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators.append(valid_unicode)
        if not self.allow_blank and not any(isinstance(v, RegexValidator) for v in self.validators):
            self.validators.append(not_blank)

    def to_internal_value(self, data: Any) -> str:
        # DRF would turn 0 into "0": the schema says string, so a number is refused (as the fuzzer expects).
        if not isinstance(data, str):
            self.fail("not_text")
        return str(super().to_internal_value(data))


class StrictBoolean(serializers.BooleanField):
    """true or false only: DRF also takes 0, 1, "yes" and "on", which the schema (boolean) does not allow."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictDecimal(serializers.DecimalField):
    """A JSON number: DRF also takes the number as a string, which the schema (number) does not allow."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int | float | Decimal):
            self.fail("invalid")
        return super().to_internal_value(data)


class ExternalId(Text):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 100)
        kwargs.setdefault("allow_blank", False)
        kwargs["validators"] = [*kwargs.get("validators", []), external_id_validator]
        super().__init__(**kwargs)


class Cents(serializers.IntegerField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_CENTS)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        # Money is whole cents: 12.5 is refused rather than silently truncated; "1200" (a string) too.
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        if isinstance(data, bool | str):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class AwareDateTime(serializers.DateTimeField):
    default_error_messages = {
        "naive": "Give the time with its UTC offset, e.g. 2026-11-27T10:00:00-05:00.",
        "range": RANGE_MESSAGE,
    }

    def to_internal_value(self, value: Any) -> dt.datetime:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
        result = super().to_internal_value(value)
        if not EARLIEST <= result.date() <= LATEST:
            self.fail("range")
        return result


class FilterDateTime(AwareDateTime):
    """A list filter's moment: one outside the stored range is as good as the range's end (nothing is there)."""

    def to_internal_value(self, value: Any) -> dt.datetime:
        try:
            return super().to_internal_value(value)
        except serializers.ValidationError as error:
            if error.get_codes() != ["range"]:
                raise
        parsed = parse_datetime(str(value).strip())
        assert parsed is not None
        day = EARLIEST if parsed.year < EARLIEST.year else LATEST
        return dt.datetime.combine(day, dt.time(0) if day == EARLIEST else dt.time(23, 59), tzinfo=dt.UTC)


class BoundedDate(serializers.DateField):
    default_error_messages = {"range": RANGE_MESSAGE}

    def to_internal_value(self, value: Any) -> dt.date:
        result = super().to_internal_value(value)
        if not EARLIEST <= result <= LATEST:
            self.fail("range")
        return result
