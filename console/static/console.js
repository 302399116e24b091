// Live updates: the server says which panel changed (never what changed); the panel is fetched
// again through this page's own session, so it shows only what this person may see.
(function () {
  "use strict";
  const panels = () => document.querySelectorAll("[data-panel]");
  if (!panels().length || !window.EventSource) return;
  const waiting = new Map();
  async function refresh(element) {
    const answer = await fetch(element.dataset.src, {credentials: "same-origin", headers: {"HX-Request": "true"}});
    if (answer.status === 401) { window.location.reload(); return; }
    if (!answer.ok) return;
    element.innerHTML = await answer.text();
    if (window.htmx) window.htmx.process(element);
    element.dispatchEvent(new CustomEvent("console:refreshed", {bubbles: true}));
  }
  const source = new EventSource(document.body.dataset.events);
  source.addEventListener("changed", (event) => {
    panels().forEach((element) => {
      if (element.dataset.panel !== event.data || waiting.has(element)) return;
      // Many events in a burst: fetch the panel once, shortly after the first.
      waiting.set(element, setTimeout(() => { waiting.delete(element); refresh(element); }, 250));
    });
  });
  // htmx requests carry the session's CSRF token as a header, besides the forms' own field.
  document.addEventListener("htmx:configRequest", (event) => {
    const token = document.querySelector("meta[name=csrf-token]");
    if (token) event.detail.headers["X-CSRF-Token"] = token.content;
  });
})();
