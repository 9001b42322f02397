"""The REST API v1 EHRs push to and read from (docs/api.md)."""
