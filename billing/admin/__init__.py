from django.contrib import admin

from billing import models

for model in (models.Practice, models.Clinician, models.Client, models.Payer, models.Coverage, models.Service,
              models.FeeScheduleEntry, models.CategoryRate, models.Appointment, models.Charge,
              models.LedgerEntry, models.ReviewItem, models.PolicyAcknowledgment):
    admin.site.register(model)
