"""Routes under /api/: v1 of the EHR API, the OpenAPI schema and the browsable docs.

Each v1 route also answers without its trailing slash: APPEND_SLASH cannot redirect a PUT or POST
(Django refuses, and a redirect would drop the body), and integrators do leave the slash off.
"""

from __future__ import annotations

from django.urls import include, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from integrations.ehr.api import views

ID = r"(?P<external_id>[^/]+)"

v1 = [
    re_path(r"^clinicians/?$", views.ClinicianList.as_view(), name="clinicians"),
    re_path(rf"^clinicians/{ID}/?$", views.ClinicianDetail.as_view(), name="clinician"),
    re_path(r"^clients/?$", views.ClientList.as_view(), name="clients"),
    re_path(rf"^clients/{ID}/?$", views.ClientDetail.as_view(), name="client"),
    re_path(rf"^clients/{ID}/coverage/?$", views.CoverageDetail.as_view(), name="coverage"),
    re_path(rf"^clients/{ID}/policy-acknowledgments/?$", views.PolicyAcknowledgmentCreate.as_view(),
            name="policy-acknowledgments"),
    re_path(rf"^clients/{ID}/card-enrollment-link/?$", views.EnrollmentLinkCreate.as_view(),
            name="card-enrollment-link"),
    re_path(rf"^clients/{ID}/balance/?$", views.BalanceDetail.as_view(), name="balance"),
    re_path(rf"^clients/{ID}/statements/?$", views.StatementDetail.as_view(), name="statements"),
    re_path(rf"^clients/{ID}/payment-plans/?$", views.PaymentPlanList.as_view(), name="payment-plans"),
    re_path(rf"^clients/{ID}/estimates/?$", views.EstimateList.as_view(), name="estimates"),
    re_path(r"^appointments/?$", views.AppointmentList.as_view(), name="appointments"),
    re_path(rf"^appointments/{ID}/?$", views.AppointmentDetail.as_view(), name="appointment"),
    re_path(r"^insurance-payments/?$", views.InsurancePaymentList.as_view(), name="insurance-payments"),
    re_path(r"^remittances/?$", views.Remittances.as_view(), name="remittances"),
    re_path(r"^events/?$", views.Events.as_view(), name="events"),
    re_path(r"^charges/?$", views.ChargeList.as_view(), name="charges"),
    # Any segment: an id that is not a number gets the API's JSON 404, not the site's HTML page.
    re_path(r"^charges/(?P<id>[^/]+)/?$", views.ChargeDetail.as_view(), name="charge"),
    re_path(r"^policy/?$", views.PolicyDetail.as_view(), name="policy"),
    re_path(r"^reconciliation/?$", views.Reconciliation.as_view(), name="reconciliation"),
]

app_name = "api"
urlpatterns = [
    re_path(r"^v1/", include((v1, "v1"))),
    re_path(r"^schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    re_path(r"^redoc/?$", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
]
