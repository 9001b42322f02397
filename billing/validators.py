"""Validators for identifiers the EHRs and insurers use."""

from __future__ import annotations

import re
import zoneinfo

from django.core.exceptions import ValidationError

CPT_RE = re.compile(r"^\d{4}[0-9A-Z]$")
ICD10_RE = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")


def npi_is_valid(npi: str) -> bool:
    """An NPI is 10 digits whose last is a Luhn check digit over the prefix 80840 + the first nine."""
    if not re.fullmatch(r"\d{10}", npi or ""):
        return False
    digits = [int(d) for d in "80840" + npi]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def validate_npi(value: str) -> None:
    if not npi_is_valid(value):
        raise ValidationError("Enter a valid 10-digit NPI (the last digit is a check digit).", code="npi")


def validate_cpt(value: str) -> None:
    if not CPT_RE.match(value or ""):
        raise ValidationError("Enter a five-character CPT code such as 90837.", code="cpt")


def validate_icd10_list(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise ValidationError("Diagnosis codes must be a list of ICD-10 codes.", code="icd10")
    bad = [code for code in value if not ICD10_RE.match(code.upper())]
    if bad:
        raise ValidationError(f"Not ICD-10 codes: {', '.join(bad)}.", code="icd10")


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"Unknown time zone {value!r}; use a name such as America/New_York.",
                              code="time_zone")


def validate_retry_days(value: str) -> None:
    try:
        days = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValidationError("Retry days are whole numbers separated by commas, e.g. 3,7.",
                              code="retry_days") from None
    if not days or any(d < 1 or d > 60 for d in days) or days != sorted(set(days)):
        raise ValidationError("Retry days must be rising, distinct, between 1 and 60, e.g. 3,7.",
                              code="retry_days")
