"""The billing errors: one base, a few families that say what the caller should do.

- ``InvalidInput``: well formed but wrong against what is stored (an unknown clinician, a bad amount);
  the caller shows the messages, per field where there are fields.
- ``NotFound``: a record the request names does not exist.
- ``Conflict``: the change would contradict money already moved; the message says what to do instead.
- ``Refused``: a staff or client action that the rules do not allow now (a refund above what was paid,
  a second payment while one is being taken); the message is for the person.
- ``PaymentProviderError``: the card processor did not act (unreachable, or it refused the request); the
  gateway raises these, so no view imports the processor's own exception types.

Each way in translates them once: the API to 400/404/409 (integrations/ehr/api/errors.py), the admin to a
message, the client pages to a friendly page.
"""

from __future__ import annotations


class BillingError(Exception):
    """Anything billing refuses or cannot do, with a message meant for a person."""


class InvalidInput(BillingError):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


class NotFound(BillingError):
    pass


class Conflict(BillingError):
    pass


class Refused(BillingError):
    pass


class PaymentProviderError(BillingError):
    """The card processor did not do what was asked."""


class OutcomeUnknown(PaymentProviderError):
    """The processor may or may not have acted: ask again with the same idempotency key."""


class GatewayRefused(PaymentProviderError):
    """The processor refused the request itself (bad parameters, missing object): retrying will not help."""

    def __init__(self, message: str, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status  # the processor's HTTP status (404: no such object), 0 when it was not asked

    @property
    def missing(self) -> bool:
        """The processor has no such object (in this account and mode)."""
        return self.status == 404 or self.code == "resource_missing"
