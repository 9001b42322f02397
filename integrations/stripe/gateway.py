"""The Stripe gateway: every call the portal makes to Stripe, in plain data.

Only what payment needs is ever sent: amounts, opaque ids, and the customer's name and email.
Never a diagnosis, CPT code, clinician, appointment time or note (docs/product.md, workflow 13).

Outcomes of a payment are one of ``succeeded``, ``failed`` (a decline, with its codes),
``requires_action`` (the client must authenticate on-session) or ``processing``. Anything that leaves
the outcome unknown (timeout, connection error, Stripe 5xx) raises ``OutcomeUnknown``: the caller
keeps the attempt open and asks again later with the same idempotency key.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe
from django.conf import settings

# Raised here, defined by billing: callers catch billing's errors, never Stripe's own types.
from billing.errors import GatewayRefused, OutcomeUnknown

__all__ = ["AnsweringGateway", "ClosedGateway", "GatewayRefused", "OutcomeUnknown", "gateway_replaced", "get_gateway"]

T = TypeVar("T")

# Declines that will not succeed on a retry: the card is gone or the bank said no for good.
HARD_DECLINE_CODES = frozenset({
    "lost_card", "stolen_card", "pickup_card", "fraudulent", "restricted_card", "invalid_account",
    "card_not_supported", "currency_not_supported", "do_not_honor_permanently", "revocation_of_authorization",
    "revocation_of_all_authorizations", "stop_payment_order", "security_violation", "merchant_blacklist",
    "invalid_number", "incorrect_number", "expired_card", "transaction_not_allowed",
    "new_account_information_available", "account_closed", "card_velocity_exceeded_permanently",
})


@dataclass(frozen=True)
class Customer:
    id: str
    email: str
    name: str


@dataclass(frozen=True)
class Card:
    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    customer_id: str


@dataclass(frozen=True)
class SetupIntent:
    id: str
    client_secret: str
    status: str
    customer_id: str
    payment_method_id: str


@dataclass(frozen=True)
class Payment:
    status: str  # succeeded | failed | requires_action | processing | canceled
    payment_intent_id: str
    amount_cents: int
    failure_code: str = ""
    decline_code: str = ""
    message: str = ""
    client_secret: str = ""
    replayed: bool = False
    reference: str = ""  # our opaque charge id, from the PaymentIntent's metadata

    @property
    def hard_decline(self) -> bool:
        return self.decline_code in HARD_DECLINE_CODES or self.failure_code in HARD_DECLINE_CODES


@dataclass(frozen=True)
class Refund:
    id: str
    status: str
    amount_cents: int


@dataclass(frozen=True)
class StripeCharge:
    """A payment as Stripe records it, for reconciliation."""

    id: str
    payment_intent_id: str
    customer_id: str
    amount_cents: int
    amount_refunded_cents: int
    status: str
    created: int
    metadata: dict[str, str]


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    object_type: str
    object_id: str


class RateLimiter:
    """Keeps this process under a request rate (a token bucket); ``rate <= 0`` means no limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + 1.0 / self.rate
        if slot > now:
            time.sleep(slot - now)


class StripeGateway:
    def __init__(self, client: stripe.StripeClient, *, rate_per_second: float, max_429_retries: int = 4) -> None:
        self.client = client
        self.limiter = RateLimiter(rate_per_second)
        self.max_429_retries = max_429_retries

    def _call(self, make: Callable[[], T]) -> T:
        """Call Stripe under the rate limit, backing off on 429; map transport failures to OutcomeUnknown."""
        for attempt in range(self.max_429_retries + 1):
            self.limiter.wait()
            try:
                return make()
            except stripe.RateLimitError:
                if attempt == self.max_429_retries:
                    raise OutcomeUnknown("Stripe kept answering 429 (too many requests).") from None
                time.sleep(min(0.5 * 2**attempt, 8.0))
            except (stripe.APIConnectionError, stripe.APIError) as error:
                raise OutcomeUnknown(f"Stripe did not answer clearly: {type(error).__name__}") from error
            except stripe.CardError:
                raise
            except stripe.StripeError as error:
                err = getattr(error, "error", None)
                raise GatewayRefused(str(getattr(err, "message", "") or error.user_message or error),
                                     str(error.code or getattr(err, "code", "") or ""),
                                     int(error.http_status or 0)) from error
        raise AssertionError("unreachable")

    # Customers -----------------------------------------------------------------------------------
    def customers_by_email(self, email: str) -> list[Customer]:
        """The customers whose email is ``email``, whatever its case (``Dup.Person@Example.com`` is
        ``dup.person@example.com``). Stripe's list filter is exact, case included, and up to date; its
        search matches regardless of case but may lag a new customer by a minute. Both are asked (the
        exact spellings as given and in lower case, then search), and only true matches are kept."""
        wanted = email.strip().lower()
        found: dict[str, Customer] = {}
        for spelling in dict.fromkeys([email.strip(), wanted]):
            found.update({c.id: Customer(c.id, c.email or "", c.name or "") for c in self._customers_listed(spelling)})
        quoted = wanted.replace("\\", "\\\\").replace('"', '\\"')
        try:
            searched = self._call(lambda: self.client.v1.customers.search(
                params={"query": f'email:"{quoted}"', "limit": 10}))
        except GatewayRefused:
            searched = None  # search is not offered everywhere (not in India): the exact spellings stand
        if searched is not None:
            found.update({c.id: Customer(c.id, c.email or "", c.name or "") for c in searched.data})
        return [customer for customer in found.values() if customer.email.strip().lower() == wanted]

    def _customers_listed(self, email: str) -> list[Any]:
        return list(self._call(lambda: self.client.v1.customers.list(params={"email": email, "limit": 10})).data)

    def customer_create(self, *, name: str, email: str, reference: str) -> Customer:
        customer = self._call(lambda: self.client.v1.customers.create(
            params={"name": name, "email": email, "metadata": {"portal_client": reference}},
            options={"idempotency_key": f"customer-{reference}"}))
        return Customer(customer.id, customer.email or "", customer.name or "")

    def customer_get(self, customer_id: str) -> Customer:
        customer = self._call(lambda: self.client.v1.customers.retrieve(customer_id))
        return Customer(customer.id, customer.email or "", customer.name or "")

    # Cards ---------------------------------------------------------------------------------------
    def setup_intent_create(self, *, customer_id: str) -> SetupIntent:
        params: Any = {"customer": customer_id, "usage": "off_session", "payment_method_types": ["card"]}
        intent = self._call(lambda: self.client.v1.setup_intents.create(params=params))
        return _setup_intent(intent)

    def setup_intent_get(self, setup_intent_id: str) -> SetupIntent:
        return _setup_intent(self._call(lambda: self.client.v1.setup_intents.retrieve(setup_intent_id)))

    def card_get(self, payment_method_id: str) -> Card:
        method = self._call(lambda: self.client.v1.payment_methods.retrieve(payment_method_id))
        card = method.card
        if card is None:
            raise GatewayRefused(f"{payment_method_id} is not a card.", "not_a_card")
        return Card(method.id, card.brand or "card", card.last4, int(card.exp_month), int(card.exp_year),
                    _id(method.customer))

    # Payments ------------------------------------------------------------------------------------
    def payment_off_session(self, *, amount_cents: int, customer_id: str, payment_method_id: str,
                            idempotency_key: str, reference: str) -> Payment:
        """Charge a saved card with the client not present. ``reference`` is our opaque charge id."""
        params: Any = {
            "amount": amount_cents, "currency": "usd", "customer": customer_id,
            "payment_method": payment_method_id, "off_session": True, "confirm": True,
            "metadata": {"portal_charge": reference},
        }
        try:
            intent = self._call(lambda: self.client.v1.payment_intents.create(
                params=params, options={"idempotency_key": idempotency_key}))
        except stripe.CardError as error:
            return _declined(error, amount_cents)
        replayed = bool(intent.last_response and intent.last_response.headers.get("Idempotent-Replayed"))
        return _payment(intent, replayed=replayed)

    def payment_on_session(self, *, amount_cents: int, customer_id: str, payment_method_id: str,
                           idempotency_key: str, reference: str) -> Payment:
        """Charge a saved card with the client present: their bank may ask them to authenticate
        (``requires_action``: the page completes it with Stripe.js)."""
        params: Any = {
            "amount": amount_cents, "currency": "usd", "customer": customer_id,
            "payment_method": payment_method_id, "confirm": True, "metadata": {"portal_charge": reference},
        }
        try:
            intent = self._call(lambda: self.client.v1.payment_intents.create(
                params=params, options={"idempotency_key": idempotency_key}))
        except stripe.CardError as error:
            return _declined(error, amount_cents)
        return _payment(intent)

    def payment_once(self, *, amount_cents: int, customer_id: str, idempotency_key: str,
                     reference: str) -> Payment:
        """A payment the client makes once with a card typed on the page, which is not kept: no payment method
        yet and no ``setup_future_usage``, so Stripe saves nothing for later. Answers ``requires_action`` with
        the client secret the page confirms it with (Stripe.js, the card, and the bank's check if it asks)."""
        params: Any = {"amount": amount_cents, "currency": "usd", "payment_method_types": ["card"],
                       "metadata": {"portal_charge": reference}}
        if customer_id:
            params["customer"] = customer_id
        intent = self._call(lambda: self.client.v1.payment_intents.create(
            params=params, options={"idempotency_key": idempotency_key}))
        return _payment(intent)

    def payment_get(self, payment_intent_id: str) -> Payment:
        return _payment(self._call(lambda: self.client.v1.payment_intents.retrieve(payment_intent_id)))

    def payment_cancel(self, payment_intent_id: str) -> Payment:
        return _payment(self._call(lambda: self.client.v1.payment_intents.cancel(payment_intent_id)))

    def refund_create(self, *, payment_intent_id: str, amount_cents: int, idempotency_key: str) -> Refund:
        refund = self._call(lambda: self.client.v1.refunds.create(
            params={"payment_intent": payment_intent_id, "amount": amount_cents},
            options={"idempotency_key": idempotency_key}))
        return Refund(refund.id, refund.status or "succeeded", int(refund.amount))

    def charges_since(self, created_after: int) -> list[StripeCharge]:
        """Every charge created after a Unix time, paging through Stripe's list."""
        charges: list[StripeCharge] = []
        params: dict[str, Any] = {"limit": 100, "created": {"gt": created_after}}
        while True:
            page = self._call(lambda p=dict(params): self.client.v1.charges.list(params=p))  # type: ignore[misc]
            for c in page.data:
                charges.append(StripeCharge(
                    c.id, _id(c.payment_intent), _id(c.customer), int(c.amount), int(c.amount_refunded or 0),
                    c.status, int(c.created), _metadata(c.metadata)))
            if not page.has_more or not page.data:
                return charges
            params["starting_after"] = page.data[-1].id

    # Webhooks ------------------------------------------------------------------------------------
    def webhook_event(self, payload: bytes, signature: str) -> WebhookEvent:
        """Verify a webhook's signature and its time (within WEBHOOK_TOLERANCE_SECONDS of now, either way)
        and return what it names. Raises ValueError, with a message, for anything else."""
        try:
            stripe.WebhookSignature.verify_header(payload, signature, settings.STRIPE_WEBHOOK_SECRET,
                                                  tolerance=WEBHOOK_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError as error:
            raise ValueError(f"Invalid Stripe webhook: {error}") from error
        except UnicodeDecodeError:
            raise ValueError("Invalid Stripe webhook: the body is not UTF-8.") from None
        # The library refuses only old timestamps; a signed time far ahead would keep a replay usable.
        if _signed_at(signature) > time.time() + WEBHOOK_TOLERANCE_SECONDS:
            raise ValueError("Invalid Stripe webhook: its timestamp is in the future.")
        return webhook_event_parse(payload)


WEBHOOK_TOLERANCE_SECONDS = 300
MAX_ID_LENGTH = 100


def _signed_at(signature: str) -> int:
    """The ``t=`` of a Stripe-Signature header, read as the library reads it (the first ``t``)."""
    for part in signature.split(","):
        key, _, value = part.partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise ValueError("Invalid Stripe webhook: no timestamp in the signature.")


def webhook_event_parse(payload: bytes) -> WebhookEvent:
    """The event a verified body names, checked as plain JSON: an object with an id and a type of at
    most 100 characters and a data.object. Raises ValueError saying what is wrong."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        raise ValueError("Invalid Stripe webhook: the body is not JSON.") from None
    if not isinstance(body, dict):
        raise ValueError("Invalid Stripe webhook: the body is not a JSON object.")
    event_id, kind, data = body.get("id"), body.get("type"), body.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    for name, value in (("id", event_id), ("type", kind)):
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
            raise ValueError(f"Invalid Stripe webhook: {name} must be text of 1 to {MAX_ID_LENGTH} characters.")
    if not isinstance(obj, dict):
        raise ValueError("Invalid Stripe webhook: data.object is missing.")
    object_type, object_id = obj.get("object") or "", obj.get("id") or ""
    if not isinstance(object_type, str) or not isinstance(object_id, str) or len(object_id) > MAX_ID_LENGTH:
        raise ValueError(f"Invalid Stripe webhook: data.object's id must be text of at most {MAX_ID_LENGTH} "
                         "characters.")
    return WebhookEvent(str(event_id), str(kind), object_type, object_id)


def _id(value: Any) -> str:
    """An expandable field: Stripe sends an id, or (localstripe, or with expand) the object itself."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(_field(value, "id"))


def _metadata(metadata: Any) -> dict[str, str]:
    """Metadata as a plain dict (a StripeObject is not a dict)."""
    if not metadata:
        return {}
    plain = metadata.to_dict() if hasattr(metadata, "to_dict") else dict(metadata)
    return {str(key): str(value) for key, value in plain.items()}


def _field(obj: Any, name: str) -> Any:
    """A field of a StripeObject (not a dict: it has no .get) or None."""
    if obj is None:
        return None
    try:
        return obj[name]
    except (KeyError, TypeError):
        return None


def _setup_intent(intent: Any) -> SetupIntent:
    return SetupIntent(intent.id, intent.client_secret or "", intent.status, _id(intent.customer),
                       _id(intent.payment_method))


def _payment(intent: Any, *, replayed: bool = False) -> Payment:
    status = intent.status
    error = intent.last_payment_error
    reference = _metadata(intent.metadata).get("portal_charge", "")
    if status in ("requires_payment_method", "requires_confirmation") and error is None:
        # Never confirmed: a payment made once waits for the card the client types on the page.
        return Payment("requires_action", intent.id, int(intent.amount), client_secret=intent.client_secret or "",
                       replayed=replayed, reference=reference)
    if status in ("requires_payment_method", "requires_confirmation"):
        code = _field(error, "code") or "card_declined"
        outcome = "requires_action" if code == "authentication_required" else "failed"
        return Payment(outcome, intent.id, int(intent.amount), code, _field(error, "decline_code") or "",
                       _field(error, "message") or "", intent.client_secret or "", replayed, reference)
    if status == "requires_action":
        return Payment("requires_action", intent.id, int(intent.amount), "authentication_required",
                       "authentication_required", "", intent.client_secret or "", replayed, reference)
    if status == "requires_capture":
        status = "processing"
    return Payment(status, intent.id, int(intent.amount), client_secret=intent.client_secret or "",
                   replayed=replayed, reference=reference)


def _declined(error: stripe.CardError, amount_cents: int) -> Payment:
    err = error.error
    intent = getattr(err, "payment_intent", None) if err else None
    code = str(getattr(err, "code", "") or "card_declined")
    decline = str(getattr(err, "decline_code", "") or "")
    outcome = "requires_action" if code == "authentication_required" else "failed"
    return Payment(outcome, _id(intent), amount_cents, code, decline, str(getattr(err, "message", "") or ""),
                   str(_field(intent, "client_secret") or ""))


@functools.cache
def _configured_gateway() -> StripeGateway:
    options: dict[str, Any] = {"max_network_retries": settings.STRIPE_MAX_NETWORK_RETRIES}
    if settings.STRIPE_API_BASE:
        options["base_addresses"] = {"api": settings.STRIPE_API_BASE}
    client = stripe.StripeClient(settings.STRIPE_SECRET_KEY,
                                 http_client=stripe.HTTPXClient(timeout=settings.STRIPE_TIMEOUT_SECONDS,
                                                                  allow_sync_methods=True),
                                 **options)
    return StripeGateway(client, rate_per_second=settings.STRIPE_MAX_REQUESTS_PER_SECOND)


class _GatewayGetter:
    def __call__(self) -> StripeGateway:
        """The gateway for the configured Stripe (real, or the local fake server in the demo and tests), unless
        a stand-in answers for it in this context (``gateway_replaced``)."""
        return _stand_in.get() or _configured_gateway()

    def cache_clear(self) -> None:
        """Forget the configured gateway: the next call reads the settings again."""
        _configured_gateway.cache_clear()


get_gateway = _GatewayGetter()
_stand_in: ContextVar[StripeGateway | None] = ContextVar("stripe_gateway_stand_in", default=None)


@contextmanager
def gateway_replaced(gateway: StripeGateway) -> Iterator[StripeGateway]:
    """Within this block (this thread or task, and what it hands its context to) ``get_gateway()`` is
    ``gateway``: a preview's replay charges through ``AnsweringGateway``, a tick while the practice previews
    through ``ClosedGateway``."""
    token = _stand_in.set(gateway)
    try:
        yield gateway
    finally:
        _stand_in.reset(token)


class ClosedGateway(StripeGateway):
    """Stripe is not called: every call is refused here, before any network (the practice previews)."""

    def __init__(self, reason: str = "The practice is in preview: nothing is sent to Stripe.") -> None:
        self.reason = reason
        self.limiter = RateLimiter(0)
        self.max_429_retries = 0

    def _call(self, make: Callable[[], T]) -> T:
        raise GatewayRefused(self.reason, "preview")


class AnsweringGateway(ClosedGateway):
    """Answers as Stripe would when everything goes through, without any network call: what a replay of the
    tick charges through (billing/services/preview.py). Ids are made from the idempotency keys, so a repeated
    request gets the same answer, as Stripe's replay would."""

    def __init__(self) -> None:
        super().__init__("Stripe is not called during a preview replay.")

    def payment_off_session(self, *, amount_cents: int, customer_id: str, payment_method_id: str,
                            idempotency_key: str, reference: str) -> Payment:
        return Payment("succeeded", f"pi_preview_{idempotency_key}"[:MAX_ID_LENGTH], amount_cents, reference=reference)

    def payment_on_session(self, *, amount_cents: int, customer_id: str, payment_method_id: str,
                           idempotency_key: str, reference: str) -> Payment:
        return Payment("succeeded", f"pi_preview_{idempotency_key}"[:MAX_ID_LENGTH], amount_cents, reference=reference)

    def payment_once(self, *, amount_cents: int, customer_id: str, idempotency_key: str, reference: str) -> Payment:
        return Payment("succeeded", f"pi_preview_{idempotency_key}"[:MAX_ID_LENGTH], amount_cents, reference=reference)

    def payment_get(self, payment_intent_id: str) -> Payment:
        return Payment("succeeded", payment_intent_id, 0)

    def payment_cancel(self, payment_intent_id: str) -> Payment:
        return Payment("canceled", payment_intent_id, 0)

    def refund_create(self, *, payment_intent_id: str, amount_cents: int, idempotency_key: str) -> Refund:
        return Refund(f"re_preview_{idempotency_key}"[:MAX_ID_LENGTH], "succeeded", amount_cents)

    def charges_since(self, created_after: int) -> list[StripeCharge]:
        return []
