// A form with data-confirm asks before it is sent. The question is read from the
// attribute as text, never run as code, so the page needs no inline handler and its
// Content-Security-Policy can forbid them all.
document.addEventListener("submit", function (event) {
  var question = event.target.getAttribute("data-confirm");
  if (question !== null && !window.confirm(question)) {
    event.preventDefault();
  }
});
