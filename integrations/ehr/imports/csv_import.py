"""CSV imports of EHR exports: each row becomes the event the API would take, applied by the API's own services.

    report = csv_import(path=..., source="simplepractice", kind="appointments", preset="simplepractice",
                        dry_run=True)

The file is read as a stream (``csv`` over a text wrapper): rows are converted to API events and applied in
chunks through ``ehr_events.events_apply``, the very code behind ``POST /api/v1/events/`` (same validation,
same billing triggers, an identical row changes nothing). The whole import is one transaction with a
savepoint per row: a dry run, or any rejected row, rolls it all back, so "apply" is all-or-nothing and the
preview is exactly what applying would do. Only counts, the first rows' outcomes and the first problems
are kept, so memory stays flat however long the file is.

A file that cannot be read at all (empty, binary, an Excel workbook, missing required columns, too many
columns) raises ``ImportFileError`` with a message for staff; a bad row is reported with its row number
(the header is row 1, as in a spreadsheet) and the column it is about.

Columns the file does not map keep what the portal already has for an existing record (e.g. diagnosis
codes pushed through the API survive a re-import of an export without them); a new record gets the API's
defaults.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import io
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from auditlog.context import set_extra_data
from django.db import transaction
from django.utils import timezone

from billing.audit.access import auditlog_context_restored
from billing.local_time import practice_zone_active
from billing.models import Appointment, AppointmentStatus, Client, Clinician, Practice
from billing.services import intake
from integrations.ehr.api import events as ehr_events
from integrations.ehr.api.fields import MAX_CENTS
from integrations.ehr.imports.csv_presets import (
    BILLING_TYPES,
    FALSE_WORDS,
    FIELDS,
    KINDS,
    PLACES_OF_SERVICE,
    PRESETS,
    TRUE_WORDS,
    Preset,
)

CHUNK = 500  # rows applied per events_apply call
MAX_COLUMNS = 200
MAX_FIELD_CHARS = 10_000
MAX_PROBLEMS = 100
MAX_PREVIEW = 200
SAMPLE_BYTES = 64 * 1024

CREATE, CHANGE, UNCHANGED, REJECT = "create", "change", "unchanged", "reject"
OUTCOME_OF = {intake.CREATED: CREATE, intake.UPDATED: CHANGE, intake.UNCHANGED: UNCHANGED}


class ImportFileError(Exception):
    """The file as a whole cannot be imported; the message says why and what to do."""


class RowError(Exception):
    pass


@dataclass
class Problem:
    row: int
    message: str


@dataclass
class Report:
    source: str
    kind: str
    preset: str
    dry_run: bool
    encoding: str = ""
    notes: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # field -> the file's column
    rows: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((CREATE, CHANGE, UNCHANGED, REJECT), 0))
    problems: list[Problem] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)  # the first rows: row, outcome, record, detail
    seconds: float = 0.0
    applied: bool = False

    @property
    def rejected(self) -> int:
        return self.counts[REJECT]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def add(self, rows: list[int], outcome: str, record: str, detail: str = "") -> None:
        for row in rows:
            self.counts[outcome] += 1
            if outcome == REJECT and len(self.problems) < MAX_PROBLEMS:
                self.problems.append(Problem(row, detail))
            if len(self.preview) < MAX_PREVIEW:
                self.preview.append({"row": row, "outcome": outcome, "record": record, "detail": detail})

    def summary(self) -> str:
        c = self.counts
        verb = "" if self.applied else "would be "
        return (f"{self.rows:,} rows: {c[CREATE]:,} {verb}created, {c[CHANGE]:,} {verb}changed, {c[UNCHANGED]:,} "
                f"unchanged, {c[REJECT]:,} rejected")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        data = dict(data)
        data["problems"] = [Problem(**p) for p in data.get("problems", [])]
        return cls(**data)


# --- Reading the file ------------------------------------------------------------------------------------

SIGNATURES = {
    b"PK\x03\x04": "an Excel workbook or another zip file: in the EHR, download the report as CSV (or in "
                   "Excel use File > Save As > CSV UTF-8)",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) workbook: save it as CSV first",
    b"%PDF": "a PDF: download the report as CSV instead",
    b"\x89PNG": "an image, not a CSV file",
    b"\xff\xd8\xff": "an image, not a CSV file",
    b"\x1f\x8b": "a gzip archive: unpack it first",
}


def detect_encoding(sample: bytes) -> tuple[str, str]:
    """The encoding to read the file with, and a note for staff when it is not plain UTF-8."""
    if not sample.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise ImportFileError("The file is empty.")
    for magic, what in SIGNATURES.items():
        if sample.startswith(magic):
            raise ImportFileError(f"This is not a CSV file: it looks like {what}.")
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", ""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "The file is UTF-16 (as Excel's \"Unicode text\" saves it); read as such."
    even, odd = sample[0::2], sample[1::2]
    if len(sample) >= 4 and odd.count(0) > len(odd) * 0.4 and even.count(0) < len(even) * 0.05:
        return "utf-16-le", "The file is UTF-16 without a byte-order mark; read as UTF-16 (little-endian)."
    if len(sample) >= 4 and even.count(0) > len(even) * 0.4 and odd.count(0) < len(odd) * 0.05:
        return "utf-16-be", "The file is UTF-16 without a byte-order mark; read as UTF-16 (big-endian)."
    if b"\x00" in sample:
        raise ImportFileError("This is not a CSV file: it contains binary data.")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8", ""
    except UnicodeDecodeError:
        return "cp1252", ("The file is not UTF-8; it was read as Windows-1252 (what Excel on Windows saves as "
                          "\"CSV\"). Check accented names in the preview; saving as \"CSV UTF-8\" avoids this.")


def _looks_like_text(text: str) -> bool:
    if not text:
        return True
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\r\n\t")
    return control <= max(2, len(text) // 100)


@dataclass
class Opened:
    reader: Iterator[list[str]]
    header: list[str]
    encoding: str
    note: str
    stream: IO[str]


def open_csv(path: Path) -> Opened:
    with path.open("rb") as raw:
        sample = raw.read(SAMPLE_BYTES)
    encoding, note = detect_encoding(sample)
    stream = io.TextIOWrapper(path.open("rb"), encoding=encoding, errors="strict" if encoding != "cp1252"
                              else "replace", newline="")
    try:
        head = stream.read(min(len(sample), 8192))
    except UnicodeDecodeError:
        stream.close()
        raise ImportFileError(f"The file could not be read as {encoding}: it is damaged or not text.") from None
    if not _looks_like_text(head):
        stream.close()
        raise ImportFileError("This is not a CSV file: it contains binary data.")
    first_line = head.lstrip("\ufeff").splitlines()[0] if head.strip() else ""
    delimiter = max(",;\t|", key=first_line.count)
    if first_line.count(delimiter) == 0:
        delimiter = ","
    stream.seek(0)
    reader = csv.reader(stream, delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as error:
        stream.close()
        raise ImportFileError(f"The header row could not be read: {error}.") from None
    if not header or not any(cell.strip() for cell in header):
        stream.close()
        raise ImportFileError("The file is empty: it has no header row.")
    if len(header) > MAX_COLUMNS:
        stream.close()
        raise ImportFileError(f"The file has {len(header):,} columns; an EHR export has far fewer (at most "
                              f"{MAX_COLUMNS}). Is this the right file?")
    header = [cell.strip().lstrip("\ufeff").strip() for cell in header]
    return Opened(reader, header, encoding, note, stream)


# --- Mapping columns to fields ---------------------------------------------------------------------------

def parse_mapping(text: str) -> dict[str, str]:
    """``"Column=field,Other Column=field"`` (also one pair per line) -> {column: field}."""
    mapping: dict[str, str] = {}
    for part in re.split(r"[,\n]", text or ""):
        if not part.strip():
            continue
        if "=" not in part:
            raise ImportFileError(f"Write each mapping as Column=field; {part.strip()!r} has no '='.")
        column, name = part.rsplit("=", 1)
        mapping[column.strip()] = name.strip()
    return mapping


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def resolve_columns(*, header: list[str], kind: str, preset: Preset, mapping: dict[str, str]) -> dict[str, int]:
    """field -> column index. Raises ImportFileError naming what is missing or wrong."""
    fields = {f.name: f for f in FIELDS[kind]}
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(header):
        positions.setdefault(_norm(name), []).append(index)
    resolved: dict[str, int] = {}
    for name, aliases in preset.columns.get(kind, {}).items():
        for alias in aliases:
            if _norm(alias) in positions:
                resolved[name] = positions[_norm(alias)][0]
                break
    for column, name in mapping.items():
        if name not in fields:
            raise ImportFileError(f"The mapping names {name!r}, which is not a field for {kind}. Fields: "
                                  f"{', '.join(fields)}.")
        if _norm(column) not in positions:
            raise ImportFileError(f"The mapping names the column {column!r}, which the file does not have. Its "
                                  f"columns are: {', '.join(header)}.")
        resolved[name] = positions[_norm(column)][0]
    for index in resolved.values():
        if len(positions[_norm(header[index])]) > 1:
            raise ImportFileError(f"The column {header[index]!r} appears more than once in the header.")
    missing = [f for f in fields.values() if f.required and f.name not in resolved]
    if kind == "clients" and "name" not in resolved and not {"first_name", "last_name"} <= set(resolved):
        missing.append(fields["first_name"] if "first_name" not in resolved else fields["last_name"])
    if missing:
        expected = "; ".join(f"{_expected_header(preset, kind, f.name)} ({f.label})" for f in missing)
        raise ImportFileError(f"Missing required columns for {preset.label} {kind}: {expected}. The file's columns "
                              f"are: {', '.join(header) or '(none)'}. Adjust the mapping if a column has another "
                              "name.")
    return resolved


def _expected_header(preset: Preset, kind: str, name: str) -> str:
    aliases = preset.columns.get(kind, {}).get(name) or (name,)
    return " or ".join(repr(a) for a in aliases[:2])


# --- Values ---------------------------------------------------------------------------------------------

DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d", "%m/%d/%y", "%m-%d-%Y", "%d-%b-%Y", "%b %d, %Y", "%B %d, %Y")
TIME_FORMATS = ("%I:%M %p", "%I:%M%p", "%H:%M", "%H:%M:%S", "%I:%M:%S %p", "%I %p", "%I%p")


def parse_date(value: str) -> dt.date:
    text = value.strip()
    for fmt in DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise RowError(f"{value!r} is not a date (use MM/DD/YYYY or YYYY-MM-DD)")


def parse_time(value: str) -> dt.time:
    text = " ".join(value.strip().upper().split())
    for fmt in TIME_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).time()
        except ValueError:
            continue
    raise RowError(f"{value!r} is not a time (use e.g. 10:00 AM or 14:30)")


def parse_datetime(value: str, time_value: str, zone: dt.tzinfo) -> dt.datetime:
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is not None:
            return parsed
        if "T" in text or " " in text.strip():
            return parsed.replace(tzinfo=zone)
    except ValueError:
        pass
    date_part, _, time_part = text.partition(" ")
    if time_part and not time_value.strip():
        time_value = time_part
        text = date_part
    day = parse_date(text)
    moment = parse_time(time_value) if time_value.strip() else dt.time(0, 0)
    return dt.datetime.combine(day, moment, tzinfo=zone)


def parse_cents(value: str) -> int | None:
    text = value.strip().replace("$", "").replace(",", "").replace(" ", "")
    if not text or text in ("-", "--"):
        return None
    if text.startswith("(") and text.endswith(")"):
        raise RowError(f"{value!r} is negative; amounts are never below $0.00")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise RowError(f"{value!r} is not an amount in dollars") from None
    if amount < 0:
        raise RowError(f"{value!r} is negative; amounts are never below $0.00")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise RowError(f"{value!r} has fractions of a cent")
    if cents > MAX_CENTS:
        raise RowError(f"{value!r} is more than $1,000,000")
    return int(cents)


def parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise RowError(f"{value!r} is not yes or no")


# --- Rows to events --------------------------------------------------------------------------------------

@dataclass
class Pending:
    """One event gathered from one row (or several consecutive rows of one group session)."""

    rows: list[int]
    kind: str  # the events API's type
    external_id: str
    data: dict[str, Any]
    given: set[str]  # API fields the file gave (others keep what is stored)
    raw: dict[str, str]  # API field -> "Column 'value'" for messages


class Converter:
    def __init__(self, *, kind: str, preset: Preset, header: list[str], columns: dict[str, int], source: str,
                 now: dt.datetime) -> None:
        self.kind, self.preset, self.header, self.columns, self.source, self.now = (
            kind, preset, header, columns, source, now)
        practice = Practice.load()
        self.zone = practice.zone
        self.clinicians: dict[str, str] = {}
        self.clinician_ids: set[str] = set()
        if kind == "appointments":
            for external_id, name, credentials in Clinician.objects.filter(source=source).exclude(
                    external_id="").values_list("external_id", "name", "credentials"):
                self.clinicians.setdefault(_norm(name), external_id)
                if credentials:
                    self.clinicians.setdefault(_norm(f"{name}, {credentials}"), external_id)
            self.clinician_ids = set(Clinician.objects.filter(source=source).exclude(external_id="").values_list(
                "external_id", flat=True))

    def cell(self, row: list[str], name: str) -> str:
        index = self.columns.get(name)
        if index is None or index >= len(row):
            return ""
        return row[index].strip()

    def label(self, name: str) -> str:
        return self.header[self.columns[name]] if name in self.columns else name

    def value(self, row: list[str], name: str, parse: Callable[[str], Any]) -> Any:
        text = self.cell(row, name)
        try:
            return parse(text)
        except RowError as error:
            raise RowError(f"{self.label(name)}: {error}") from None

    def convert(self, number: int, row: list[str]) -> Pending:
        if len(row) > len(self.header) and any(cell.strip() for cell in row[len(self.header):]):
            raise RowError(f"the row has {len(row)} cells but the header has {len(self.header)} columns (an "
                           "unquoted comma in a value?)")
        for cell in row:
            if len(cell) > MAX_FIELD_CHARS:
                raise RowError(f"a cell is {len(cell):,} characters long; no export field is that long")
        if self.kind == "clients":
            return self._client(number, row)
        if self.kind == "appointments":
            return self._appointment(number, row)
        return self._insurance_payment(number, row)

    def _raw(self, row: list[str], pairs: dict[str, str]) -> dict[str, str]:
        return {api: f"{self.label(name)} {self.cell(row, name)!r}" for api, name in pairs.items()
                if name in self.columns}

    def _client(self, number: int, row: list[str]) -> Pending:
        external_id = self.cell(row, "external_id")
        if not external_id:
            raise RowError(f"{self.label('external_id')} is empty")
        data: dict[str, Any] = {}
        first, last = self.cell(row, "first_name"), self.cell(row, "last_name")
        if "first_name" not in self.columns and "name" in self.columns:
            full = self.cell(row, "name")
            if "," in full:
                last, _, first = (part.strip() for part in full.partition(","))
            else:
                first, _, last = full.rpartition(" ") if " " in full else ("", "", full)
                first, last = first.strip(), last.strip()
            data.update(first_name=first, last_name=last)
        else:
            if "first_name" in self.columns:
                data["first_name"] = first
            if "last_name" in self.columns:
                data["last_name"] = last
        for name in ("email", "phone"):
            if name in self.columns:
                data[name] = self.cell(row, name)
        if "date_of_birth" in self.columns:
            data["date_of_birth"] = self.value(row, "date_of_birth", lambda v: parse_date(v) if v else None)
        if "billing_type" in self.columns:
            text = self.cell(row, "billing_type")
            if text:
                billing_type = BILLING_TYPES.get(_norm(text))
                if billing_type is None:
                    raise RowError(f"{self.label('billing_type')}: {text!r} is not a billing type (insurance, "
                                   "self-pay or sliding scale)")
                data["billing_type"] = billing_type
        if "session_rate" in self.columns:
            data["session_rate_cents"] = self.value(row, "session_rate", parse_cents)
        if "active" in self.columns and self.cell(row, "active"):
            data["active"] = self.value(row, "active", parse_bool)
        raw = self._raw(row, {"first_name": "first_name", "last_name": "last_name", "email": "email",
                              "phone": "phone", "date_of_birth": "date_of_birth", "billing_type": "billing_type",
                              "session_rate_cents": "session_rate", "active": "active"})
        if "name" in self.columns and "first_name" not in self.columns:
            raw["first_name"] = raw["last_name"] = f"{self.label('name')} {self.cell(row, 'name')!r}"
        return Pending([number], "client", external_id, data, set(data), raw)

    def _status(self, row: list[str], starts_at: dt.datetime) -> str | None:
        if "status" not in self.columns:
            return None
        text = self.cell(row, "status")
        if not text:
            return None
        status = self.preset.statuses.get(_norm(text))
        if status is None:
            known = sorted({k.title() for k in self.preset.statuses})
            raise RowError(f"{self.label('status')}: {text!r} is not a status {self.preset.label} uses "
                           f"({', '.join(known)})")
        if (status == AppointmentStatus.COMPLETED and self.preset.attended_before_it_happens
                and starts_at > self.now):
            status = AppointmentStatus.SCHEDULED  # "Show" is SimplePractice's default for sessions to come
        if "charge_fee" in self.columns and self.cell(row, "charge_fee"):
            charge = self.value(row, "charge_fee", parse_bool)
            if status == AppointmentStatus.CANCELED and charge:
                status = AppointmentStatus.LATE_CANCEL
            elif status in (AppointmentStatus.NO_SHOW, AppointmentStatus.LATE_CANCEL) and not charge:
                status = AppointmentStatus.CANCELED  # the EHR waived the fee: nothing to charge
        return status

    def _appointment(self, number: int, row: list[str]) -> Pending:
        client = self.cell(row, "client")
        if not client:
            raise RowError(f"{self.label('client')} is empty")
        clinician_text = self.cell(row, "clinician")
        if not clinician_text:
            raise RowError(f"{self.label('clinician')} is empty")
        clinician = clinician_text if clinician_text in self.clinician_ids else self.clinicians.get(
            _norm(clinician_text))
        if clinician is None:
            raise RowError(f"{self.label('clinician')}: no clinician {clinician_text!r} from {self.source} (by id or "
                           "name); add the clinician first (admin, or PUT /api/v1/clinicians/)")
        date_text = self.cell(row, "date")
        if not date_text:
            raise RowError(f"{self.label('date')} is empty")
        try:
            starts_at = parse_datetime(date_text, self.cell(row, "time"), self.zone)
        except RowError as error:
            raise RowError(f"{self.label('date')}/{self.label('time') if 'time' in self.columns else 'time'}: "
                           f"{error}") from None
        data: dict[str, Any] = {"clinician": clinician, "clients": [client],
                                "service_code": self.cell(row, "service_code").upper(), "starts_at": starts_at}
        status = self._status(row, starts_at)
        if status is not None:
            data["status"] = status
        if "duration_minutes" in self.columns and self.cell(row, "duration_minutes"):
            text = self.cell(row, "duration_minutes").lower().replace("minutes", "").replace("min", "").strip()
            if not text.isdigit():
                raise RowError(f"{self.label('duration_minutes')}: {self.cell(row, 'duration_minutes')!r} is not a "
                               "number of minutes")
            data["duration_minutes"] = int(text)
        if "fee" in self.columns:
            data["fee_cents"] = self.value(row, "fee", parse_cents)
        if "place_of_service" in self.columns:
            data["place_of_service"] = self._place_of_service(row)
        if "note_signed_at" in self.columns:
            text = self.cell(row, "note_signed_at")
            data["note_signed_at"] = self.value(row, "note_signed_at",
                                                lambda v: parse_datetime(v, "", self.zone) if v else None) \
                if text else None
        external_id = self.cell(row, "external_id") or f"{client}@{starts_at.astimezone(self.zone):%Y-%m-%dT%H:%M}"
        raw = self._raw(row, {"clinician": "clinician", "clients": "client", "service_code": "service_code",
                              "starts_at": "date", "status": "status", "duration_minutes": "duration_minutes",
                              "fee_cents": "fee", "note_signed_at": "note_signed_at", "external_id": "external_id",
                              "place_of_service": "place_of_service"})
        return Pending([number], "appointment", external_id, data, set(data), raw)

    def _place_of_service(self, row: list[str]) -> str:
        # A cell may give the code with its words ("10 - Telehealth in patient's home"): the code decides.
        text = self.cell(row, "place_of_service")
        code = text.strip().split(" ", 1)[0].zfill(2) if text.strip()[:1].isdigit() else _norm(text)
        place = PLACES_OF_SERVICE.get(code)
        if place is None:
            raise RowError(f"{self.label('place_of_service')}: {text!r} is not a place of service (11 office, 02 "
                           "telehealth, 10 telehealth in the client's home)")
        return place

    def _insurance_payment(self, number: int, row: list[str]) -> Pending:
        client = self.cell(row, "client")
        if not client:
            raise RowError(f"{self.label('client')} is empty")
        appointment = self.cell(row, "appointment")
        if not appointment:
            if "date_of_service" not in self.columns or not self.cell(row, "date_of_service"):
                raise RowError("give the appointment id or the date of service to find the session")
            day = self.value(row, "date_of_service", parse_date)
            start = dt.datetime.combine(day, dt.time(0), tzinfo=self.zone)
            found = list(Appointment.objects.filter(
                source=self.source, participants__client__source=self.source,
                participants__client__external_id=client, starts_at__gte=start,
                starts_at__lt=start + dt.timedelta(days=1)).values_list("external_id", flat=True)[:3])
            if not found:
                raise RowError(f"no session for client {client!r} on {day:%m/%d/%Y} from {self.source}; import the "
                               "appointments first")
            if len(found) > 1:
                raise RowError(f"client {client!r} has several sessions on {day:%m/%d/%Y}; add an appointment id "
                               "column to say which")
            appointment = found[0]
        data = {"appointment": appointment, "client": client, "payer_name": self.cell(row, "payer_name"),
                "allowed_cents": self.value(row, "allowed", parse_cents),
                "paid_cents": self.value(row, "paid", parse_cents),
                "patient_responsibility_cents": self.value(row, "patient_responsibility", parse_cents),
                "paid_on": self.value(row, "paid_on", parse_date), "reference": self.cell(row, "reference")}
        raw = self._raw(row, {"appointment": "appointment", "client": "client", "payer_name": "payer_name",
                              "allowed_cents": "allowed", "paid_cents": "paid",
                              "patient_responsibility_cents": "patient_responsibility", "paid_on": "paid_on",
                              "reference": "reference"})
        return Pending([number], "insurance_payment", "", data, set(data), raw)


# --- Applying --------------------------------------------------------------------------------------------

CLIENT_DEFAULTS: dict[str, Any] = {"email": "", "phone": "", "date_of_birth": None, "billing_type": "self_pay",
                                   "session_rate_cents": None, "active": True}
CLIENT_STORED = ("first_name", "last_name", *CLIENT_DEFAULTS)
APPOINTMENT_DEFAULTS: dict[str, Any] = {"status": AppointmentStatus.SCHEDULED, "duration_minutes": 50,
                                        "diagnosis_codes": [], "fee_cents": None, "note_signed_at": None,
                                        "place_of_service": ""}


class CsvPush(intake.Push):
    @property
    def actor(self) -> str:
        return f"csv:{self.source}"


def _complete(source: str, chunk: list[Pending]) -> None:
    """Fill the fields the file does not give from what is stored (or the API's defaults for new records)."""
    kinds = {p.kind for p in chunk}
    if "client" in kinds:
        stored = {row["external_id"]: row for row in Client.objects.filter(
            source=source, external_id__in=[p.external_id for p in chunk]).values("external_id", *CLIENT_STORED)}
        for pending in chunk:
            base = stored.get(pending.external_id) or CLIENT_DEFAULTS
            pending.data = {**{k: v for k, v in base.items() if k != "external_id"}, **pending.data}
    if "appointment" in kinds:
        stored = {row["external_id"]: row for row in Appointment.objects.filter(
            source=source, external_id__in=[p.external_id for p in chunk]).values(
            "external_id", *APPOINTMENT_DEFAULTS)}
        for pending in chunk:
            base = stored.get(pending.external_id) or APPOINTMENT_DEFAULTS
            pending.data = {**{k: v for k, v in base.items() if k != "external_id"}, **pending.data}


def _message(pending: Pending, result: dict[str, Any]) -> str:
    parts = []
    for name, messages in (result.get("errors") or {}).items():
        base = name.split(".")[0].split("[")[0]
        where = pending.raw.get(base) or ("" if base in ("non_field_errors", "external_id") else base)
        text = " ".join(str(m) for m in messages)
        parts.append(f"{where}: {text}" if where else text)
    return "; ".join(parts) or "rejected"


def _apply_chunk(push: intake.Push, chunk: list[Pending], report: Report) -> None:
    _complete(push.source, chunk)
    events = [{"type": p.kind, "data": p.data} if p.kind == "insurance_payment"
              else {"type": p.kind, "external_id": p.external_id, "data": p.data} for p in chunk]
    results = ehr_events.events_apply(push=push, events=events)
    for pending, result in zip(chunk, results, strict=True):
        record = pending.external_id or f"{pending.data.get('appointment')} / {pending.data.get('reference')}"
        if result["status"] == intake.ERROR:
            report.add(pending.rows, REJECT, record, _message(pending, result))
        else:
            report.add(pending.rows, OUTCOME_OF[result["status"]], record)


Progress = Callable[[int, float], None]


def _check_choices(kind: str, preset: str) -> None:
    if kind not in KINDS:
        raise ImportFileError(f"Choose what the file holds: {', '.join(KINDS)}.")
    if preset not in PRESETS:
        raise ImportFileError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")


def csv_check(*, path: Path, kind: str, preset: str = "custom", mapping: dict[str, str] | None = None) -> None:
    """Raise ImportFileError if the file cannot be imported as a whole: what the upload form can say at once
    (not a CSV, a broken encoding at the start, missing or unknown columns). Reads only the first lines."""
    _check_choices(kind, preset)
    opened = open_csv(Path(path))
    try:
        resolve_columns(header=opened.header, kind=kind, preset=PRESETS[preset], mapping=mapping or {})
    finally:
        opened.stream.close()


def count_rows(path: Path) -> int:
    """The rows ``csv_import`` will read (blank lines left out, as it does), for a progress bar's total.

    A row the CSV reader cannot get past ends the count there; the import then reports it.
    """
    opened = open_csv(Path(path))
    rows = 0
    try:
        while True:
            try:
                row = next(opened.reader, None)
            except (csv.Error, UnicodeDecodeError):
                break
            if row is None:
                break
            if any(cell.strip() for cell in row):
                rows += 1
    finally:
        opened.stream.close()
    return rows


def csv_import(*, path: Path, source: str, kind: str, preset: str = "custom", mapping: dict[str, str] | None = None,
               dry_run: bool = True, now: dt.datetime | None = None, actor: Any = None,
               progress: Progress | None = None, progress_every: int = 10_000,
               before_commit: Callable[[Report], None] | None = None) -> Report:
    """Import (or, with ``dry_run``, preview) one CSV file. Applies only if no row is rejected.

    ``before_commit`` is called with the report inside the import's transaction once it is sure to be
    applied, so what it writes (e.g. "applied") commits with the rows or not at all.
    """
    _check_choices(kind, preset)
    now = now or timezone.now()
    report = Report(source=source, kind=kind, preset=preset, dry_run=dry_run)
    started = time.perf_counter()
    opened = open_csv(Path(path))
    try:
        report.encoding = opened.encoding
        if opened.note:
            report.notes.append(opened.note)
        columns = resolve_columns(header=opened.header, kind=kind, preset=PRESETS[preset], mapping=mapping or {})
        report.columns = {name: opened.header[index] for name, index in columns.items()}
        # Without an actor, the caller's audit context stands (a command's or a task's system account):
        # an empty one in its place would leave the import's audit entries with no one behind them.
        as_actor: contextlib.AbstractContextManager[Any] = (
            set_extra_data({"actor": actor}) if actor is not None else contextlib.nullcontext())
        # The practice's zone is current (as in a request) when a command or the task cluster imports.
        with auditlog_context_restored(), as_actor, practice_zone_active(), transaction.atomic():
            converter = Converter(kind=kind, preset=PRESETS[preset], header=opened.header, columns=columns,
                                  source=source, now=now)
            _run(opened, converter, report, source, now, progress, progress_every, started)
            report.applied = not dry_run and report.rejected == 0 and report.rows > 0
            if not report.applied:
                transaction.set_rollback(True)
            elif before_commit is not None:
                report.seconds = time.perf_counter() - started
                before_commit(report)
    finally:
        opened.stream.close()
    report.seconds = time.perf_counter() - started
    if report.rows == 0:
        report.notes.append("The file has a header but no rows: nothing to import.")
    return report


def _run(opened: Opened, converter: Converter, report: Report, source: str, now: dt.datetime,
         progress: Progress | None, progress_every: int, started: float) -> None:
    chunk: list[Pending] = []
    number = 1
    group_ids = "external_id" in converter.columns and converter.kind == "appointments"
    while True:
        try:
            row = next(opened.reader, None)
        except UnicodeDecodeError:
            raise ImportFileError(f"Row {number + 1}: the file stops being valid {opened.encoding} here; save it "
                                  "again as CSV UTF-8.") from None
        except csv.Error as error:
            raise ImportFileError(f"Row {number + 1}: the CSV is malformed ({error}); is a quote left open?") from None
        if row is None:
            break
        number += 1
        if not any(cell.strip() for cell in row):
            continue  # blank lines (Excel leaves them at the end)
        report.rows += 1
        try:
            pending: Pending | None = converter.convert(number, row)
        except RowError as error:
            report.add([number], REJECT, converter.cell(row, "external_id") or converter.cell(row, "client"),
                       str(error))
            pending = None
        if pending is not None:
            last = chunk[-1] if chunk else None
            if group_ids and last is not None and last.external_id == pending.external_id and _same_session(
                    last, pending):
                # Consecutive rows of one group session: one appointment, several clients.
                last.data["clients"].extend(c for c in pending.data["clients"] if c not in last.data["clients"])
                last.rows.extend(pending.rows)
            else:
                if len(chunk) >= CHUNK:
                    # A fresh push per chunk: its caches hold one chunk's records, never the whole file's.
                    _apply_chunk(CsvPush(source=source, now=now), chunk, report)
                    chunk = []
                chunk.append(pending)
        if progress is not None and report.rows % progress_every == 0:
            progress(report.rows, time.perf_counter() - started)
    if chunk:
        _apply_chunk(CsvPush(source=source, now=now), chunk, report)
    if progress is not None and report.rows % progress_every:
        progress(report.rows, time.perf_counter() - started)


def _same_session(a: Pending, b: Pending) -> bool:
    keys = ("clinician", "starts_at", "service_code", "status")
    return all(a.data.get(k) == b.data.get(k) for k in keys)
