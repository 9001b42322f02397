"""A thin layer that makes localstripe behave like Stripe where the portal depends on it.

Measured differences it closes (see docs/fake-stripe.md):
- Idempotency-Key: Stripe replays the first response for the same key (with ``Idempotent-Replayed:
  true``), and refuses the key with other parameters or on another endpoint (400 ``idempotency_error``);
  localstripe ignored it and charged twice.
- Off-session payment needing authentication: Stripe answers 402 ``authentication_required`` with the
  PaymentIntent in the error; localstripe answered 200 ``requires_action``.
- Card declines: Stripe's error has ``type=card_error``, a ``decline_code`` and the PaymentIntent.
- SetupIntent success: Stripe attaches the PaymentMethod to the SetupIntent's customer and sends
  ``setup_intent.succeeded``; localstripe did neither.
- Refunds above what is left of the charge: Stripe refuses them; localstripe accepted them.
- Customer search (``GET /v1/customers/search?query=email:"..."``), which localstripe lacks: an email
  matches whatever its case, unlike the list's exact ``email`` filter.
- A PaymentIntent created without a card, confirmed by Stripe.js with the card typed on the page
  (``confirmCardPayment(secret, {payment_method: {card}})``): localstripe's Stripe.js only authenticated,
  and its confirm endpoint refused a payment method.
- The store: in memory (or one chosen file), never the shared file in the temp folder.

GPL-3.0-or-later, like localstripe: see LICENSE-NOTICE.md. Pinned to localstripe 1.15.10.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import re
from pathlib import Path
from typing import Any

from localstripe import resources
from localstripe.errors import UserError

EXPECTED_VERSION = "1.15.10"
SEARCH_EMAIL = re.compile(r"""email:(?:"([^"]*)"|'([^']*)')""")
_store_file: Path | None = None


def configure_store(path: Path | None) -> None:
    """Keep the store in memory, or in ``path`` (written once per write request, loaded at start)."""
    global _store_file
    _store_file = path
    store_cls = resources.Store
    store_cls.__setitem__ = dict.__setitem__
    store_cls.__delitem__ = dict.__delitem__

    def dump_to_disk(self: resources.Store) -> None:
        if _store_file is not None:
            tmp = _store_file.with_suffix(".tmp")
            with tmp.open("wb") as f:
                pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(_store_file)

    def try_load_from_disk(self: resources.Store) -> None:
        if _store_file is not None and _store_file.exists():
            with _store_file.open("rb") as f:
                self.clear()
                self.update(pickle.load(f))

    store_cls.dump_to_disk = dump_to_disk
    store_cls.try_load_from_disk = try_load_from_disk
    resources.store.try_load_from_disk()


def _patch_setup_intent_success() -> None:
    original_confirm = resources.SetupIntent._api_confirm.__func__

    def confirm(cls: type, id: str, **kwargs: Any) -> Any:
        obj = original_confirm(cls, id, **kwargs)
        if obj.status == "succeeded" and obj.customer and obj.payment_method:
            method = resources.PaymentMethod._api_retrieve(obj.payment_method)
            if method.customer != obj.customer:
                method.customer = obj.customer
            resources.schedule_webhook(resources.Event("setup_intent.succeeded", obj))
        return obj

    resources.SetupIntent._api_confirm = classmethod(confirm)
    # The route table captured the bound method at import time: point it at the new one.
    resources.extra_apis[:] = [
        (method, url, resources.SetupIntent._api_confirm if url == "/v1/setup_intents/{id}/confirm" else func)
        for method, url, func in resources.extra_apis
    ]


def _patch_payment_confirm_from_the_page() -> None:
    """Stripe.js confirms a PaymentIntent that has no card yet with the card typed on the page
    (``payment_method_data``) and the intent's client secret, under the publishable key. The card is used for
    this payment only: it is not attached to the customer (no ``setup_future_usage``)."""
    original_confirm = resources.PaymentIntent._api_confirm.__func__

    def confirm(cls: type, id: str, client_secret: str | None = None, payment_method_data: Any = None,
                use_stripe_sdk: Any = None, **kwargs: Any) -> Any:
        if client_secret is None and payment_method_data is None:
            return original_confirm(cls, id, **kwargs)
        obj = resources.PaymentIntent._api_retrieve(id)
        if client_secret != obj.client_secret:
            raise UserError(401, "Unauthorized")
        if kwargs or not isinstance(payment_method_data, dict):
            raise UserError(400, "Bad request")
        if obj.status != "requires_payment_method":
            raise UserError(400, f"This PaymentIntent's status is {obj.status}.",
                            {"code": "payment_intent_unexpected_state"})
        method = resources.PaymentMethod(**payment_method_data)
        obj.payment_method = method.id
        obj.latest_charge = None
        obj._confirm(on_failure_now=obj._report_failure)
        return obj

    resources.PaymentIntent._api_confirm = classmethod(confirm)
    resources.extra_apis[:] = [
        (method, url, resources.PaymentIntent._api_confirm if url == "/v1/payment_intents/{id}/confirm" else func)
        for method, url, func in resources.extra_apis
    ]


# The page's half of that confirm: the fake Stripe.js's confirmCardPayment, given a card, first confirms with it
# (then, if the bank asks, runs its own 3-D Secure dialog as before).
CONFIRM_WITH_CARD_JS = """
(function () {
  const stripeWithoutCards = Stripe;
  Stripe = (apiKey) => {
    const stripe = stripeWithoutCards(apiKey);
    const authenticate = stripe.confirmCardPayment;
    stripe.confirmCardPayment = async (clientSecret, data) => {
      const card = data && data.payment_method && data.payment_method.card;
      if (!card || !card.value) { return authenticate(clientSecret, data); }
      const pi = clientSecret.match(/^(pi_\\w+)_secret_/)[1];
      const response = await fetch(`${LOCALSTRIPE_BASE_API}/v1/payment_intents/${pi}/confirm`, {
        method: 'POST',
        body: JSON.stringify({key: apiKey, client_secret: clientSecret, use_stripe_sdk: true,
          payment_method_data: {type: 'card', card: card.value.card,
            billing_details: {address: {postal_code: card.value.postal_code}}}}),
      });
      const body = await response.json().catch(() => ({}));
      if (response.status !== 200 || body.error) { return {error: body.error}; }
      if (body.status === 'requires_action') { return authenticate(clientSecret, data); }
      return {paymentIntent: body};
    };
    return stripe;
  };
})();
"""
PUBLISHABLE_CONFIRM = re.compile(r"^/v1/payment_intents/\w+/confirm$")


def _patch_publishable_confirm(server: Any) -> None:
    """Like Stripe, take a PaymentIntent's confirm from the page under the publishable key; the client secret
    it must carry is checked by the confirm itself."""
    original = server.get_api_key

    def get_api_key(request: Any) -> Any:
        key = original(request)
        if key is None and request.method == "POST" and PUBLISHABLE_CONFIRM.match(request.path):
            return "pk_from_the_page"
        return key

    server.get_api_key = get_api_key


def _patch_refund_limit() -> None:
    original_init = resources.Refund.__init__

    def init(self: Any, charge: str | None = None, payment_intent: str | None = None,
             amount: Any = None, **kwargs: Any) -> None:
        charge_id = charge
        if payment_intent is not None and charge is None:
            intent = resources.PaymentIntent._api_retrieve(payment_intent)
            charge_id = intent.latest_charge.id if intent.latest_charge else None
        if charge_id is not None:
            charge_obj = resources.Charge._api_retrieve(charge_id)
            left = charge_obj.amount - charge_obj.amount_refunded
            wanted = resources.try_convert_to_int(amount) if amount is not None else left
            if isinstance(wanted, int) and wanted > left:
                raise UserError(400, f"Refund amount ({wanted}) is greater than unrefunded amount on charge "
                                     f"({left}).", {"code": "charge_exceeds_source_limit"})
            if left <= 0:
                raise UserError(400, f"Charge {charge_id} has already been refunded.",
                                {"code": "charge_already_refunded"})
        original_init(self, charge=charge, payment_intent=payment_intent, amount=amount, **kwargs)

    resources.Refund.__init__ = init


# Decline codes by card number, as Stripe's test cards give them when a saved card is charged.
DECLINE_CODES = {"4000000000000341": "generic_decline"}


def _intent_for_error(body: dict[str, Any]) -> Any:
    charge_id = body.get("error", {}).get("charge")
    if not charge_id:
        return None
    charge = resources.Charge._api_retrieve(charge_id)
    return resources.PaymentIntent._api_retrieve(charge.payment_intent) if charge.payment_intent else None


def _card_number(payment_method_id: str | None) -> str:
    if not payment_method_id:
        return ""
    method = resources.PaymentMethod._api_retrieve(payment_method_id)
    return getattr(method, "_card_number", "")


def build_app() -> Any:
    import localstripe

    if localstripe.__version__ != EXPECTED_VERSION:
        raise SystemExit(f"devtools.fakestripe is written for localstripe {EXPECTED_VERSION}, "
                         f"found {localstripe.__version__}.")
    _patch_setup_intent_success()
    _patch_payment_confirm_from_the_page()
    _patch_refund_limit()
    from aiohttp import web
    from localstripe import server

    _patch_publishable_confirm(server)

    replies: dict[tuple[str, str], tuple[str, bytes, int, bytes]] = {}
    locks: dict[tuple[str, str], asyncio.Lock] = {}

    @web.middleware
    async def idempotency(request: web.Request, handler: Any) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return await stripe_errors(request, handler)
        slot = (request.headers.get("Authorization", ""), key)
        lock = locks.setdefault(slot, asyncio.Lock())
        sent = await request.read()
        async with lock:
            if slot in replies:
                path, first_sent, status, body = replies[slot]
                if (path, first_sent) != (request.path, sent):
                    return web.json_response({"error": {
                        "type": "idempotency_error",
                        "message": "Keys for idempotent requests can only be used with the same parameters "
                                   f"they were first used with. Try using a key other than '{key}' if you "
                                   "meant to execute a different request."}}, status=400)
                return web.Response(status=status, body=body, content_type="application/json",
                                    headers={"Idempotent-Replayed": "true", "Idempotency-Key": key})
            response = await stripe_errors(request, handler)
            answer = response.body if isinstance(response, web.Response) else None
            if response.status < 500 and isinstance(answer, bytes | bytearray):
                replies[slot] = (request.path, sent, response.status, bytes(answer))
            response.headers["Idempotency-Key"] = key
            return response

    async def stripe_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except UserError as error:
            response = error.to_response()
        if not request.path.startswith("/v1/payment_intents") or request.method != "POST":
            return response
        raw = response.body if isinstance(response, web.Response) else None
        body = json.loads(raw) if isinstance(raw, bytes | bytearray) and raw else {}
        if response.status == 402:
            intent = _intent_for_error(body)
            card_error = body["error"]
            card_error["type"] = "card_error"
            if intent is not None:
                card_error["payment_intent"] = intent._export()
                card_error.setdefault("decline_code", DECLINE_CODES.get(_card_number(intent.payment_method),
                                                                   "generic_decline"))
            return web.json_response(body, status=402)
        is_create = request.path == "/v1/payment_intents"
        if response.status == 200 and is_create and body.get("status") == "requires_action":
            data = await server.get_post_data(request)
            if str((data or {}).get("off_session")).lower() == "true":
                intent = resources.PaymentIntent._api_retrieve(body["id"])
                resources.schedule_webhook(resources.Event("payment_intent.payment_failed", intent))
                exported = intent._export()
                exported["last_payment_error"] = {"code": "authentication_required"}
                return web.json_response({"error": {
                    "type": "card_error", "code": "authentication_required",
                    "decline_code": "authentication_required",
                    "message": "This payment requires the customer to authenticate.",
                    "payment_intent": exported}}, status=402)
        return response

    # Every request the portal sent, so a test can prove nothing clinical left for Stripe.
    recorded: list[dict[str, Any]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            body = (await request.read()).decode("utf-8", "replace")
            recorded.append({"method": request.method, "path": request.path, "query": request.query_string,
                             "body": body, "idempotency_key": request.headers.get("Idempotency-Key", "")})
        return await handler(request)

    async def recorded_requests(request: web.Request) -> web.Response:
        return web.json_response(recorded)

    @web.middleware
    async def stripe_js(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if request.path == "/js.stripe.com/v3/" and isinstance(response, web.Response) and response.text:
            return web.Response(text=response.text + CONFIRM_WITH_CARD_JS, content_type="application/javascript")
        return response

    async def forget(request: web.Request) -> web.Response:
        recorded.clear()
        replies.clear()
        resources.store.clear()
        return web.Response()

    @web.middleware
    async def customer_search(request: web.Request, handler: Any) -> web.StreamResponse:
        # Before the router, which would read "search" as a customer id.
        if request.path != "/v1/customers/search":
            return await handler(request)
        match = SEARCH_EMAIL.fullmatch(request.query.get("query", "").strip())
        if match is None:
            return web.json_response({"error": {"type": "invalid_request_error", "message": (
                "This fake answers only email:\"...\" searches.")}}, status=400)
        wanted = (match.group(1) or match.group(2) or "").lower()
        found = [c._export() for c in resources.store.values()
                 if isinstance(c, resources.Customer) and (c.email or "").lower() == wanted]
        return web.json_response({"object": "search_result", "url": "/v1/customers/search", "has_more": False,
                                  "next_page": None, "data": found})

    server.app.middlewares.insert(0, customer_search)
    # Outermost, so it sees the final answer (errors included) and replays it whole.
    server.app.middlewares.insert(0, idempotency)
    server.app.middlewares.insert(0, record)
    server.app.middlewares.insert(0, stripe_js)
    server.app.router.add_get("/_config/requests", recorded_requests)
    server.app.router.add_delete("/_config/everything", forget)
    return server.app
