"""The staff console: Django's admin as the practice's billing console.

The portal's ``PracticeAdminSite`` (portal/admin_site.py, the default admin site) registers every billing page.
The pages are not registered with ``@admin.register``: Django imports this package while it builds the
default site, and registering on the default site from inside that would build a second site.
"""
