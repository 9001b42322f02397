"""The EHR side: the REST API v1 that EHRs and their middleware push to (see docs/api.md)."""
