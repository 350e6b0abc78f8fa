// The live call page: progress and transcript over Server-Sent Events (/calls/{id}/events).
// Without JavaScript the page still works: reload it to see where the call stands.
"use strict";
(function () {
  const status = document.getElementById("call-status");
  if (!status || status.dataset.live !== "yes" || !window.EventSource) return;
  const id = status.dataset.call;
  const progress = document.getElementById("progress");
  const transcript = document.getElementById("transcript");
  const source = new EventSource("/calls/" + encodeURIComponent(id) + "/events");

  function item(parent, strong, text, cls) {
    const li = document.createElement("li");
    if (cls) li.className = cls;
    if (strong) {
      const b = document.createElement("strong");
      b.textContent = strong;
      li.appendChild(b);
      li.appendChild(document.createTextNode(": "));
    }
    li.appendChild(document.createTextNode(text));
    parent.appendChild(li);
    return li;
  }

  source.addEventListener("status", function (e) {
    const call = JSON.parse(e.data);
    status.textContent = call.status.replace(/_/g, " ");
    progress.replaceChildren();
    for (const ev of call.events) {
      const at = (ev.at || "").slice(11, 19);
      item(progress, null, ev.kind.replace(/_/g, " ") + " " + at + " UTC", null).dataset.kind =
        ev.kind;
    }
  });

  source.addEventListener("transcript", function (e) {
    const body = JSON.parse(e.data);
    const list = document.createElement("ol");
    list.className = "transcript";
    list.setAttribute("aria-live", "polite");
    for (const seg of body.segments) item(list, seg.speaker, seg.text, null);
    for (const [speaker, words] of Object.entries(body.partial || {})) {
      if (words) item(list, speaker, words + "…", "partial muted");
    }
    transcript.replaceChildren(list);
    const none = document.getElementById("no-transcript");
    if (none && list.children.length) none.remove();
  });

  source.addEventListener("end", function () {
    source.close();
    window.location.reload(); // the ended call's page: recording and final transcript
  });
})();
