// hookdock console: the one script (CSP: script-src 'self').  It refreshes a page's live
// part (#live) from the same URL every few seconds, so new events and changed states show
// without a reload.  The server answers the X-Console-Live request with that part only,
// rendered and escaped like the page; nothing here builds markup from data.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.refresh) {
    return;
  }
  var every = Math.max(1000, parseInt(live.dataset.refresh, 10) || 3000);
  var busy = false;

  function typing() {
    var active = document.activeElement;
    return active && live.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function refresh() {
    if (busy || document.hidden || typing()) {
      return;
    }
    busy = true;
    fetch(window.location.href, {
      headers: { "X-Console-Live": "1" },
      credentials: "same-origin",
      redirect: "error",
      cache: "no-store"
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var parsed = new DOMParser().parseFromString("<div>" + html + "</div>", "text/html");
        var fresh = parsed.body.firstChild;
        live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
        live.dataset.refreshedAt = String(Date.now());
        document.body.classList.remove("stale");
      })
      .catch(function () {
        // The session ended or the server is away: say so, keep what is shown.
        document.body.classList.add("stale");
      })
      .then(function () {
        busy = false;
      });
  }

  window.setInterval(refresh, every);
})();
