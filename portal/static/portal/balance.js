// Paying on the balance page (templates/portal/balance.html): the main form (everything, chosen sessions or an
// amount) with the saved card or once with a card typed here that is not saved, and the form for what waited for
// a card. A card that needs the bank's check is confirmed here with Stripe.js. A static file: the
// Content-Security-Policy forbids inline scripts.
(function () {
  const config = document.currentScript.dataset;
  const stripe = Stripe(config.stripeKey);

  function setUp(form) {
    const buttons = Array.from(form.querySelectorAll("button[type=submit]"));
    const message = form.querySelector(".message");
    const mount = form.querySelector("#card-element");
    let card = null;  // the card for a payment made once: Stripe's Element, the number never reaches the portal
    if (mount) { card = stripe.elements().create("card"); card.mount(mount); }
    const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
    let lastAnswer = null;  // a refused or failed payment sends the key for the next try
    function show(text, kind) {
      message.textContent = text; message.className = "message " + kind; message.hidden = false; message.focus();
    }
    async function post(url, body) {
      const response = await fetch(url, {method: "POST", credentials: "same-origin",
        headers: {"X-CSRFToken": csrf, "Content-Type": "application/x-www-form-urlencoded"}, body: body});
      const data = await response.json().catch(() => ({error: "Something went wrong. Please try again."}));
      lastAnswer = data;
      return {ok: response.ok, data: data};
    }
    const amount = form.querySelector("#amount");
    if (amount) {
      amount.addEventListener("focus", function () {
        form.querySelector("input[name=mode][value=amount]").checked = true;
      });
    }
    form.querySelectorAll("input[type=checkbox][name=items]").forEach(function (box) {
      box.addEventListener("change", function () { form.querySelector("input[name=mode][value=items]").checked = true; });
    });
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const button = event.submitter || buttons[0];
      const once = button.value === "once";
      const body = new URLSearchParams(new FormData(form));
      body.set("card", once ? "once" : "saved");
      buttons.forEach(function (b) { b.disabled = true; });
      button.textContent = "Paying…";
      try {
        let result = await post(config.payUrl, body);
        if (result.ok && result.data.status === "requires_action") {
          const payment = result.data.payment;
          const confirmed = once
            ? await stripe.confirmCardPayment(result.data.client_secret, {payment_method: {card: card}})
            : await stripe.confirmCardPayment(result.data.client_secret);
          if (confirmed.error) {
            // The portal reads Stripe's answer, so what this payment held is offered again at once.
            if (once) { await post(config.confirmedUrl, new URLSearchParams({payment: payment})); }
            throw new Error(confirmed.error.message || "The payment was not confirmed.");
          }
          result = await post(config.confirmedUrl, new URLSearchParams({payment: payment}));
        }
        if (!result.ok || result.data.status !== "succeeded") { throw new Error(result.data.error); }
        button.textContent = "Paid"; button.classList.add("done");
        show("Thank you. We received your payment of " + result.data.amount + "." +
             (once ? " Your card was not saved." : "") + " A receipt is on its way by email.", "ok");
        setTimeout(function () { window.location.reload(); }, 2500);
      } catch (error) {
        if (lastAnswer && lastAnswer.pay_key) { form.querySelector("[name=pay_key]").value = lastAnswer.pay_key; }
        buttons.forEach(function (b) { b.disabled = false; b.textContent = b.dataset.label || "Pay now"; });
        show((error && error.message) || "The payment did not go through. Please try again.", "error");
      }
    });
  }
  document.querySelectorAll("form.pay-form").forEach(setUp);
})();
