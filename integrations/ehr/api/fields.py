"""Serializer fields that turn away what the database or the billing code could not take (never a 500)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from django.core.validators import RegexValidator
from django.utils.dateparse import parse_datetime
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, serializers
from rest_framework.settings import api_settings

# $1,000,000: far above any session fee, far below the database's integer limit.
MAX_CENTS = 100_000_000
# Dates outside this window are typing mistakes, and the far ends overflow time-zone arithmetic.
EARLIEST = dt.date(1900, 1, 1)
LATEST = dt.date(2199, 12, 31)
RANGE_MESSAGE = f"Give a date between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}."

# The same window spelt as patterns, so that the OpenAPI schema states it (format "date" alone admits years
# 0001 to 9999) and generated clients and fuzzers send what is taken. Exact: any day 01-28, the 29th and 30th
# outside February, the 31st of long months, and 29 February of leap years (1900 and 2100 are not).
_YEAR = "(?:19|2[01])[0-9]{2}"
_MONTH_DAY = "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
_LEAP_YEAR = ("(?:19(?:0[48]|[2468][048]|[13579][26])|20(?:[02468][048]|[13579][26])"
              "|21(?:0[48]|[2468][048]|[13579][26]))")
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
# RFC 3339 as the API reads it: upper-case T and Z, no leap second, and the offset required.
_TIME = r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
DATE_PATTERN = f"^{_DATE}$"
DATETIME_PATTERN = f"^{_DATE}{_TIME}$"
# A list filter takes any year Python can hold (0001-9999); format "date-time" checks the calendar.
FILTER_DATETIME_PATTERN = (r"^(?:[1-9][0-9]{3}|0(?:[1-9][0-9]{2}|0[1-9][0-9]|00[1-9]))-(?:0[1-9]|1[0-2])-"
                           f"(?:0[1-9]|[12][0-9]|3[01]){_TIME}$")


def iso_week_pattern() -> str:
    """ISO weeks of the date window: W01-W52 in every year, W53 only in the years that have one (a year
    whose 28 December falls in week 53), so that the schema admits exactly the weeks that exist."""
    long_years = [year for year in range(EARLIEST.year, LATEST.year + 1)
                  if dt.date(year, 12, 28).isocalendar().week == 53]
    return (f"^(?:{_YEAR}-W(?:0[1-9]|[1-4][0-9]|5[0-2])|"
            f"(?:{'|'.join(str(year) for year in long_years)})-W53)$")


EXTERNAL_ID_PATTERN = r"^[^\x00-\x1f\x7f/]{1,100}$"
SIMPLE_EXTERNAL_ID = re.compile(r"[^\x00-\x1f\x7f/]{1,100}")
external_id_validator = RegexValidator(EXTERNAL_ID_PATTERN, "An external id is 1 to 100 characters, "
                                                            "without control characters or '/'.")


def valid_unicode(value: str) -> None:
    # JSON may carry lone surrogates ("\ud800"), which PostgreSQL cannot store as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError("Text must be valid Unicode.") from None


not_blank = RegexValidator(r"\S", "This field may not be blank.")

# Python's \s, spelt out for the schema: JSON Schema regex engines disagree about U+001C-U+001F and U+FEFF.
WHITESPACE = r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# PostgreSQL cannot store U+0000, so DRF refuses it in any text; the schema says so too.
TEXT_PATTERN = r"^[^\u0000]+$"
NOT_BLANK_TEXT_PATTERN = rf"^[^\u0000]*[^\u0000{WHITESPACE}][^\u0000]*$"


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


class TextSchema(OpenApiSerializerFieldExtension):
    """Text's pattern in the schema: no U+0000, and not only whitespace where blank is refused. A field
    with a pattern of its own (external ids, NPI, CPT, ICD-10) keeps that one, which says as much."""

    target_class = Text
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if not any(isinstance(v, RegexValidator) and v is not not_blank for v in self.target.validators):
            # With allow_blank, drf-spectacular adds "" as a oneOf branch: this pattern is for the rest.
            schema["pattern"] = TEXT_PATTERN if self.target.allow_blank else NOT_BLANK_TEXT_PATTERN
        return schema


class StrictBoolean(serializers.BooleanField):
    """true or false only: DRF also takes 0, 1, "yes" and "on", which the schema (boolean) does not allow."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class QueryBoolean(serializers.BooleanField):
    """A boolean in the query string as OpenAPI writes one: true or false. DRF also takes 1, "yes", "on" and
    an empty value, which the schema (boolean) does not allow."""

    def to_internal_value(self, data: Any) -> bool:
        if data not in ("true", "false"):
            self.fail("invalid", input=data)
        return bool(data == "true")


class TextChoice(serializers.ChoiceField):
    """One of the choices, as JSON text: DRF also takes the number 10 for "10", which the schema does not."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


# A percent as text, as some EHRs send it: 0 to 100 with at most two decimals, nothing else (no sign,
# exponent, spaces or NaN), so the schema admits exactly what the field takes.
PERCENT_TEXT = r"^(?:100(?:\.0{1,2})?|[0-9]{1,2}(?:\.[0-9]{1,2})?)$"


class Percent(serializers.DecimalField):
    """0 to 100 with at most two decimals: a JSON number (20, 12.5) or the same number as text ("20")."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=5, decimal_places=2, min_value=0, max_value=100,
                         coerce_to_string=False, **kwargs)

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data == "":  # DRF reads it as null; the schema does not admit it
            self.fail("invalid")
        return super().validate_empty_values(data)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int | float | Decimal | str):
            self.fail("invalid")
        if isinstance(data, str) and not re.fullmatch(PERCENT_TEXT, data):
            self.fail("invalid")
        return super().to_internal_value(data)


class PercentSchema(OpenApiSerializerFieldExtension):
    """A number (multipleOf 0.01 states the two decimal places: without it the schema admits 79.7458,
    refused) or that number as text."""

    target_class = Percent

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction == "response":
            return schema
        outer = {key: schema.pop(key) for key in ("nullable", "description") if key in schema}
        number = {**schema, "multipleOf": 0.01}
        return {"oneOf": [number, {"type": "string", "pattern": PERCENT_TEXT}], **outer}


class DistinctList(serializers.ListField):
    """A list whose items may not repeat (uniqueItems in the schema)."""

    default_error_messages = {"repeated": "An item is listed twice."}

    def to_internal_value(self, data: Any) -> list[Any]:
        value = super().to_internal_value(data)
        if len(set(value)) != len(value):
            self.fail("repeated")
        return value


class DistinctListSchema(OpenApiSerializerFieldExtension):
    target_class = DistinctList

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        schema["uniqueItems"] = True
        return schema


class ExternalId(Text):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 100)
        kwargs.setdefault("allow_blank", False)
        extra_validators = bool(kwargs.get("validators"))
        kwargs["validators"] = [*kwargs.get("validators", []), external_id_validator]
        super().__init__(**kwargs)
        # The checks ``run_validation`` tells at once are these, and only these.
        self.plain = (not extra_validators and self.max_length == 100 and self.min_length is None
                      and not self.allow_blank and not self.trim_whitespace)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # Most ids are short ASCII text: those the full run would accept (1 to 100 characters, none of
        # them control characters or "/", hence no U+0000 and no lone surrogate) are told at once, and
        # come back as sent, as they would from the full run. Anything else gets the full run.
        if self.plain and type(data) is str and data.isascii() and SIMPLE_EXTERNAL_ID.fullmatch(data):
            return data
        return super().run_validation(data)


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


@extend_schema_field({"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN})
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
            # The date as written, in its own offset: what the schema's pattern states. Checked before the
            # conversion to UTC, which overflows at year 1 or 9999 with an offset.
            if parsed is not None and not EARLIEST <= parsed.date() <= LATEST:
                self.fail("range")
            if parsed is not None and value == value.strip() and self._iso_8601_only():
                return self.enforce_timezone(parsed)  # what DRF's own parse of ``value`` would return
        result = super().to_internal_value(value)
        if not isinstance(value, str) and not EARLIEST <= result.date() <= LATEST:
            self.fail("range")
        return result

    def _iso_8601_only(self) -> bool:
        return list(getattr(self, "input_formats", api_settings.DATETIME_INPUT_FORMATS)) == [ISO_8601]


@extend_schema_field({"type": "string", "format": "date-time", "pattern": FILTER_DATETIME_PATTERN})
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


@extend_schema_field({"type": "string", "format": "date", "pattern": DATE_PATTERN})
class BoundedDate(serializers.DateField):
    default_error_messages = {"range": RANGE_MESSAGE}

    def to_internal_value(self, value: Any) -> dt.date:
        result = super().to_internal_value(value)
        if not EARLIEST <= result <= LATEST:
            self.fail("range")
        return result
