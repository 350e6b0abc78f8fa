// The recording page: waveform lanes from the server's peaks, the transcript word being played
// highlighted, a click on a word (or on the waveform) seeks there. No library, no inline script.
(function () {
  "use strict";
  const audio = document.getElementById("player");
  if (!audio) return; // deleted or still recording: nothing to play
  const words = Array.from(document.querySelectorAll("#transcript button.w"));
  const canvas = document.getElementById("waveform");
  let peaks = null;
  let current = null;

  function seek(seconds) {
    audio.currentTime = seconds;
    if (audio.paused) audio.play().catch(function () {}); // autoplay rules may refuse: seeking stands
  }

  words.forEach(function (w) {
    w.addEventListener("click", function () { seek(parseFloat(w.dataset.start)); });
  });

  function wordAt(t) {
    for (const w of words) {
      if (t >= parseFloat(w.dataset.start) && t < parseFloat(w.dataset.end)) return w;
    }
    return null;
  }

  function sync() {
    const w = wordAt(audio.currentTime);
    if (w !== current) {
      if (current) { current.classList.remove("playing"); current.removeAttribute("aria-current"); }
      if (w) { w.classList.add("playing"); w.setAttribute("aria-current", "true"); }
      current = w;
    }
    draw();
  }

  function tick() {
    sync();
    if (!audio.paused) window.requestAnimationFrame(tick);
  }

  audio.addEventListener("play", tick);
  audio.addEventListener("seeked", sync);
  audio.addEventListener("timeupdate", sync);

  function draw() {
    if (!canvas || !peaks) return;
    const ctx = canvas.getContext("2d");
    const width = canvas.width, lanes = peaks.lanes, laneHeight = canvas.height / lanes.length;
    ctx.clearRect(0, 0, width, canvas.height);
    lanes.forEach(function (lane, i) {
      const top = i * laneHeight, mid = top + laneHeight / 2, n = lane.peaks.length;
      ctx.fillStyle = "#59636e";
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillText(lane.name, 4, top + 12);
      for (let b = 0; b < n; b++) {
        const x = Math.floor((b / n) * width), w = Math.max(1, Math.ceil(width / n));
        const v = lane.peaks[b];
        if (v === null) { // a PCI pause: a gap, hatched so it is not read as silence
          ctx.fillStyle = "#e4e0d4";
          ctx.fillRect(x, top + 2, w, laneHeight - 4);
          continue;
        }
        ctx.fillStyle = i === 0 ? "#0b5cad" : "#1a7f37";
        const h = Math.max(1, v * (laneHeight / 2 - 4));
        ctx.fillRect(x, mid - h, w, 2 * h);
      }
    });
    const duration = peaks.duration_s || audio.duration;
    if (duration) {
      ctx.fillStyle = "#b3261e";
      ctx.fillRect(Math.floor((audio.currentTime / duration) * width), 0, 2, canvas.height);
    }
  }

  if (canvas) {
    fetch(canvas.dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { peaks = data; canvas.dataset.loaded = data ? "yes" : "no"; draw(); })
      .catch(function () { canvas.dataset.loaded = "no"; });
    canvas.addEventListener("click", function (event) {
      const duration = (peaks && peaks.duration_s) || audio.duration;
      if (!duration) return;
      const box = canvas.getBoundingClientRect();
      seek(((event.clientX - box.left) / box.width) * duration);
    });
  }
})();
