// The overview's live figures: every 30 s the big numbers are read again
// from the admin API (with the session's cookie; a GET needs no CSRF
// header). Without this script the page shows the figures of its load.
"use strict";
(function () {
  var moved = document.getElementById("fig-moved");
  if (!moved) {
    return;
  }
  function set(id, text) {
    var el = document.getElementById(id);
    if (el && el.textContent !== text) {
      el.textContent = text;
    }
  }
  function n(v) {
    return Number(v).toLocaleString("en-US");
  }
  function refresh() {
    fetch("/admin/api/v1/migration", { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) {
          return;
        }
        set("fig-moved", n(s.users.moved));
        set("fig-left", n(s.users.left));
        set("fig-active", n(s.users.active));
        set("fig-dormant", n(s.users.dormant));
        var p = s.projection;
        set("fig-end", p.done ? "Done" : (p.projected_end || "No rate yet"));
        set("fig-progress", (s.progress * 100).toFixed(1));
        if (s.upstream.configured) {
          set("upstream-status", s.upstream.status.charAt(0).toUpperCase() + s.upstream.status.slice(1));
        }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  setInterval(refresh, 30000);
})();
