"""The staff console: Django's admin as the practice's billing console.

``site.PracticeAdminSite`` (the default admin site, see billing.apps) registers every billing page itself.
The pages are not registered with ``@admin.register``: Django imports this package while it builds the
default site, and registering on the default site from inside that would build a second site.
"""
