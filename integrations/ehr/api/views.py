"""REST API v1 (docs/api.md): each view parses, calls one service, and answers.

Reads are scoped to the key's source: a key sees the records its EHR pushed (external ids are unique
only within a source).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from auditlog.context import auditlog_value, set_extra_data
from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.audit.access import auditlog_context_restored
from billing.csv_safe import csv_safe_writer, safe_cell
from billing.models import (
    PAID_STATUSES,
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    Clinician,
    GoodFaithEstimate,
    InsurancePayment,
    Participant,
    PaymentPlan,
    PolicyAcknowledgment,
    Practice,
)
from billing.selectors import client_aging, client_balance, clients_with_balance, findings_for_source
from billing.selectors.statements import month_last
from billing.services import intake
from billing.services.cards import enrollment_link_send
from billing.services.estimates import estimate_billed_cents
from billing.services.reconciliation import WeekInvalid, iso_week_monday, reconciliation_run, week_bounds
from billing.services.statements import (
    MONTH_PATTERN,
    last_month_over,
    month_is_over,
    month_parse,
    statement_for,
    statement_pdf,
)
from integrations.ehr.api import events as ehr_events
from integrations.ehr.api import serializers as api
from integrations.ehr.api.auth import ApiKeyAuthentication, ApiKeyThrottle, HasApiKey
from integrations.ehr.api.errors import InvalidInput, NotFound
from integrations.ehr.api.fields import (
    EXTERNAL_ID_PATTERN,
    ExternalId,
    FilterDateTime,
    QueryBoolean,
    external_id_validator,
    iso_week_pattern,
)
from integrations.ehr.api.pagination import CURSOR_PATTERN, IdCursorPagination
from integrations.ehr.api.parsers import LimitedJSONParser, X12OctetParser, X12Parser, X12TextParser
from integrations.ehr.era.posting import RemittanceFileError, era_post
from integrations.ehr.models import ApiKey


class AsciiJSONRenderer(JSONRenderer):
    # Escaping non-ASCII keeps an echoed lone surrogate (from bad input) from failing to encode: never a 500.
    ensure_ascii = True


class PdfRenderer(BaseRenderer):
    media_type = "application/pdf"
    format = "pdf"
    charset = None
    render_style = "binary"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: Mapping[str, Any] | None = None) -> bytes:
        return data if isinstance(data, bytes) else b""


class CsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: Mapping[str, Any] | None = None) -> bytes:
        out = io.StringIO()
        if isinstance(data, dict) and "findings" in data:
            fields = list(api.FindingOut().fields)
            writer = csv_safe_writer(out)
            writer.writerow(fields)
            writer.writerows([row.get(name) for name in fields] for row in data["findings"])
        else:  # an error, as one line of text
            out.write(safe_cell(data.get("detail", data) if isinstance(data, dict) else data) + "\n")
        return out.getvalue().encode("utf-8", "backslashreplace")


# --- Schema helpers --------------------------------------------------------------------------------------

class ErrorOut(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


FIELD_ERRORS = OpenApiResponse(
    {"type": "object", "additionalProperties": {}, "description": "Messages by field name"},
    description="Invalid input: messages by field; nothing was written.")
COMMON = {401: OpenApiResponse(ErrorOut, description="Missing, wrong or revoked API key."),
          429: OpenApiResponse(ErrorOut, description="Too many requests for this key; see Retry-After.")}
NOT_FOUND = {404: OpenApiResponse(ErrorOut, description="No such record from this key's source.")}
WRITE = {400: FIELD_ERRORS, 413: OpenApiResponse(ErrorOut, description="The body is larger than 5 MB."),
         415: OpenApiResponse(ErrorOut, description="The body is not JSON.")}
CONFLICT = {409: OpenApiResponse(ErrorOut, description="The change conflicts with money already moved; the "
                                                       "message says what to do instead.")}
LIST_ERRORS = {400: FIELD_ERRORS}
EXTERNAL_ID = OpenApiParameter("external_id", {"type": "string", "pattern": EXTERNAL_ID_PATTERN, "maxLength": 100},
                               OpenApiParameter.PATH, description="The EHR's own id for the record.")


PAGE_PARAMETERS = [
    OpenApiParameter("cursor", {"type": "string", "pattern": CURSOR_PATTERN},
                     description="The position to read from: use the next or previous link as given."),
    OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": IdCursorPagination.max_page_size},
                     description=f"Records per page (default {IdCursorPagination.page_size})."),
]


def page_of(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    """The schema of a list page as IdCursorPagination answers it: next and previous links, and the results."""
    name = serializer_class.__name__.removesuffix("Out")
    page = type(f"{name}Page", (serializers.Serializer,), {
        "next": serializers.URLField(allow_null=True, help_text="The next page, or null at the end."),
        "previous": serializers.URLField(allow_null=True, help_text="The previous page, or null on the first."),
        "results": serializer_class(many=True),
        "__module__": __name__,
    })
    return page()


def responses(ok: dict[int, Any], *extra: dict[int, Any]) -> dict[int, Any]:
    merged = dict(ok)
    for more in (*extra, COMMON):
        merged.update(more)
    return merged


# --- Base ------------------------------------------------------------------------------------------------

class EhrView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasApiKey]
    throttle_classes = [ApiKeyThrottle]
    parser_classes = [LimitedJSONParser]
    renderer_classes = [AsciiJSONRenderer]

    @property
    def api_key(self) -> ApiKey:
        assert isinstance(self.request.auth, ApiKey)
        return self.request.auth

    @property
    def source(self) -> str:
        return self.api_key.source

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        # DRF answers an unknown ?format= with 404, as if the record were missing: it is a bad parameter.
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            formats = ", ".join(renderer.format for renderer in self.get_renderers())
            raise exceptions.ValidationError({"format": [f"Give one of: {formats}."]}) from None

    def new_push(self) -> intake.Push:
        return intake.Push(source=self.source, now=timezone.now())

    @contextmanager
    def audited(self) -> Iterator[None]:
        """Changes made inside are logged (django-auditlog) with the source's service account as actor."""
        previous = auditlog_value.get(None)
        extra = {k: v for k, v in (previous or {}).items() if k in ("remote_addr", "remote_port")}
        with auditlog_context_restored(), set_extra_data({**extra, "actor": self.api_key.user}):
            yield

    def validated(self, serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> Any:
        serializer = serializer_class(data=data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def path_id(self, external_id: str, *, writing: bool = False) -> str:
        try:
            external_id_validator(external_id)
        except Exception:
            if writing:
                raise InvalidInput({"external_id": [str(external_id_validator.message)]}) from None
            raise NotFound("No such record.") from None
        return external_id

    def paginated(self, queryset: QuerySet[Any], serializer_class: type[serializers.Serializer]) -> Response:
        paginator = IdCursorPagination()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)

    def filters(self, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
        return dict(self.validated(serializer_class, self.request.query_params.dict()))


def created_or_ok(outcome: intake.Outcome[Any]) -> int:
    return status.HTTP_201_CREATED if outcome.status == intake.CREATED else status.HTTP_200_OK


# --- Clinicians ------------------------------------------------------------------------------------------

class ClinicianList(EhrView):
    @extend_schema(operation_id="clinicians_list", parameters=PAGE_PARAMETERS,
                   responses=responses({200: page_of(api.ClinicianOut)}, LIST_ERRORS), tags=["clinicians"])
    def get(self, request: Request) -> Response:
        return self.paginated(Clinician.objects.filter(source=self.source), api.ClinicianOut)


class ClinicianDetail(EhrView):
    def get_object(self, external_id: str) -> Clinician:
        clinician = Clinician.objects.filter(source=self.source, external_id=self.path_id(external_id)).first()
        if clinician is None:
            raise NotFound(f"No clinician with external id {external_id!r} from this source.")
        return clinician

    @extend_schema(parameters=[EXTERNAL_ID], responses=responses({200: api.ClinicianOut}, NOT_FOUND),
                   tags=["clinicians"])
    def get(self, request: Request, external_id: str) -> Response:
        return Response(api.ClinicianOut(self.get_object(external_id)).data)

    @extend_schema(parameters=[EXTERNAL_ID], request=api.ClinicianIn,
                   responses=responses({200: api.ClinicianOut, 201: api.ClinicianOut}, WRITE), tags=["clinicians"],
                   description="Create (201) or replace (200) the clinician. An identical body changes nothing.")
    def put(self, request: Request, external_id: str) -> Response:
        return self._write(external_id, partial=False)

    @extend_schema(parameters=[EXTERNAL_ID], request=api.ClinicianIn(partial=True),
                   responses=responses({200: api.ClinicianOut}, WRITE, NOT_FOUND), tags=["clinicians"])
    def patch(self, request: Request, external_id: str) -> Response:
        return self._write(external_id, partial=True)

    def _write(self, external_id: str, *, partial: bool) -> Response:
        external_id = self.path_id(external_id, writing=not partial)
        data = self.validated(api.ClinicianIn, self.request.data, partial=partial)
        with self.audited():
            outcome = intake.clinician_put(push=self.new_push(), external_id=external_id, data=data,
                                             partial=partial)
        return Response(api.ClinicianOut(outcome.obj).data, status=created_or_ok(outcome))


# --- Clients ---------------------------------------------------------------------------------------------

class ClientFilter(serializers.Serializer):
    active = QueryBoolean(required=False, help_text="Only active (true) or inactive (false) clients.")
    updated_after = FilterDateTime(required=False, help_text="Only clients changed after this moment.")


def client_queryset(source: str) -> QuerySet[Client]:
    return clients_with_balance(Client.objects.filter(source=source))


class ClientList(EhrView):
    @extend_schema(operation_id="clients_list", parameters=[*PAGE_PARAMETERS, ClientFilter],
                   responses=responses({200: page_of(api.ClientOut)}, LIST_ERRORS), tags=["clients"])
    def get(self, request: Request) -> Response:
        f = self.filters(ClientFilter)
        clients = client_queryset(self.source)
        if f.get("active") is not None:
            clients = clients.filter(active=f["active"])
        if f.get("updated_after"):
            clients = clients.filter(updated_at__gt=f["updated_after"])
        return self.paginated(clients, api.ClientOut)


class ClientView(EhrView):
    def get_client(self, external_id: str) -> Client:
        client = Client.objects.filter(source=self.source, external_id=self.path_id(external_id)).first()
        if client is None:
            raise NotFound(f"No client with external id {external_id!r} from this source.")
        return client

    def represent(self, external_id: str) -> dict[str, Any]:
        return api.ClientOut(client_queryset(self.source).get(external_id=external_id)).data


class ClientDetail(ClientView):
    @extend_schema(parameters=[EXTERNAL_ID], responses=responses({200: api.ClientOut}, NOT_FOUND), tags=["clients"])
    def get(self, request: Request, external_id: str) -> Response:
        return Response(self.represent(self.get_client(external_id).external_id))

    @extend_schema(parameters=[EXTERNAL_ID], request=api.ClientIn,
                   responses=responses({200: api.ClientOut, 201: api.ClientOut}, WRITE), tags=["clients"],
                   description="Create (201) or replace (200) the client. An identical body changes nothing. "
                               "A change of billing type or rate re-prices charges not yet taken.")
    def put(self, request: Request, external_id: str) -> Response:
        return self._write(external_id, partial=False)

    @extend_schema(parameters=[EXTERNAL_ID], request=api.ClientIn(partial=True),
                   responses=responses({200: api.ClientOut}, WRITE, NOT_FOUND), tags=["clients"])
    def patch(self, request: Request, external_id: str) -> Response:
        return self._write(external_id, partial=True)

    def _write(self, external_id: str, *, partial: bool) -> Response:
        external_id = self.path_id(external_id, writing=not partial)
        data = self.validated(api.ClientIn, self.request.data, partial=partial)
        with self.audited():
            outcome = intake.client_put(push=self.new_push(), external_id=external_id, data=data, partial=partial)
        return Response(self.represent(external_id), status=created_or_ok(outcome))


def coverage_representation(coverage: Any, client: Client) -> dict[str, Any]:
    data = {name: getattr(coverage, name) for name in intake.COVERAGE_OUT_FIELDS}
    data.update(client=client.external_id, payer_id=coverage.payer.payer_id if coverage.payer else "")
    return api.CoverageOut(data).data


class CoverageDetail(ClientView):
    @extend_schema(parameters=[EXTERNAL_ID], responses=responses({200: api.CoverageOut}, NOT_FOUND),
                   tags=["clients"], operation_id="clients_coverage_retrieve")
    def get(self, request: Request, external_id: str) -> Response:
        client = self.get_client(external_id)
        coverage = intake.coverage_current(client)
        if coverage is None:
            raise NotFound(f"Client {external_id!r} has no coverage.")
        return Response(coverage_representation(coverage, client))

    @extend_schema(parameters=[EXTERNAL_ID], request=api.CoverageIn, operation_id="clients_coverage_update",
                   responses=responses({200: api.CoverageOut, 201: api.CoverageOut}, WRITE, NOT_FOUND),
                   tags=["clients"],
                   description="The client's current benefits: replaces the current coverage record (201 when "
                               "the client had none). An unknown payer_id adds the payer. Charges not yet taken "
                               "are re-priced.")
    def put(self, request: Request, external_id: str) -> Response:
        return self._write(external_id, partial=False)

    @extend_schema(parameters=[EXTERNAL_ID], request=api.CoverageIn(partial=True),
                   operation_id="clients_coverage_partial_update",
                   responses=responses({200: api.CoverageOut}, WRITE, NOT_FOUND), tags=["clients"])
    def patch(self, request: Request, external_id: str) -> Response:
        return self._write(external_id, partial=True)

    def _write(self, external_id: str, *, partial: bool) -> Response:
        external_id = self.path_id(external_id)
        data = self.validated(api.CoverageIn, self.request.data, partial=partial)
        with self.audited():
            outcome = intake.coverage_put(push=self.new_push(), client_external_id=external_id, data=data,
                                            partial=partial)
        coverage = intake.coverage_current(outcome.obj.client)
        return Response(coverage_representation(coverage, outcome.obj.client), status=created_or_ok(outcome))


class PolicyAcknowledgmentCreate(ClientView):
    @extend_schema(parameters=[EXTERNAL_ID], request=api.PolicyAcknowledgmentIn,
                   responses=responses({200: api.PolicyAcknowledgmentOut, 201: api.PolicyAcknowledgmentOut},
                                       WRITE, NOT_FOUND), tags=["clients"],
                   description="Record that the client acknowledged a version of the cancellation policy (201); "
                               "the same version again changes nothing (200).")
    def post(self, request: Request, external_id: str) -> Response:
        external_id = self.path_id(external_id)
        data = self.validated(api.PolicyAcknowledgmentIn, request.data)
        with self.audited():
            outcome = intake.policy_acknowledgment_record(push=self.new_push(), client_external_id=external_id,
                                                            data=data)
        return Response(self._out(outcome.obj, external_id), status=created_or_ok(outcome))

    @staticmethod
    def _out(ack: PolicyAcknowledgment, external_id: str) -> dict[str, Any]:
        current = Practice.load().cancellation_policy_version
        return api.PolicyAcknowledgmentOut({
            "client": external_id, "policy_version": ack.policy_version, "acknowledged_at": ack.acknowledged_at,
            "is_current_policy": ack.policy_version == current}).data


class PolicyDetail(EhrView):
    @extend_schema(responses=responses({200: api.PolicyOut}), tags=["policy"],
                   description="The practice's current cancellation policy: the version a client acknowledges "
                               "(a no-show or late-cancel fee is charged only with the current one), its text, "
                               "the day it took effect and the fees.")
    def get(self, request: Request) -> Response:
        practice = Practice.load()
        return Response(api.PolicyOut({
            "version": practice.cancellation_policy_version, "text": practice.cancellation_policy_text,
            "effective_date": practice.cancellation_policy_effective_on,
            "fees": {"no_show_cents": practice.no_show_fee_cents, "late_cancel_cents": practice.late_cancel_fee_cents,
                     "review_hours": practice.fee_review_hours}}).data)


class EnrollmentLinkCreate(ClientView):
    @extend_schema(parameters=[EXTERNAL_ID], request=api.EnrollmentLinkIn,
                   responses=responses({201: api.EnrollmentLinkOut}, WRITE, NOT_FOUND),
                   tags=["clients"],
                   description="A secure, expiring link where the client saves a card; with send_email the "
                               "practice also emails it to the client.")
    def post(self, request: Request, external_id: str) -> Response:
        client = self.get_client(external_id)
        data = self.validated(api.EnrollmentLinkIn, request.data)
        with self.audited():
            issued = enrollment_link_send(client=client, send_email=data["send_email"], now=timezone.now(),
                                          actor=f"api:{self.source}")
        return Response(api.EnrollmentLinkOut({"url": issued.url, "expires_at": issued.expires_at}).data,
                        status=status.HTTP_201_CREATED)


class BalanceDetail(ClientView):
    @extend_schema(parameters=[EXTERNAL_ID], responses=responses({200: api.BalanceOut}, NOT_FOUND), tags=["clients"])
    def get(self, request: Request, external_id: str) -> Response:
        client = self.get_client(external_id)
        today = timezone.now().astimezone(Practice.current_zone()).date()
        aging = client_aging(client, today)
        return Response(api.BalanceOut({"client": client.external_id, "balance_cents": client_balance(client),
                                        "aging": aging.as_dict(), "as_of": today}).data)


class StatementQuery(serializers.Serializer):
    month = serializers.RegexField(MONTH_PATTERN, required=False, help_text="YYYY-MM (default: the last month "
                                   "that is over in the practice's zone).", error_messages={
                                       "invalid": "Give a month as YYYY-MM, such as 2026-11 (years 1900 to 2199)."})


class StatementDetail(ClientView):
    renderer_classes = [AsciiJSONRenderer, PdfRenderer]

    @extend_schema(
        operation_id="clients_statements_retrieve",
        parameters=[EXTERNAL_ID, StatementQuery,
                    OpenApiParameter("format", str, enum=["json", "pdf"], description="pdf for the PDF.")],
        responses={**{(code, "application/json"): answer
                      for code, answer in responses({200: api.StatementOut}, LIST_ERRORS, NOT_FOUND).items()},
                   (200, "application/pdf"): OpenApiTypes.BINARY},
        tags=["clients"],
        description="The client's monthly statement: as issued (frozen as it was emailed) if it was, else as the "
                    "ledger has it now (the month so far, for the current month). With `format=pdf`, the PDF; "
                    "errors are JSON either way.")
    def get(self, request: Request, external_id: str) -> Response:
        client = self.get_client(external_id)
        query = self.filters(StatementQuery)
        now = timezone.now()
        practice = Practice.load()
        month = month_parse(query["month"]) if "month" in query else last_month_over(now, practice)
        statement = statement_for(client=client, month=month, now=now)
        if request.accepted_renderer.format == "pdf":
            response = Response(statement_pdf(statement=statement, now=now))
            response["Content-Disposition"] = (
                f'attachment; filename="statement-{month:%Y-%m}-{client.external_id}.pdf"')
            return response
        return Response(api.StatementOut({
            "client": client.external_id, "month": f"{month:%Y-%m}", "starts": month, "ends": month_last(month),
            "issued_at": statement.issued_at, "final": month_is_over(month, now, practice),
            "opening_cents": statement.opening_cents, "charges_cents": statement.charges_cents,
            "payments_cents": statement.payments_cents, "refunds_cents": statement.refunds_cents,
            "adjustments_cents": statement.adjustments_cents, "closing_cents": statement.closing_cents,
            "sessions": statement.sessions,
            "aging": {"current": statement.aging_current_cents, "days_31_60": statement.aging_31_60_cents,
                      "days_61_90": statement.aging_61_90_cents, "days_over_90": statement.aging_over_90_cents},
            "lines": statement.lines}).data)

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        # An error asked for as a PDF is answered as JSON: there is no PDF of a refusal.
        if response.status_code >= 400 and isinstance(getattr(request, "accepted_renderer", None), PdfRenderer):
            request.accepted_renderer, request.accepted_media_type = AsciiJSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


class PaymentPlanList(ClientView):
    @extend_schema(parameters=[EXTERNAL_ID], responses=responses({200: api.PaymentPlansOut}, NOT_FOUND),
                   tags=["clients"], description="The client's payment plans, newest first, with each installment "
                                                 "and what it paid.")
    def get(self, request: Request, external_id: str) -> Response:
        client = self.get_client(external_id)
        plans = PaymentPlan.objects.filter(client=client).prefetch_related("installments__charge").order_by(
            "-offered_at", "-pk")
        return Response(api.PaymentPlansOut({"client": client.external_id,
                                             "plans": [_plan_representation(plan) for plan in plans]}).data)


def _plan_representation(plan: PaymentPlan) -> dict[str, Any]:
    installments = []
    for installment in sorted(plan.installments.all(), key=lambda i: i.number):
        charge = installment.charge
        paid = charge is not None and charge.status in PAID_STATUSES
        installments.append({
            "number": installment.number, "due_on": installment.due_on, "agreed_cents": installment.amount_cents,
            "amount_cents": (0 if charge.status == ChargeStatus.CANCELED else charge.amount_cents) if charge
            else installment.amount_cents,
            "charge": charge.pk if charge else None, "status": charge.status if charge else None, "paid": paid})
    return {"id": plan.pk, "status": plan.status, "total_cents": plan.total_cents,
            "paid_cents": sum(i["amount_cents"] for i in installments if i["paid"]),
            "lapse_after_days": plan.lapse_after_days, "offered_at": plan.offered_at, "agreed_at": plan.agreed_at,
            "ended_at": plan.ended_at, "end_reason": plan.end_reason, "installments": installments}


class EstimateList(ClientView):
    @extend_schema(parameters=[EXTERNAL_ID], responses=responses({200: api.EstimateOut(many=True)}, NOT_FOUND),
                   tags=["clients"])
    def get(self, request: Request, external_id: str) -> Response:
        """The client's good faith estimates, newest first, each with what the dispute guard counts as billed."""
        client = self.get_client(external_id)
        practice = Practice.load()
        estimates = list(GoodFaithEstimate.objects.filter(client=client).prefetch_related("lines")
                         .order_by("-issued_at", "-pk")[:100])
        for estimate in estimates:
            estimate.billed_cents = estimate_billed_cents(estimate=estimate, practice=practice)  # type: ignore[attr-defined]
        return Response(api.EstimateOut(estimates, many=True).data)


# --- Appointments ----------------------------------------------------------------------------------------

def appointment_queryset(source: str) -> QuerySet[Appointment]:
    return (Appointment.objects.filter(source=source).select_related("clinician").prefetch_related(
        Prefetch("participants", Participant.objects.select_related("client").order_by("pk")),
        Prefetch("charges", Charge.objects.select_related("client").order_by("pk"))))


class AppointmentFilter(serializers.Serializer):
    client = ExternalId(required=False, help_text="A participant's external id.")
    clinician = ExternalId(required=False)
    status = serializers.ChoiceField(choices=AppointmentStatus.choices, required=False)
    starts_after = FilterDateTime(required=False)
    starts_before = FilterDateTime(required=False)


class AppointmentList(EhrView):
    @extend_schema(operation_id="appointments_list", parameters=[*PAGE_PARAMETERS, AppointmentFilter],
                   responses=responses({200: page_of(api.AppointmentOut)}, LIST_ERRORS), tags=["appointments"])
    def get(self, request: Request) -> Response:
        f = self.filters(AppointmentFilter)
        appointments = appointment_queryset(self.source)
        if "client" in f:
            appointments = appointments.filter(participants__client__source=self.source,
                                               participants__client__external_id=f["client"])
        if "clinician" in f:
            appointments = appointments.filter(clinician__source=self.source,
                                               clinician__external_id=f["clinician"])
        if "status" in f:
            appointments = appointments.filter(status=f["status"])
        if "starts_after" in f:
            appointments = appointments.filter(starts_at__gt=f["starts_after"])
        if "starts_before" in f:
            appointments = appointments.filter(starts_at__lt=f["starts_before"])
        return self.paginated(appointments, api.AppointmentOut)


class AppointmentDetail(EhrView):
    def represent(self, external_id: str) -> dict[str, Any]:
        appointment = appointment_queryset(self.source).filter(external_id=external_id).first()
        if appointment is None:
            raise NotFound(f"No appointment with external id {external_id!r} from this source.")
        return api.AppointmentOut(appointment).data

    @extend_schema(parameters=[EXTERNAL_ID], responses=responses({200: api.AppointmentOut}, NOT_FOUND),
                   tags=["appointments"])
    def get(self, request: Request, external_id: str) -> Response:
        return Response(self.represent(self.path_id(external_id)))

    @extend_schema(parameters=[EXTERNAL_ID], request=api.AppointmentIn,
                   responses=responses({200: api.AppointmentOut, 201: api.AppointmentOut}, WRITE, CONFLICT),
                   tags=["appointments"],
                   description="Create (201) or replace (200) the appointment; `clients` replaces the "
                               "participants. A status or signature change triggers billing under the "
                               "practice's policy. Changing the fee, service code or participants after money "
                               "moved is refused with 409.")
    def put(self, request: Request, external_id: str) -> Response:
        return self._write(external_id, partial=False)

    @extend_schema(parameters=[EXTERNAL_ID], request=api.AppointmentIn(partial=True),
                   responses=responses({200: api.AppointmentOut}, WRITE, CONFLICT, NOT_FOUND), tags=["appointments"])
    def patch(self, request: Request, external_id: str) -> Response:
        return self._write(external_id, partial=True)

    def _write(self, external_id: str, *, partial: bool) -> Response:
        external_id = self.path_id(external_id, writing=not partial)
        data = self.validated(api.AppointmentIn, self.request.data, partial=partial)
        with self.audited():
            outcome = intake.appointment_put(push=self.new_push(), external_id=external_id, data=data,
                                               partial=partial)
        return Response(self.represent(external_id), status=created_or_ok(outcome))


# --- Insurance payments ----------------------------------------------------------------------------------

class InsurancePaymentFilter(serializers.Serializer):
    appointment = ExternalId(required=False)
    client = ExternalId(required=False)


class InsurancePaymentList(EhrView):
    def queryset(self) -> QuerySet[InsurancePayment]:
        return InsurancePayment.objects.filter(appointment__source=self.source).select_related("appointment",
                                                                                                "client")

    @extend_schema(operation_id="insurance_payments_list", parameters=[*PAGE_PARAMETERS, InsurancePaymentFilter],
                   responses=responses({200: page_of(api.InsurancePaymentOut)}, LIST_ERRORS),
                   tags=["insurance payments"])
    def get(self, request: Request) -> Response:
        f = self.filters(InsurancePaymentFilter)
        payments = self.queryset()
        if "appointment" in f:
            payments = payments.filter(appointment__external_id=f["appointment"])
        if "client" in f:
            payments = payments.filter(client__source=self.source, client__external_id=f["client"])
        return self.paginated(payments, api.InsurancePaymentOut)

    @extend_schema(request=api.InsurancePaymentIn, tags=["insurance payments"],
                   responses=responses({200: api.InsurancePaymentOut, 201: api.InsurancePaymentOut}, WRITE),
                   description="Record one EOB line (201). The same appointment, client and reference again "
                               "changes nothing, or corrects the figures (200).")
    def post(self, request: Request) -> Response:
        data = self.validated(api.InsurancePaymentIn, request.data)
        with self.audited():
            outcome = intake.insurance_payment_record(push=self.new_push(), data=data)
        return Response(api.InsurancePaymentOut(outcome.obj).data, status=created_or_ok(outcome))


# --- Remittances (ERA) -----------------------------------------------------------------------------------

class RemittanceQuery(serializers.Serializer):
    dry_run = QueryBoolean(required=False, default=False, help_text="true: report what would be posted; "
                                                                     "write nothing.")


class Remittances(EhrView):
    parser_classes = [X12Parser, X12TextParser, X12OctetParser]

    @extend_schema(
        operation_id="remittances_create", tags=["insurance payments"], parameters=[RemittanceQuery],
        request={"application/octet-stream": OpenApiTypes.BINARY, "text/plain": OpenApiTypes.STR},
        responses=responses({200: api.RemittancePostOut, 201: api.RemittancePostOut}, WRITE),
        description="An insurer's ERA, an X12 835 (005010X221A1) file, as the body (Content-Type "
                    "application/edi-x12, text/plain or application/octet-stream). Each service line is matched "
                    "to a session and recorded as an insurance payment, or left for staff to match. 201 when "
                    "something was posted; 200 when nothing was new (the same file again changes nothing) or "
                    "for a dry run. A broken file, or one that is not an 835, is 400 with the segment at fault "
                    "under `file`; nothing is posted.")
    def post(self, request: Request) -> Response:
        dry_run = self.filters(RemittanceQuery)["dry_run"]
        data = request.data
        if not isinstance(data, bytes):
            raise InvalidInput({"file": ["Send the 835 file as the body."]})
        try:
            with self.audited():
                reports = era_post(data=data, file_name="", actor=f"api:{self.source}", now=timezone.now(),
                                   dry_run=dry_run, audit_actor=self.api_key.user)
        except RemittanceFileError as error:
            raise InvalidInput({"file": [str(error)]}) from None
        posted = not dry_run and any(line.outcome != "already posted" for r in reports for line in r.lines)
        return Response({"dry_run": dry_run, "payments": [r.as_dict() for r in reports]},
                        status=status.HTTP_201_CREATED if posted else status.HTTP_200_OK)


# --- Events ----------------------------------------------------------------------------------------------

class Events(EhrView):
    @extend_schema(request=api.EventBatchIn, responses=responses({200: api.EventBatchOut}, WRITE),
                   tags=["events"], description=(
                       "A batch of up to 1,000 events, `{\"events\": [...]}` (a bare JSON array is accepted too), "
                       "applied in order "
                       "with the rules of the single-resource calls. One result per event: created, updated, "
                       "unchanged or error (with messages); a bad event is rolled back alone and never stops "
                       "the others. `data` is the body of the matching call: ClientIn, CoverageIn, "
                       "AppointmentIn, InsurancePaymentIn or PolicyAcknowledgmentIn."))
    def post(self, request: Request) -> Response:
        body = request.data
        events = body.get("events") if isinstance(body, dict) else body
        if not isinstance(events, list) or (isinstance(body, dict) and set(body) != {"events"}):
            raise InvalidInput({"events": ["Send {\"events\": [...]} or a JSON array of events."]})
        if len(events) > api.MAX_EVENTS:
            raise InvalidInput({"events": [f"At most {api.MAX_EVENTS} events per batch; this one has "
                                           f"{len(events)}."]})
        with self.audited():
            results = ehr_events.events_apply(push=self.new_push(), events=events)
        counts = dict.fromkeys((intake.CREATED, intake.UPDATED, intake.UNCHANGED, intake.ERROR), 0)
        for result in results:
            counts[result["status"]] += 1
        return Response({"results": results, "counts": counts})


# --- Charges ---------------------------------------------------------------------------------------------

class ChargeFilter(serializers.Serializer):
    client = ExternalId(required=False)
    appointment = ExternalId(required=False)
    status = serializers.ChoiceField(choices=api.API_CHARGE_STATUSES, required=False)
    kind = serializers.ChoiceField(choices=ChargeKind.choices, required=False)
    created_after = FilterDateTime(required=False)


def charge_queryset(source: str) -> QuerySet[Charge]:
    return Charge.objects.filter(client__source=source).select_related("client", "appointment")


class ChargeList(EhrView):
    @extend_schema(operation_id="charges_list", parameters=[*PAGE_PARAMETERS, ChargeFilter],
                   responses=responses({200: page_of(api.ChargeOut)}, LIST_ERRORS), tags=["charges"])
    def get(self, request: Request) -> Response:
        f = self.filters(ChargeFilter)
        charges = charge_queryset(self.source)
        if "client" in f:
            charges = charges.filter(client__external_id=f["client"])
        if "appointment" in f:
            charges = charges.filter(appointment__source=self.source, appointment__external_id=f["appointment"])
        if f.get("status") == ChargeStatus.SCHEDULED:  # on its way: scheduled, or due and not held
            charges = charges.filter(Q(status=ChargeStatus.SCHEDULED) | Q(status=ChargeStatus.DUE, hold_reason=""))
        elif f.get("status") == api.HELD:
            charges = charges.filter(status=ChargeStatus.DUE).exclude(hold_reason="")
        elif "status" in f:
            charges = charges.filter(status=f["status"])
        if "kind" in f:
            charges = charges.filter(kind=f["kind"])
        if "created_after" in f:
            charges = charges.filter(created_at__gt=f["created_after"])
        return self.paginated(charges, api.ChargeOut)


class ChargeDetail(EhrView):
    @extend_schema(parameters=[OpenApiParameter("id", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                                                OpenApiParameter.PATH)],
                   responses=responses({200: api.ChargeOut}, NOT_FOUND), tags=["charges"])
    def get(self, request: Request, id: str) -> Response:
        pk = int(id) if id.isascii() and id.isdigit() and len(id) <= 19 else 0
        charge = charge_queryset(self.source).filter(pk=pk).first() if 0 < pk < 2**63 else None
        if charge is None:
            raise NotFound(f"No charge {id} for this source's clients.")
        return Response(api.ChargeOut(charge).data)


# --- Reconciliation --------------------------------------------------------------------------------------

class ReconciliationQuery(serializers.Serializer):
    # Exactly the ISO weeks of the API's date window (W53 only where it exists): the schema admits no week
    # that is refused, and a week at year 9999's end no longer overflows the week's bounds.
    week = serializers.RegexField(iso_week_pattern(), help_text="An ISO week, e.g. 2026-W48.", error_messages={
        "invalid": "Give an ISO week from 1900-W01 to 2199-W52, such as 2026-W48 (W53 only in years that have it)."})


def csv_too(by_status: dict[int, Any]) -> dict[Any, Any]:
    """With ?format=csv every answer is text, errors included (CsvRenderer): each status in both types."""
    out: dict[Any, Any] = {}
    for code, response in by_status.items():
        out[(code, "application/json")] = response
        out[(code, "text/csv")] = OpenApiTypes.STR
    return out


class Reconciliation(EhrView):
    renderer_classes = [AsciiJSONRenderer, CsvRenderer]

    @extend_schema(
        parameters=[ReconciliationQuery,
                    OpenApiParameter("format", str, enum=["json", "csv"], description="csv for a CSV file.")],
        responses=csv_too(responses({200: api.ReconciliationOut}, LIST_ERRORS)), tags=["reports"],
        description="The weekly reconciliation (sessions held that week in the practice's time zone, and EOBs "
                    "paid that week) for this source's records. With `format=csv` every answer is text: the "
                    "findings as CSV (a header line, then one line per finding), or an error's message.")
    def get(self, request: Request) -> Response:
        week = self.filters(ReconciliationQuery)["week"]
        try:
            monday = iso_week_monday(week)
        except WeekInvalid as error:
            raise InvalidInput({"week": [str(error)]}) from None
        start, end = week_bounds(monday, Practice.current_zone())
        # Runs the week now (idempotent: the findings and the status staff gave them are kept), then reads
        # this source's findings, and the unmatched Stripe payments, which belong to no EHR record.
        result = reconciliation_run(week=monday, now=timezone.now(), trigger="api", actor=f"api:{self.source}")
        findings = findings_for_source(week=monday, source=self.source)
        rows = [{"kind": f.kind, "appointment": f.appointment.external_id if f.appointment else None,
                 "client": f.client.external_id if f.client else None, "charge": f.charge_id,
                 "service_date": f.service_date, "expected_cents": f.expected_cents,
                 "actual_cents": f.actual_cents, "detail": f.detail, "status": f.status} for f in findings]
        # status and stripe_checked are additions to docs/api.md's fields: what staff decided, and whether
        # Stripe could be read for the week.
        data = api.ReconciliationOut({"week": week, "starts": start, "ends": end, "findings": rows,
                                      "stripe_checked": not result.stripe_error}).data
        response = Response(data)
        if getattr(request, "accepted_renderer", None) is not None and request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = f'attachment; filename="reconciliation-{week}.csv"'
        return response

