"""The audit trail, in one place.

- ``trail``: which models django-auditlog follows, and the shared fields of entries written in bulk
  (``audit_bulk_fields``, ``audit_bulk_updated``).
- ``bulk``: entries for rows created in bulk (the events batch, the CSV import, the tick), the same ones
  auditlog's own signals would write.
- ``access``: who *looked* at client data (``record_access``), and who acted when no person did (the
  ``system`` actor for commands and tasks: ``acting_as``, ``as_system``).
- ``chain``: the tamper-evident hash chain over the money events and the audit rows (``chain_seal``,
  ``chain_verify``).

Its thin users: the admin's audit pages (billing/admin/audit.py), the access-log middleware
(portal/middleware.py) and ``manage.py verify_audit_chain``.
"""
