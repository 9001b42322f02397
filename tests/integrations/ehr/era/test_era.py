"""ERA (X12 835) files as insurers send them, posted against sessions planted to match some of their lines.

The fixtures (fixtures/): Aetna paying four claims as primary (deductible and coinsurance, a copay, a denial,
a patient the practice does not know); Blue Cross paying Jane Doe's claim as secondary by check, with other
separators (| > { and !, CRLF between segments); Aetna reversing John Roe's claim and paying it again with
another copay; an 837 claim file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import (
    AppointmentStatus,
    FindingKind,
    InsurancePayment,
    ReconciliationFinding,
    Remittance,
    RemittanceLine,
    RemittanceLineStatus,
)
from billing.services.pricing import deductible_remaining
from billing.services.remittances import remittance_line_match
from integrations.ehr.era.posting import RemittanceFileError
from integrations.ehr.era.x12 import remittance_parse
from tests.factories import AppointmentFactory, ClientFactory, CoverageFactory
from tests.integrations.ehr.era.conftest import FIXTURES, NOW, NY, PRIMARY, fixture, post, state


def eob(appointment: Any, payer: str = "AETNA") -> InsurancePayment:
    return InsurancePayment.objects.get(appointment=appointment, payer_name=payer)


def findings(kind: str, appointment: Any) -> list[ReconciliationFinding]:
    return list(ReconciliationFinding.objects.filter(kind=kind, appointment=appointment, gone_at__isnull=True))


# --- Reading -----------------------------------------------------------------------------------------------

def test_reads_payer_payee_payment_claims_lines_adjustments_and_patient() -> None:
    [payment] = remittance_parse(fixture("aetna_primary.835"))
    assert (payment.payer_name, payment.payee_name, payment.payee_npi) == ("AETNA", "RIVERBEND COUNSELING",
                                                                           "1234567893")
    assert (payment.paid_cents, payment.method, payment.trace_number, payment.paid_on) == (
        23_100, "ACH", "EFT0001", dt.date(2026, 11, 20))
    jane, john, mary, stranger = payment.claims
    assert (jane.claim_id, jane.status, jane.charge_cents, jane.paid_cents, jane.patient_responsibility_cents) == (
        "RB1001", "1", 20_000, 5_600, 6_400)
    assert (jane.patient_first, jane.patient_last, jane.member_id) == ("JANE", "DOE", "W111111111")
    [line] = jane.lines
    assert (line.cpt_code, line.charge_cents, line.paid_cents, line.units, line.service_date, line.allowed) == (
        "90837", 20_000, 5_600, "1", dt.date(2026, 11, 2), 12_000)
    assert [(a.group, a.reason, a.amount_cents) for a in line.adjustments] == [
        ("CO", "45", 8_000), ("PR", "1", 5_000), ("PR", "2", 1_400)]
    assert (line.pr("1"), line.pr("2"), john.lines[0].pr("3")) == (5_000, 1_400, 2_500)
    assert mary.status == "4" and mary.lines[0].adjustments[0].group == "CO"
    assert stranger.lines[0].modifiers == ["95"]


def test_the_delimiters_come_from_the_isa() -> None:
    data = fixture("bcbs_secondary.835")
    assert data.startswith(b"ISA|00|") and b"HC>90837" in data and b"!\r\n" in data
    [payment] = remittance_parse(data)
    assert (payment.payer_name, payment.method, payment.trace_number, payment.paid_cents) == (
        "BLUE CROSS BLUE SHIELD", "CHK", "CHK55501", 4_000)
    [claim] = payment.claims
    assert (claim.status, claim.lines[0].cpt_code, claim.lines[0].pr()) == ("2", "90837", 2_400)
    # The same file with the usual separators reads the same.
    usual = data.replace(b"|", b"*").replace(b">", b":").replace(b"!", b"~").replace(b"*{*", b"*^*")
    assert remittance_parse(usual) == [payment]


# --- Posting -----------------------------------------------------------------------------------------------

def test_primary_posts_matched_lines_and_leaves_the_stranger_for_staff(planted: dict[str, Any]) -> None:
    [report] = post("aetna_primary.835")
    assert report.counts == {"posted": 3, "unmatched": 1, "already posted": 0, "reversal": 0}

    # Jane: $120.00 allowed, $56.00 paid, $64.00 hers ($50.00 deductible, $14.00 coinsurance), as charged.
    jane = eob(planted["jane_session"])
    assert (jane.allowed_cents, jane.paid_cents, jane.patient_responsibility_cents, jane.paid_on) == (
        12_000, 5_600, 6_400, dt.date(2026, 11, 20))
    assert not findings(FindingKind.AMOUNT_MISMATCH, planted["jane_session"])
    # The deductible met is now the insurer's: $100.00 before, plus the $50.00 of this session.
    coverage = planted["jane"].coverages.get()
    assert coverage.deductible_met_cents == 15_000 and coverage.coinsurance_percent == 20
    assert deductible_remaining(coverage) == 35_000  # what the next session is priced with

    john = eob(planted["john_session"])
    assert (john.paid_cents, john.patient_responsibility_cents) == (9_500, 2_500)
    assert not findings(FindingKind.AMOUNT_MISMATCH, planted["john_session"])

    # Mary's claim was denied with a contractual adjustment: she owes nothing, and was charged $24.00.
    [mismatch] = findings(FindingKind.AMOUNT_MISMATCH, planted["mary_session"])
    assert (mismatch.expected_cents, mismatch.actual_cents) == (0, 2_400)
    assert "ERA EFT0001 claim RB1003" in mismatch.detail

    stranger = RemittanceLine.objects.get(claim_id="RB1004")
    assert stranger.status == RemittanceLineStatus.UNMATCHED and stranger.appointment is None
    assert "No client has member id W999999999" in stranger.detail
    assert (stranger.cpt_code, stranger.modifiers, stranger.coinsurance_cents) == ("90834", "95", 2_000)


def test_the_insurers_coinsurance_corrects_the_coverage(planted: dict[str, Any]) -> None:
    planted["jane"].coverages.update(coinsurance_percent=25)  # as if the EHR had it wrong all along
    post("aetna_primary.835")
    coverage = planted["jane"].coverages.get()
    # $14.00 of the $70.00 left after the deductible: 20%, for the next sessions.
    assert coverage.coinsurance_percent == 20
    line = RemittanceLine.objects.get(claim_id="RB1001")
    assert "coinsurance 25% -> 20%" in line.detail and "deductible met $100.00 -> $150.00" in line.detail


def test_the_same_file_twice_changes_nothing(planted: dict[str, Any]) -> None:
    post("aetna_primary.835")
    before = state()
    [again] = post("aetna_primary.835")
    assert state() == before
    assert again.counts["already posted"] == 4 and "was posted on" in again.notes[0]


def test_a_dry_run_reports_what_posting_does_and_writes_nothing(planted: dict[str, Any]) -> None:
    before = state()
    [preview] = post("aetna_primary.835", dry_run=True)
    assert state() == before
    [posted] = post("aetna_primary.835")
    assert [(line.outcome, line.detail) for line in preview.lines] == [
        (line.outcome, line.detail) for line in posted.lines]


def test_secondary_payer_with_other_delimiters_matched_by_name(planted: dict[str, Any]) -> None:
    post("aetna_primary.835")
    [report] = post("bcbs_secondary.835")
    assert report.counts["posted"] == 1
    # Blue Cross' member id is on no coverage: Jane is the only client of that name, with one 90837 that day.
    bcbs = eob(planted["jane_session"], "BLUE CROSS BLUE SHIELD")
    assert (bcbs.paid_cents, bcbs.patient_responsibility_cents) == (4_000, 2_400)
    # After the secondary she owes $24.00 of the $64.00 she was charged: staff settle the difference.
    [mismatch] = findings(FindingKind.AMOUNT_MISMATCH, planted["jane_session"])
    assert (mismatch.expected_cents, mismatch.actual_cents, mismatch.insurance_payment) == (2_400, 6_400, bcbs)
    # A secondary payer's figures are not the primary coverage's benefits.
    assert planted["jane"].coverages.get().deductible_met_cents == 15_000


def test_a_reversal_takes_back_the_claim_and_the_correction_is_posted(planted: dict[str, Any]) -> None:
    post("aetna_primary.835")
    first = eob(planted["john_session"])
    [report] = post("aetna_reversal.835")
    assert [line.outcome for line in report.lines] == ["reversal", "posted"]
    assert not InsurancePayment.objects.filter(pk=first.pk).exists()
    original = RemittanceLine.objects.get(remittance__trace_number="EFT0001", claim_id="RB1002")
    assert original.status == RemittanceLineStatus.REVERSED and "EFT0002" in original.detail
    corrected = eob(planted["john_session"])
    assert (corrected.paid_cents, corrected.patient_responsibility_cents) == (10_000, 2_000)
    assert corrected.reference.startswith("ERA EFT0002")
    [mismatch] = findings(FindingKind.AMOUNT_MISMATCH, planted["john_session"])
    assert (mismatch.expected_cents, mismatch.actual_cents) == (2_000, 2_500)
    # The insurer's copay is now $20.00: the next sessions are priced with it.
    assert planted["john"].coverages.get().copay_cents == 2_000
    before = state()
    post("aetna_reversal.835")
    assert state() == before


def test_a_claim_paid_without_service_lines_posts_on_its_statement_date(planted: dict[str, Any]) -> None:
    lines = (b"NM1*QC*1*ROE*JOHN****MI*W222222222~\nSVC*HC:90837*200.00*95.00**1~\nDTM*472*20261103~\n"
             b"CAS*CO*45*80.00~\nCAS*PR*3*25.00~\nAMT*B6*120.00~\n")
    claim_level = b"CAS*CO*45*80.00~\nCAS*PR*3*25.00~\nNM1*QC*1*ROE*JOHN****MI*W222222222~\nDTM*232*20261103~\n"
    assert lines in PRIMARY
    post("claim-level.835", data=PRIMARY.replace(lines, claim_level).replace(b"SE*40*", b"SE*38*"))
    john = eob(planted["john_session"])
    assert (john.allowed_cents, john.paid_cents, john.patient_responsibility_cents) == (12_000, 9_500, 2_500)


def test_ambiguous_is_unmatched_never_guessed(planted: dict[str, Any]) -> None:
    # A second Jane Doe and a second session for John that day: neither line is guessed.
    ClientFactory(first_name="Jane", last_name="Doe")
    AppointmentFactory(starts_at=dt.datetime(2026, 11, 3, 15, tzinfo=NY), status=AppointmentStatus.COMPLETED,
                       clients=[planted["john"]])
    post("aetna_primary.835")
    [report] = post("bcbs_secondary.835")
    line = RemittanceLine.objects.get(remittance__trace_number="CHK55501")
    assert line.status == RemittanceLineStatus.UNMATCHED and "Several clients are named" in line.detail
    john = RemittanceLine.objects.get(remittance__trace_number="EFT0001", claim_id="RB1002")
    assert john.status == RemittanceLineStatus.UNMATCHED and "several 90837 sessions" in john.detail
    assert report.counts["unmatched"] == 1


def test_staff_match_a_line_by_hand(planted: dict[str, Any]) -> None:
    post("aetna_primary.835")
    stranger: Any = CoverageFactory(client__first_name="Samuel", client__last_name="Stranger",
                                       member_id="S-1").client
    appointment: Any = AppointmentFactory(starts_at=dt.datetime(2026, 11, 5, 9, tzinfo=NY),
                                                  service_code="90834", status=AppointmentStatus.COMPLETED,
                                                  clients=[stranger])
    line = RemittanceLine.objects.get(claim_id="RB1004")
    remittance_line_match(line=line, appointment=appointment, client=stranger, actor="ana", now=NOW)
    line.refresh_from_db()
    assert (line.status, line.matched_by, line.appointment) == (RemittanceLineStatus.POSTED, "ana", appointment)
    assert eob(appointment).paid_cents == 8_000
    # No charge for that session: the client owes $20.00 by the EOB, and was charged nothing.
    [mismatch] = findings(FindingKind.AMOUNT_MISMATCH, appointment)
    assert (mismatch.expected_cents, mismatch.actual_cents) == (2_000, 0)


# --- Refused files -----------------------------------------------------------------------------------------

BROKEN = {
    "an amount with a letter": (PRIMARY.replace(b"CLP*RB1002*1*200.00", b"CLP*RB1002*1*2OO.00"),
                                "Segment 23 (CLP)", "CLP03"),
    "a wrong segment count": (PRIMARY.replace(b"SE*40*0001", b"SE*39*0001"), "Segment 42 (SE)", "SE count"),
    "a segment cut off at the end": (PRIMARY[:PRIMARY.index(b"GE*1*1")] + b"GE*1", "After segment 42 (SE)",
                                     "not a complete segment"),
    "a required segment missing": (PRIMARY.replace(b"PER*BL*PROVIDER SERVICES*TE*8006245866~\n", b"")
                                   .replace(b"SE*40*", b"SE*39*"), "Segment 10 (N1)", "PER"),
    "a line that does not balance": (PRIMARY.replace(b"CAS*CO*45*80.00~\nCAS*PR*3", b"CAS*CO*45*70.00~\nCAS*PR*3"),
                                     "Segment 23 (CLP)", "does not balance"),
    "a header that is not fixed-width": (PRIMARY.replace(b"*ZZ*AETNA          *", b"*ZZ*AETNA*", 1),
                                         "Segment 1 (ISA)", "fixed-width"),
    "a group header missing": (PRIMARY.replace(b"GS*HP*AETNA*RIVERBEND*20261120*0900*1*X*005010X221A1~\n", b""),
                               "Segment 42", "envelope"),
    "an empty segment": (PRIMARY.replace(b"DTM*405*20261120~", b"DTM*405*20261120~~"), "After segment 6 (DTM)",
                         "not a complete segment"),
    "a CSV file": (b"Client,Date,Paid\nJane Doe,11/02/2026,56.00\n", "not an X12 file", "ISA"),
    "a date that is not one": (PRIMARY.replace(b"DTM*472*20261103", b"DTM*472*20261303"), "Segment 26 (DTM)",
                               "DTM02"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_files_name_the_segment_and_change_nothing(planted: dict[str, Any], case: str) -> None:
    data, where, what = BROKEN[case]
    before = state()
    with pytest.raises(RemittanceFileError) as error:
        post("broken.835", data=data)
    assert where in str(error.value) and what in str(error.value), str(error.value)
    assert state() == before


def test_an_837_is_refused_as_such(planted: dict[str, Any]) -> None:
    with pytest.raises(RemittanceFileError, match=r"Segment 2 \(GS\): this is an 837 claim file"):
        post("claim.837")
    assert not Remittance.objects.exists()


def test_the_command_posts_and_refuses(planted: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    call_command("post_era", str(FIXTURES / "aetna_primary.835"))
    out = capsys.readouterr().out
    assert "Posted: aetna_primary.835: AETNA ACH EFT0001 of $231.00" in out and "unmatched" in out
    with pytest.raises(CommandError):
        call_command("post_era", str(FIXTURES / "claim.837"))
    assert "Segment 2 (GS)" in capsys.readouterr().err
    assert InsurancePayment.objects.count() == 3
