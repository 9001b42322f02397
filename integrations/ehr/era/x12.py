"""Reading an X12 835 (005010X221A1) remittance file into billing's plain data (``RemittanceIn``).

The file is read with pyx12 (BSD, maintained; the 835 5010 implementation guide's map ships with it):

1. ``X12Reader`` splits it with the delimiters its ISA segment declares (the element separator at
   position 3, the repetition separator ISA11, the component separator ISA16, and the segment terminator
   after ISA16), never assumed ones, and checks the envelope (ISA/IEA, GS/GE, ST/SE counts and numbers).
2. What it is comes first: an 837 (a claim), a 270 or anything else than an 835 is refused by name.
3. ``X12ContextReader`` walks the 835 map: a missing required segment, a segment out of place or an
   element that breaks its type (an amount with a letter, a date that is not one) is an error.
4. The loops are read into payments, claims and service lines; a service line whose charge less its
   adjustments is not what was paid, or a payment whose total is not its claims' (less provider-level
   adjustments), is refused too.

Every error names the segment and its position (the ISA is segment 1) and nothing is posted: the file is
read whole before anything is written. ``RemittanceFileError`` carries the message for staff.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pyx12.error_handler
import pyx12.errors
import pyx12.params
import pyx12.x12context
import pyx12.x12file

from billing.services.remittances import Adjustment, ClaimIn, RemittanceIn, ServiceLineIn

ISA_LENGTH = 106
MAX_BYTES = 10 * 1024 * 1024
MAX_ERRORS = 5
# The ISA's elements have fixed widths (ISA01 to ISA16).
ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
TRANSACTIONS = {"837": "an 837 claim file (what the practice sends), not an 835 remittance",
                "270": "a 270 eligibility request, not an 835 remittance",
                "271": "a 271 eligibility response, not an 835 remittance",
                "276": "a 276 claim status request, not an 835 remittance",
                "277": "a 277 claim status response, not an 835 remittance",
                "999": "a 999 acknowledgment, not an 835 remittance",
                "997": "a 997 acknowledgment, not an 835 remittance"}


class RemittanceFileError(Exception):
    """The file cannot be posted; the message says where and why."""


@dataclass(frozen=True)
class Segment:
    position: int  # 1 for the ISA
    id: str
    elements: list[str]  # elements[1] is XX01
    components: str  # the component separator

    def get(self, index: int) -> str:
        return self.elements[index].strip() if index < len(self.elements) else ""

    def part(self, index: int, component: int) -> str:
        parts = self.get(index).split(self.components)
        return parts[component - 1].strip() if component <= len(parts) else ""

    @property
    def where(self) -> str:
        return f"segment {self.position} ({self.id})"

    @property
    def at(self) -> str:  # the same words, to start a sentence
        return f"Segment {self.position} ({self.id})"


def _fail(segment: Segment | None, message: str) -> RemittanceFileError:
    return RemittanceFileError(f"{segment.at}: {message}" if segment else message)


def _decode(data: bytes) -> str:
    if not data.strip():
        raise RemittanceFileError("The file is empty.")
    if len(data) > MAX_BYTES:
        raise RemittanceFileError(f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB; a remittance is far "
                                  "smaller. Is this the right file?")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if "\x00" in text:
        raise RemittanceFileError("This is not an X12 file: it contains binary data.")
    return text.lstrip(" \t\r\n")


def _check_isa(text: str) -> None:
    if not text.startswith("ISA"):
        raise RemittanceFileError("This is not an X12 file: it must begin with an ISA segment (segment 1), and it "
                                  f"begins with {text[:20]!r}.")
    if len(text) < ISA_LENGTH:
        raise RemittanceFileError("Segment 1 (ISA): the interchange header is cut short; it has 106 characters.")
    separator = text[3]
    if separator.isalnum() or separator.isspace():
        raise RemittanceFileError(f"Segment 1 (ISA): {separator!r} cannot be the element separator (the "
                                  "character after ISA).")
    fields = text[:ISA_LENGTH - 1].split(separator)[1:]
    if len(fields) != len(ISA_WIDTHS) or any(len(f) != w for f, w in zip(fields, ISA_WIDTHS, strict=True)):
        raise RemittanceFileError(
            "Segment 1 (ISA): the interchange header is not the fixed-width 106 characters with 16 elements, so "
            "its separators cannot be read (each ISA element is padded to its width: ISA06 and ISA08 to 15).")
    terminator, component, repetition = text[ISA_LENGTH - 1], fields[15], fields[10]
    if len({separator, terminator, component}) < 3:
        raise RemittanceFileError("Segment 1 (ISA): the element separator, the component separator (ISA16) and the "
                                  "segment terminator must be three different characters.")
    if fields[11] != "00501":
        raise RemittanceFileError(f"Segment 1 (ISA): version {fields[11]!r} is not 00501; the portal reads 835 "
                                  "files of version 005010X221A1.")
    # ISA11: no element the portal reads repeats, but a separator that is another's would split wrongly.
    if repetition in (separator, terminator, component) or repetition.isalnum():
        raise RemittanceFileError(f"Segment 1 (ISA): the repetition separator (ISA11) {repetition!r} must differ "
                                  "from the other separators and not be a letter or digit.")


class _Errors(pyx12.error_handler.errh_null):
    """Keeps every error the 835 map finds, with the position of the segment it is about."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[int, str]] = []
        self.position = 0

    def add_seg(self, map_node: Any, seg: Any, seg_count: int, cur_line: int, ls_id: Any) -> None:
        self.position = cur_line

    def _add(self, message: str, position: int | None = None) -> None:
        self.found.append((position or self.position, message))

    def isa_error(self, err_cde: str, err_str: str) -> None:
        self._add(err_str)

    def gs_error(self, err_cde: str, err_str: str) -> None:
        self._add(err_str)

    def st_error(self, err_cde: str, err_str: str) -> None:
        self._add(err_str)

    def seg_error(self, err_cde: str, err_str: str, err_value: Any = None, src_line: int | None = None) -> None:
        self._add(err_str, src_line)

    def ele_error(self, err_cde: str, err_str: str, bad_value: Any, refdes: Any = None) -> None:
        self._add(err_str)


def _segments(text: str) -> tuple[list[Segment], str]:
    try:
        reader = pyx12.x12file.X12Reader(io.StringIO(text))
    except pyx12.errors.X12Error as error:
        raise RemittanceFileError(f"Segment 1 (ISA): {error}") from None
    components = reader.subele_term or ":"
    segments: list[Segment] = []
    problems: list[str] = []
    try:
        for number, seg in enumerate(reader, start=1):
            raw = seg.format().rstrip(reader.seg_term or "")
            segment = Segment(number, seg.get_seg_id(), raw.split(reader.ele_term), components)
            segments.append(segment)
            problems += [f"{segment.at}: {e[2]}" for e in reader.pop_errors()]
        reader.cleanup()
    except pyx12.errors.X12Error as error:
        raise RemittanceFileError(f"Segment {len(segments) + 1}: {error}") from None
    except Exception as error:  # pyx12 trips over some broken envelopes (a GE with no GS before it)
        raise RemittanceFileError(f"Segment {len(segments) + 1}: the envelope (ISA, GS, ST and their trailers) "
                                  f"is broken here ({type(error).__name__}).") from None
    problems += [f"At the end of the file: {e[2]}" for e in reader.pop_errors()]
    rest = reader.raw.buffer.strip(" \r\n")
    if rest:
        after = segments[-1].where if segments else "the ISA"
        raise RemittanceFileError(f"After {after}: {rest[:40]!r} is not a complete segment (an empty segment, or "
                                  f"a segment without its terminator {reader.seg_term!r}).")
    if problems:
        raise RemittanceFileError("; ".join(problems[:MAX_ERRORS]))
    return segments, components


def _check_kind(segments: list[Segment]) -> None:
    for segment in segments:
        if segment.id == "GS" and not segment.get(8).startswith("005010X221"):
            kind = segment.get(8)
            if "X222" in kind or "X223" in kind or "X224" in kind:
                raise _fail(segment, f"this is an 837 claim file ({kind}), not an 835 remittance.")
            if segment.get(1) != "HP":
                raise _fail(segment, f"this functional group is {segment.get(1)!r} ({kind}), not HP: not an "
                                     "835 remittance.")
            raise _fail(segment, f"version {kind!r} is not 005010X221A1, the 835 the portal reads.")
        if segment.id == "ST" and segment.get(1) != "835":
            what = TRANSACTIONS.get(segment.get(1), f"a {segment.get(1)} transaction, not an 835 remittance")
            raise _fail(segment, f"this is {what}.")
    if not any(s.id == "ST" for s in segments):
        raise RemittanceFileError("The file has no transaction (no ST segment): there is nothing to post.")


def _check_map(text: str, segments: list[Segment]) -> None:
    errors = _Errors()
    try:
        reader = pyx12.x12context.X12ContextReader(pyx12.params.params(), errors, io.StringIO(text))
        for _node in reader.iter_segments():
            pass
    except pyx12.errors.X12Error as error:
        errors.found.append((errors.position, str(error)))
    except Exception as error:  # the map walker gives up on some structures instead of reporting them
        errors.found.append((errors.position, f"the 835's loops cannot be followed past here "
                                              f"({type(error).__name__})"))
    if errors.found:
        by_position = {s.position: s for s in segments}
        messages = []
        for position, message in errors.found[:MAX_ERRORS]:
            segment = by_position.get(position)
            messages.append(f"{segment.at}: {message}" if segment else message)
        more = len(errors.found) - MAX_ERRORS
        raise RemittanceFileError("; ".join(messages) + (f" (and {more} more)" if more > 0 else ""))


# --- Values ----------------------------------------------------------------------------------------------

def cents(segment: Segment, index: int, *, required: bool = True) -> int:
    text = segment.get(index)
    if not text:
        if required:
            raise _fail(segment, f"{segment.id}{index:02d} (an amount) is empty.")
        return 0
    try:
        amount = Decimal(text) * 100
    except InvalidOperation:
        raise _fail(segment, f"{segment.id}{index:02d} {text!r} is not an amount.") from None
    if amount != amount.to_integral_value():
        raise _fail(segment, f"{segment.id}{index:02d} {text!r} has fractions of a cent.")
    if abs(amount) > 100_000_000:
        raise _fail(segment, f"{segment.id}{index:02d} {text!r} is more than $1,000,000.")
    return int(amount)


def date(segment: Segment, index: int) -> dt.date:
    text = segment.get(index)
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise _fail(segment, f"{segment.id}{index:02d} {text!r} is not a date (CCYYMMDD).") from None


# --- The loops -------------------------------------------------------------------------------------------

def _read(segments: list[Segment]) -> list[RemittanceIn]:
    payments: list[RemittanceIn] = []
    payment: RemittanceIn | None = None
    claim: ClaimIn | None = None
    line: ServiceLineIn | None = None
    bpr: Segment | None = None
    claim_segment: Segment | None = None
    provider_adjustments = 0
    for segment in segments:
        kind = segment.id
        if kind == "ST":
            payment, claim, line, bpr, provider_adjustments = None, None, None, None, 0
        elif kind == "BPR":
            bpr = segment
            payment = RemittanceIn(payer_name="", payer_key="", payee_name="", payee_npi="", trace_number="",
                                   method=segment.get(4), paid_cents=cents(segment, 2), paid_on=date(segment, 16))
            payments.append(payment)
        elif payment is None:
            continue
        elif kind == "TRN" and segment.get(1) == "1":
            payment.trace_number = segment.get(2)
            payment.payer_key = segment.get(3)
        elif kind == "N1" and segment.get(1) == "PR":
            payment.payer_name = segment.get(2)
        elif kind == "REF" and segment.get(1) == "2U" and claim is None:
            payment.payer_key = payment.payer_key or segment.get(2)
        elif kind == "N1" and segment.get(1) == "PE":
            payment.payee_name = segment.get(2)
            if segment.get(3) == "XX":
                payment.payee_npi = segment.get(4)
        elif kind == "CLP":
            _close_claim(claim, claim_segment)
            claim_segment, line = segment, None
            claim = ClaimIn(claim_id=segment.get(1), status=segment.get(2), charge_cents=cents(segment, 3),
                            paid_cents=cents(segment, 4),
                            patient_responsibility_cents=cents(segment, 5, required=False),
                            payer_claim_number=segment.get(7), patient_last="", patient_first="", member_id="")
            payment.claims.append(claim)
        elif kind == "NM1" and claim is not None and segment.get(1) in ("QC", "IL"):
            if segment.get(1) == "QC":
                claim.patient_last, claim.patient_first = segment.get(3), segment.get(4)
            if segment.get(9) and (segment.get(1) == "QC" or not claim.member_id):
                claim.member_id = segment.get(9)
        elif kind == "SVC" and claim is not None:
            procedure = segment.get(1).split(segment.components)
            if procedure[0].strip() not in ("HC", "AD", "ER", "HP", "IV", "N4", "NU", "WK"):
                raise _fail(segment, f"SVC01 {segment.get(1)!r} does not start with a code qualifier such as HC.")
            line = ServiceLineIn(cpt_code=segment.part(1, 2).upper(),
                                 modifiers=[m.strip() for m in procedure[2:6] if m.strip()],
                                 charge_cents=cents(segment, 2), paid_cents=cents(segment, 3),
                                 units=segment.get(5) or "1", service_date=None)
            claim.lines.append(line)
        elif kind == "DTM" and line is not None and segment.get(1) in ("472", "150"):
            line.service_date = date(segment, 2)
        elif kind == "DTM" and claim is not None and line is None and segment.get(1) == "232":
            claim.statement_date = date(segment, 2)  # each service line gives its own; a claim without any uses it
        elif kind == "CAS" and claim is not None:
            adjustments = _adjustments(segment)
            if line is not None:
                line.adjustments += adjustments
            else:
                claim.adjustments += adjustments
        elif kind == "AMT" and line is not None and segment.get(1) == "B6":
            line.allowed_cents = cents(segment, 2)
        elif kind == "PLB":
            for index in range(3, len(segment.elements), 2):
                if segment.get(index):
                    provider_adjustments += cents(segment, index + 1)
        elif kind == "SE":
            _close_claim(claim, claim_segment)
            if payment is not None and bpr is not None:
                _close_payment(payment, bpr, provider_adjustments)
            claim, line = None, None
    return payments


def _adjustments(segment: Segment) -> list[Adjustment]:
    group = segment.get(1)
    if group not in ("CO", "PR", "OA", "PI", "CR"):
        raise _fail(segment, f"CAS01 {group!r} is not an adjustment group (CO, PR, OA, PI).")
    found = []
    for index in range(2, 20, 3):
        reason = segment.get(index)
        if reason:
            found.append(Adjustment(group, reason, cents(segment, index + 1)))
    if not found:
        raise _fail(segment, "the adjustment gives no reason code.")
    return found


def _close_claim(claim: ClaimIn | None, segment: Segment | None) -> None:
    if claim is None or segment is None:
        return
    if claim.adjustments and len(claim.lines) == 1:
        claim.lines[0].adjustments += claim.adjustments  # one line: the claim's adjustments are its own
    for line in claim.lines:
        adjusted = sum(a.amount_cents for a in line.adjustments)
        if line.charge_cents - adjusted != line.paid_cents:
            raise _fail(segment, f"claim {claim.claim_id}, line {line.cpt_code}: the charge "
                                 f"{line.charge_cents / 100:.2f} less its adjustments {adjusted / 100:.2f} is not "
                                 f"the {line.paid_cents / 100:.2f} paid; the file does not balance.")
    if claim.lines and sum(line.paid_cents for line in claim.lines) != claim.paid_cents:
        raise _fail(segment, f"claim {claim.claim_id}: CLP04 {claim.paid_cents / 100:.2f} is not the sum of its "
                             "service lines' payments.")


def _close_payment(payment: RemittanceIn, bpr: Segment, provider_adjustments: int) -> None:
    if not payment.trace_number:
        raise _fail(bpr, "the payment has no TRN*1 trace number after it.")
    if not payment.payer_name:
        raise _fail(bpr, "the payment has no payer (N1*PR).")
    payment.payer_key = payment.payer_key or payment.payer_name.upper()
    total = sum(c.paid_cents for c in payment.claims) - provider_adjustments
    if total != payment.paid_cents:
        raise _fail(bpr, f"the payment total {payment.paid_cents / 100:.2f} is not its claims' "
                         f"{total / 100:.2f} (less provider-level adjustments); the file does not balance.")


def remittance_parse(data: bytes) -> list[RemittanceIn]:
    """The payments an 835 file reports (one per ST/SE transaction). Raises RemittanceFileError."""
    text = _decode(data)
    _check_isa(text)
    segments, _ = _segments(text)
    _check_kind(segments)
    _check_map(text, segments)
    payments = _read(segments)
    if not payments:
        raise RemittanceFileError("The 835 reports no payment (no BPR segment).")
    return payments
