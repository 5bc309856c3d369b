// bsi-d2 serve: the preview, the progress poll and the result's toggles. No inline scripts
// (the pages' Content-Security-Policy admits this file only).
(function () {
  "use strict";

  // -- the adjust form: the server renders the preview with the chosen options ---------------
  const adjust = document.getElementById("adjust");
  const preview = document.getElementById("preview");
  if (adjust && preview) {
    let timer = null;
    const refresh = function () {
      const query = new URLSearchParams();
      for (const input of adjust.querySelectorAll("[data-preview]")) {
        query.set(input.name, input.type === "checkbox" ? (input.checked ? "1" : "0") : input.value);
      }
      const shown = document.getElementById("window-value");
      if (shown) { shown.textContent = adjust.elements.window.value; }
      preview.src = preview.dataset.base + "?" + query.toString();
    };
    adjust.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(refresh, 150);
    });
  }

  // -- a queued or running job: poll its status until it ends --------------------------------
  const progress = document.getElementById("progress");
  if (progress) {
    const poll = async function () {
      try {
        const response = await fetch(progress.dataset.statusUrl, {
          credentials: "same-origin", headers: { Accept: "application/json" },
        });
        if (response.ok) {
          const status = await response.json();
          document.getElementById("stage").textContent = status.stage || status.status;
          document.getElementById("position").textContent =
            status.position ? "(place " + status.position + " in the queue)" : "";
          document.getElementById("seconds").textContent = status.seconds || 0;
          if (status.status !== "queued" && status.status !== "running") {
            window.location.reload();
            return;
          }
        }
      } catch (error) { /* the server restarting: try again */ }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 500);
  }

  // -- the result: regions, lesions and window toggled on the server's overlay ----------------
  const viewer = document.getElementById("viewer");
  const view = document.getElementById("view");
  if (viewer && view) {
    const redraw = function () {
      const query = new URLSearchParams();
      for (const input of viewer.querySelectorAll("[data-view]")) {
        query.set(input.dataset.view, input.type === "checkbox" ? (input.checked ? "1" : "0") : input.value);
      }
      view.src = viewer.dataset.base + "?" + query.toString();
    };
    viewer.addEventListener("change", redraw);
  }
})();
