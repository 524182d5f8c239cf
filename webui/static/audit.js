// Follows the audit search live: new events are added on top of the
// table as the server sends them (server-sent events, /audit/live).
// Without script the page is a plain search.
(function () {
  "use strict";
  var controls = document.getElementById("live-controls");
  var tbody = document.querySelector("#events tbody");
  if (!controls || !tbody || !controls.dataset.src || !window.EventSource) return;
  controls.hidden = false;
  var button = document.getElementById("live");
  var state = document.getElementById("live-state");
  var source = null;

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }
  function add(ev) {
    var row = document.createElement("tr");
    row.className = "new";
    cell(row, ev.time).className = "nowrap";
    cell(row, ev.type);
    cell(row, ev.user);
    cell(row, ev.db);
    var sid = cell(row, "");
    if (ev.sid) {
      var a = document.createElement("a");
      a.className = "sid";
      a.href = "/sessions/" + encodeURIComponent(ev.sid).replace(/%2F/g, "/");
      a.textContent = ev.sid;
      sid.appendChild(a);
    }
    var td = cell(row, "");
    var details = document.createElement("details");
    var summary = document.createElement("summary");
    if (ev.statement) {
      var code = document.createElement("code");
      code.className = "stmt";
      code.textContent = ev.statement;
      summary.appendChild(code);
    } else {
      summary.textContent = ev.code;
    }
    var pre = document.createElement("pre");
    pre.className = "json";
    pre.textContent = ev.json;
    details.appendChild(summary);
    details.appendChild(pre);
    td.appendChild(details);
    tbody.insertBefore(row, tbody.firstChild);
  }
  function stop(text) {
    if (source) source.close();
    source = null;
    button.textContent = "Follow live";
    state.textContent = text;
    controls.dataset.state = "stopped";
  }
  button.addEventListener("click", function () {
    if (source) {
      stop("Stopped.");
      return;
    }
    source = new EventSource(controls.dataset.src);
    source.onopen = function () {
      state.textContent = "Following new events.";
      controls.dataset.state = "following";
    };
    source.onmessage = function (m) { add(JSON.parse(m.data)); };
    source.addEventListener("ended", function () { stop("Your session ended; sign in again."); });
    button.textContent = "Stop";
  });
})();
