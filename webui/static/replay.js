// Replays a session's timeline: entries light up at their recorded offset
// divided by the chosen speed. Without script the whole timeline is shown.
(function () {
  "use strict";
  var player = document.getElementById("player");
  var entries = Array.prototype.slice.call(document.querySelectorAll("#timeline .entry"));
  if (!player || entries.length === 0) return;
  player.hidden = false;
  var play = document.getElementById("play");
  var speed = document.getElementById("speed");
  var clock = document.getElementById("clock");
  var offsets = entries.map(function (e) { return Number(e.dataset.offset) / 1e6; }); // ms
  var pos = 0;        // session time shown, ms
  var timer = null;
  var last = 0;

  function show() {
    var current = -1;
    entries.forEach(function (e, i) {
      var due = offsets[i] <= pos;
      e.classList.toggle("pending", !due);
      if (due) current = i;
    });
    entries.forEach(function (e, i) { e.classList.toggle("current", i === current); });
    clock.textContent = (pos / 1000).toFixed(3) + " s";
  }
  function tick() {
    var now = performance.now();
    pos += (now - last) * Number(speed.value);
    last = now;
    if (pos >= offsets[offsets.length - 1]) {
      pos = offsets[offsets.length - 1];
      stop();
    }
    show();
  }
  function stop() {
    clearInterval(timer);
    timer = null;
    play.textContent = "Play";
    player.dataset.state = "ended";
  }
  // Each entry's time jumps the replay there.
  entries.forEach(function (e, i) {
    var span = e.querySelector(".offset");
    if (!span) return;
    var jump = document.createElement("button");
    jump.type = "button";
    jump.className = "offset jump";
    jump.textContent = span.textContent;
    jump.setAttribute("aria-label", "Jump to " + span.textContent);
    jump.addEventListener("click", function () {
      pos = offsets[i];
      last = performance.now();
      show();
    });
    span.replaceWith(jump);
  });
  play.addEventListener("click", function () {
    if (timer) {
      clearInterval(timer);
      timer = null;
      play.textContent = "Play";
      player.dataset.state = "paused";
      return;
    }
    if (pos >= offsets[offsets.length - 1]) pos = 0;
    last = performance.now();
    timer = setInterval(tick, 50);
    play.textContent = "Pause";
    player.dataset.state = "playing";
    show();
  });
})();
