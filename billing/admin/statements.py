"""Monthly statements in the admin: the list of statements issued (figures as sent, each with its PDF), and a
client's statement for any month from the client's page (as issued, else as the ledger has it now)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin.common import ViewOnlyMixin, dollars
from billing.models import Client, Practice, Statement, StatementRun
from billing.services.statements import MonthInvalid, last_month_over, month_parse, statement_for, statement_pdf


def _pdf_response(statement: Statement) -> HttpResponse:
    response = HttpResponse(statement_pdf(statement=statement, now=timezone.now()), content_type="application/pdf")
    response["Content-Disposition"] = (f'attachment; filename="statement-{statement.month:%Y-%m}-'
                                       f'{statement.client_id}.pdf"')
    return response


class StatementAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """Each statement issued (by the monthly batch or by staff), as it was sent."""

    # Refunds and adjustments are on each statement's page and PDF: the list keeps to what fits a screen.
    list_display = ("month_label", "client_link", "opening", "charges", "payments", "closing", "emailed_to",
                    "issued_at", "pdf")
    list_filter = ("month", "trigger")
    list_select_related = ("client",)
    search_fields = ("client__last_name", "client__first_name", "client__email", "=client__external_id")
    show_full_result_count = False
    exclude = ("lines", "pay_link")

    def get_urls(self) -> list[URLPattern]:
        return [path("<int:pk>/pdf/", self.admin_site.admin_view(self.pdf_view), name="billing_statement_pdf"),
                path("client/<int:client_id>/", self.admin_site.admin_view(self.client_pdf_view),
                     name="billing_statement_client_pdf"),
                *super().get_urls()]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Statement]:
        return super().get_queryset(request).order_by("-month", "client__last_name", "client__first_name", "pk")

    def pdf_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        statement = Statement.objects.select_related("client").filter(pk=pk).first()
        if statement is None:
            raise Http404("No such statement.")
        return _pdf_response(statement)

    def client_pdf_view(self, request: HttpRequest, client_id: int) -> HttpResponse:
        """A client's statements: the PDF of ``?month=YYYY-MM``; without a month, a page to choose one (last
        month by default) and the statements sent to the client."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        client = Client.objects.filter(pk=client_id).first()
        if client is None:
            raise Http404("No such client.")
        now = timezone.now()
        here = reverse("admin:billing_statement_client_pdf", args=[client.pk])
        if "month" in request.GET:
            try:
                month = month_parse(request.GET["month"])
            except MonthInvalid as problem:
                self.message_user(request, str(problem), messages.ERROR)
                return HttpResponseRedirect(here)
            return _pdf_response(statement_for(client=client, month=month, now=now))
        sent = [(s, dollars(s.opening_cents), dollars(s.closing_cents),
                 reverse("admin:billing_statement_pdf", args=[s.pk]))
                for s in Statement.objects.filter(client=client).order_by("-month")]
        return TemplateResponse(request, "admin/billing/statement/client.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "client": client, "sent": sent,
            "title": f"Monthly statements: {client}", "month": last_month_over(now, Practice.load()),
            "change_url": reverse("admin:billing_client_change", args=[client.pk])})

    @admin.display(description="Month", ordering="month")
    def month_label(self, statement: Statement) -> str:
        return f"{statement.month:%B %Y}"

    @admin.display(description="Client", ordering="client__last_name")
    def client_link(self, statement: Statement) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:billing_client_change", args=[statement.client_id]),
                           f"{statement.client.last_name}, {statement.client.first_name}")

    @admin.display(description="Opening")
    def opening(self, statement: Statement) -> str:
        return dollars(statement.opening_cents)

    @admin.display(description="Charges")
    def charges(self, statement: Statement) -> str:
        return dollars(statement.charges_cents)

    @admin.display(description="Payments")
    def payments(self, statement: Statement) -> str:
        return dollars(statement.payments_cents)

    @admin.display(description="Refunds")
    def refunds(self, statement: Statement) -> str:
        return dollars(statement.refunds_cents)

    @admin.display(description="Adjustments")
    def adjustments(self, statement: Statement) -> str:
        return dollars(statement.adjustments_cents)

    @admin.display(description="Closing", ordering="closing_cents")
    def closing(self, statement: Statement) -> str:
        return dollars(statement.closing_cents)

    @admin.display(description="PDF")
    def pdf(self, statement: Statement) -> str:
        return format_html('<a href="{}">PDF</a>', reverse("admin:billing_statement_pdf", args=[statement.pk]))


class StatementRunAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """Each month's batch: when it ran, how many statements and emails it wrote."""

    list_display = ("month_label", "started_at", "finished_at", "statements", "emails")
    show_full_result_count = False

    @admin.display(description="Month", ordering="month")
    def month_label(self, run: StatementRun) -> str:
        return f"{run.month:%B %Y}"


def client_statement_tools(request: HttpRequest, client: Client) -> list[tuple[str, str]]:
    """The client page's statement button: any month's PDF, and the statements sent to the client."""
    if not request.user.has_perm("billing.view_statement"):
        return []
    return [("Monthly statements", reverse("admin:billing_statement_client_pdf", args=[client.pk]))]
