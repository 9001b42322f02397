from __future__ import annotations

from django.contrib import admin


class PracticeAdminSite(admin.AdminSite):
    site_header = "Practice billing"
    site_title = "Practice billing"
    index_title = "Today"
