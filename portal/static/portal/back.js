// "Go back" links (templates/portal/try_again.html), without an inline javascript: URL the CSP would block.
document.querySelectorAll("[data-go-back]").forEach(function (link) {
  link.addEventListener("click", function (event) { event.preventDefault(); history.back(); });
});
