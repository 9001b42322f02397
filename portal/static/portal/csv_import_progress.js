// A CSV import's progress bar (templates/admin/ehr/csvimport/progress.html): polls the import's progress URL
// (staff only, JSON) and moves the bar; once the run has ended, opens the import's page, which then shows the
// dry run's rows, the apply's outcome or why it failed. A static file, as the Content-Security-Policy allows
// no inline script.
(function () {
  "use strict";
  var box = document.getElementById("csv-import-job");
  if (!box) { return; }
  var progressUrl = box.getAttribute("data-progress-url");
  var resultUrl = box.getAttribute("data-result-url");
  var bar = document.getElementById("csv-progress");
  var statusText = document.getElementById("csv-progress-status");
  var percentText = document.getElementById("csv-progress-percent");
  var rowsText = document.getElementById("csv-progress-rows");
  var rateText = document.getElementById("csv-progress-rate");
  var etaText = document.getElementById("csv-progress-eta");
  var hintText = document.getElementById("csv-progress-hint");
  var discard = document.getElementById("csv-discard");  // offered only until a worker starts the run
  var INTERVAL_MS = 1000;
  var MAX_INTERVAL_MS = 15000;
  var delay = INTERVAL_MS;

  function number(value) { return Math.round(value).toLocaleString("en-US"); }

  function duration(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) { return s + " s"; }
    var m = Math.floor(s / 60);
    if (m < 60) { return m + " min " + (s % 60) + " s"; }
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function show(state) {
    statusText.textContent = state.status_label + (state.status === "queued" ? "…" : "");
    if (state.rows_total === null) {
      bar.removeAttribute("value");  // indeterminate until the rows are counted
      rowsText.textContent = number(state.rows_done) + " rows";
    } else {
      bar.max = Math.max(state.rows_total, 1);
      bar.value = Math.min(state.rows_done, bar.max);
      rowsText.textContent = number(state.rows_done) + " of " + number(state.rows_total) + " rows";
    }
    percentText.textContent = state.percent === null ? "" : Math.floor(state.percent) + "%";
    rateText.textContent = state.rows_per_second ? number(state.rows_per_second) + " rows/s" : "– rows/s";
    etaText.textContent = state.seconds_left === null ? "time left not known yet"
      : "about " + duration(state.seconds_left) + " left";
    hintText.textContent = state.hint || "";
    hintText.hidden = !state.hint;
    if (discard && state.status !== "queued") { discard.hidden = true; }
  }

  function lost(message) {
    hintText.textContent = message;
    hintText.hidden = false;
    delay = Math.min(delay * 2, MAX_INTERVAL_MS);
    window.setTimeout(poll, delay);
  }

  function poll() {
    fetch(progressUrl, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (response.redirected || type.indexOf("application/json") === -1) {
          window.location.assign(resultUrl);  // signed out meanwhile: the page asks to sign in again
          return null;
        }
        if (!response.ok) {
          return response.json().then(function (body) { throw new Error(body.error || response.statusText); });
        }
        return response.json();
      })
      .then(function (state) {
        if (state === null) { return; }
        delay = INTERVAL_MS;
        show(state);
        if (state.finished) {
          window.location.assign(resultUrl);
        } else {
          window.setTimeout(poll, delay);
        }
      })
      .catch(function (error) {
        lost("Could not reach the portal (" + error.message + "); trying again. The import goes on meanwhile.");
      });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
