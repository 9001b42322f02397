from django.contrib import admin
from django.urls import include, path

from portal import views

portal_patterns = [
    path("p/<str:token>/", views.link, name="link"),
    path("p/<str:token>/card/start/", views.enrollment_start, name="enrollment_start"),
    path("p/<str:token>/card/finish/", views.enrollment_finish, name="enrollment_finish"),
    path("p/<str:token>/payment/confirmed/", views.payment_confirmed, name="payment_confirmed"),
    path("p/<str:token>/balance/pay/", views.balance_pay, name="balance_pay"),
    path("p/<str:token>/balance/waiting/", views.waiting_choice, name="waiting_choice"),
    path("p/<str:token>/balance/confirmed/", views.balance_confirmed, name="balance_confirmed"),
    path("p/<str:token>/card/new/", views.card_link, name="card_link"),
    path("p/<str:token>/receipts/<int:charge_id>/", views.receipt_download, name="receipt_download"),
    path("p/<str:token>/history/", views.history, name="history"),
    path("p/<str:token>/plan/agree/", views.plan_agree_view, name="plan_agree"),
    path("p/<str:token>/superbill/", views.superbill_download, name="superbill_download"),
    path("p/<str:token>/estimates/<int:estimate_id>/pdf/", views.estimate_download, name="estimate_pdf"),
    path("p/<str:token>/estimates/<int:estimate_id>/acknowledge/", views.estimate_acknowledge,
         name="estimate_acknowledge"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("integrations.ehr.api.urls")),
    path("stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
    path("", include((portal_patterns, "portal"))),
]
