// Live updates: the gateway's event stream (/events) names what changed; the parts of
// this page that show it (data-live="topic ...") are fetched again, already rendered
// and translated by the gateway, and swapped in. A part holding the focus (a form being
// filled in) waits for the next change; a part marked data-live-every="S" (the charts)
// is fetched at most every S seconds. The request names the parts it wants
// (X-Live-Parts), so the gateway draws only those.
// The connection is shown as lost (#offline) when a fetch fails, the browser is offline,
// or the stream has said nothing for 30 s (it says "alive" every 10 s); it is shown
// again as working by the next event or fetch that succeeds. EventSource reconnects by
// itself; when it gives up (the gateway restarted: this login ended) the page reloads,
// which leads to the sign-in.
"use strict";
// A select marked data-submit sends its form when changed (the bind form's kind).
for (const select of document.querySelectorAll("select[data-submit]")) {
  select.addEventListener("change", () => select.form.submit());
}
(function () {
  const banner = document.getElementById("offline");
  const SILENT_MS = 30000;
  let pending = new Set();
  let busy = false;
  let heardAt = Date.now();
  const fetchedAt = new Map();

  function connected(yes) {
    if (banner) banner.hidden = yes;
    document.body.dataset.live = yes ? "connected" : "lost";
  }

  function due(part) {
    const every = Number(part.dataset.liveEvery || 0) * 1000;
    return !every || Date.now() - (fetchedAt.get(part.id) || 0) >= every;
  }

  async function refresh(topics) {
    topics.forEach(t => pending.add(t));
    if (busy) return;
    busy = true;
    try {
      while (pending.size) {
        const wanted = pending;
        pending = new Set();
        const parts = [...document.querySelectorAll("[data-live]")].filter(el =>
          el.dataset.live.split(" ").some(t => wanted.has(t) || wanted.has("*")) && due(el));
        if (!parts.length) continue;
        const res = await fetch(location.pathname + location.search, {
          headers: {"X-Live-Parts": parts.map(p => p.id).join(" ")},
          credentials: "same-origin",
        });
        if (res.redirected || !res.ok) { location.reload(); return; }
        const fresh = new DOMParser().parseFromString(await res.text(), "text/html");
        for (const part of parts) {
          const next = fresh.getElementById(part.id);
          if (!next) continue;
          if (part.contains(document.activeElement) && document.activeElement !== document.body) {
            continue;  // being filled in: swapped at the next change
          }
          fetchedAt.set(part.id, Date.now());
          if (part.innerHTML !== next.innerHTML) part.innerHTML = next.innerHTML;
          part.className = next.className;
        }
        if (events.readyState === EventSource.OPEN && navigator.onLine) connected(true);
      }
    } catch (e) {
      connected(false);
    } finally {
      busy = false;
    }
  }

  const events = new EventSource("/events");
  function heard() {
    heardAt = Date.now();
    if (navigator.onLine) connected(true);
  }
  events.addEventListener("hello", () => {
    const wasLost = document.body.dataset.live === "lost";
    heard();
    if (wasLost) refresh(["*"]);
  });
  events.addEventListener("alive", heard);
  events.addEventListener("changed", e => { heard(); refresh(e.data.split(" ")); });
  // Signed out (idle, logout elsewhere, a new password): the login page.
  events.addEventListener("signed-out", () => { events.close(); location.reload(); });
  events.onerror = () => {
    connected(false);
    if (events.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 5000);
  };
  window.addEventListener("offline", () => connected(false));
  window.addEventListener("online", () => refresh(["*"]));
  setInterval(() => { if (Date.now() - heardAt > SILENT_MS) connected(false); }, 5000);
})();
