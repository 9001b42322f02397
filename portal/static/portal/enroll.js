// Card enrollment (templates/portal/enroll.html): agree, save the card with Stripe.js, tell the portal.
// A static file, not an inline script, so the Content-Security-Policy can forbid inline scripts.
(function () {
  const config = document.currentScript.dataset;
  const form = document.getElementById("enroll-form");
  const button = document.getElementById("save-card");
  const message = document.getElementById("message");
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  const stripe = Stripe(config.stripeKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");

  function show(text, kind) {
    message.textContent = text;
    message.className = "message " + kind;
    message.hidden = false;
    message.focus();
  }
  async function post(url, body) {
    const response = await fetch(url, {method: "POST", credentials: "same-origin",
      headers: {"X-CSRFToken": csrf, "Content-Type": "application/x-www-form-urlencoded"},
      body: new URLSearchParams(body)});
    const data = await response.json().catch(() => ({error: "Something went wrong. Please try again."}));
    return {ok: response.ok, data: data};
  }
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (!document.getElementById("agree").checked) {
      show("Please read the authorization and tick the box to agree.", "error");
      return;
    }
    button.disabled = true;
    button.textContent = "Saving…";
    try {
      const start = await post(config.startUrl, {agree: "yes"});
      if (!start.ok) { throw new Error(start.data.error); }
      const result = await stripe.confirmCardSetup(start.data.client_secret, {payment_method: {card: card}});
      if (result.error) { throw new Error(result.error.message || "Your card could not be saved."); }
      const finish = await post(config.finishUrl, {setup_intent: result.setupIntent.id});
      if (!finish.ok) { throw new Error(finish.data.error); }
      form.querySelectorAll("input, button").forEach(el => el.disabled = true);
      button.textContent = "Card saved"; button.classList.add("done");
      if (finish.data.choose_url) {
        // Older amounts are never charged by saving a card: the client chooses what happens to them.
        show("Thank you. Your card (" + finish.data.card + ") is saved. " + finish.data.waiting_total +
             " from earlier sessions waited for a card: nothing of it is charged without your say.", "ok");
        const choose = document.createElement("a");
        choose.href = finish.data.choose_url; choose.id = "choose-waiting"; choose.className = "button";
        choose.textContent = "Choose what happens to " + finish.data.waiting_total;
        message.appendChild(document.createElement("br")); message.appendChild(choose);
      } else {
        show("Thank you. Your card (" + finish.data.card + ") is saved. You can close this page.", "ok");
      }
    } catch (error) {
      button.disabled = false;
      button.textContent = "Save card";
      show((error && error.message) || "Your card could not be saved. Please check the details and try again.", "error");
    }
  });
})();
