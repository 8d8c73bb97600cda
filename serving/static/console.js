// The console's little JavaScript: SLA timers, keyboard shortcuts, suggested replies.
(function () {
  "use strict";

  // SLA timers: time left (or late) counted from the server's clock at render time
  function fmt(seconds) {
    var s = Math.abs(Math.round(seconds));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + "h " : "") + m + "m";
  }
  var started = Date.now();
  function tick() {
    document.querySelectorAll("time[data-due]").forEach(function (el) {
      var due = Date.parse(el.getAttribute("datetime"));
      var now = Date.parse(el.dataset.now) + (Date.now() - started);
      var left = (due - now) / 1000;
      el.textContent = left >= 0 ? fmt(left) : "−" + fmt(left) + " " + el.dataset.late;
      el.classList.toggle("late", left < 0);
      el.title = el.getAttribute("datetime");
    });
  }
  tick();
  setInterval(tick, 30000);

  // suggested replies fill the reply box
  document.querySelectorAll("button.use").forEach(function (b) {
    b.addEventListener("click", function () {
      var box = document.getElementById("reply-text");
      if (box) { box.value = b.dataset.text; box.focus(); }
    });
  });

  // keyboard: j/k move through a list, Enter opens, c claims, r replies
  var rows = Array.prototype.slice.call(document.querySelectorAll("[data-rows] tbody tr[data-href]"));
  var at = -1;
  function select(i) {
    if (!rows.length) return;
    at = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, j) { r.classList.toggle("selected", j === at); });
    rows[at].scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", function (e) {
    var tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j") { select(at + 1); e.preventDefault(); }
    else if (e.key === "k") { select(at - 1); e.preventDefault(); }
    else if (e.key === "Enter" && at >= 0) { window.location = rows[at].dataset.href; }
    else if (e.key === "c") {
      var claim = document.querySelector("form[data-key=c]");
      if (claim) { claim.submit(); e.preventDefault(); }
    } else if (e.key === "r") {
      var box = document.getElementById("reply-text");
      if (box) { box.focus(); e.preventDefault(); }
    }
  });
})();
