// On-session authentication of a payment (templates/portal/authenticate.html): Stripe.js runs the bank's
// check, then the portal re-reads the payment. A static file: the Content-Security-Policy forbids inline scripts.
(function () {
  const config = document.currentScript.dataset;
  const button = document.getElementById("confirm-payment");
  const message = document.getElementById("message");
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
  const stripe = Stripe(config.stripeKey);
  const label = "Confirm payment of " + config.amount;
  function show(text, kind) {
    message.textContent = text; message.className = "message " + kind; message.hidden = false; message.focus();
  }
  button.addEventListener("click", async function () {
    button.disabled = true;
    button.textContent = "Confirming…";
    const result = await stripe.confirmCardPayment(config.clientSecret, {payment_method: config.paymentMethod});
    if (result.error) {
      button.disabled = false;
      button.textContent = label;
      show(result.error.message || "The payment was not confirmed. You can try again.", "error");
      return;
    }
    const response = await fetch(config.confirmedUrl, {method: "POST",
      credentials: "same-origin", headers: {"X-CSRFToken": csrf}});
    const data = await response.json().catch(() => ({}));
    if (response.ok && data.paid) {
      button.textContent = "Paid"; button.classList.add("done");
      show("Thank you. Your payment of " + data.amount + " is complete. A receipt is on its way by email.", "ok");
    } else {
      button.disabled = false;
      button.textContent = label;
      show(data.error || "The payment was not completed. You can try again.", "error");
    }
  });
})();
