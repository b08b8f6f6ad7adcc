// Live updates: the gateway's event stream (/events) names what changed; the parts of
// this page that show it (data-live="topic ...") are fetched again, already rendered
// and translated by the gateway, and swapped in. A part holding the focus (a form being
// filled in) waits for the next change; a part marked data-live-every="S" (the charts)
// is fetched at most every S seconds. The request names the parts it wants
// (X-Live-Parts), so the gateway draws only those. A lost stream is shown, and
// EventSource reconnects by itself; on reconnecting every part is fetched again.
"use strict";
// A select marked data-submit sends its form when changed (the bind form's kind).
for (const select of document.querySelectorAll("select[data-submit]")) {
  select.addEventListener("change", () => select.form.submit());
}
(function () {
  const banner = document.getElementById("offline");
  let pending = new Set();
  let busy = false;
  const fetchedAt = new Map();

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
            part.dataset.stale = "1";  // being filled in: swapped at the next change
            continue;
          }
          fetchedAt.set(part.id, Date.now());
          if (part.innerHTML !== next.innerHTML) part.innerHTML = next.innerHTML;
          part.className = next.className;
          delete part.dataset.stale;
        }
      }
    } catch (e) {
      if (banner) banner.hidden = false;
    } finally {
      busy = false;
    }
  }

  const events = new EventSource("/events");
  events.addEventListener("hello", () => {
    if (banner && !banner.hidden) { banner.hidden = true; refresh(["*"]); }
    document.body.dataset.live = "connected";
  });
  events.addEventListener("changed", e => refresh(e.data.split(" ")));
  // Signed out (idle, logout elsewhere, a new password): the login page.
  events.addEventListener("signed-out", () => { events.close(); location.reload(); });
  events.onerror = () => {
    if (banner) banner.hidden = false;
    document.body.dataset.live = "lost";
  };
})();
