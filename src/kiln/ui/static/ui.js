// Kiln's web UI: the live run page and app mode. Plain JavaScript, no dependencies; the pages
// work without it, this only keeps them up to date without reloading.
"use strict";

(function () {
  function $(selector, root) { return (root || document).querySelector(selector); }

  // -- elapsed times that tick while a run is going --------------------------------------
  function tick() {
    document.querySelectorAll("[data-started]").forEach(function (el) {
      if (el.dataset.ended) { return; }
      var started = Date.parse(el.dataset.started);
      if (isNaN(started)) { return; }
      var seconds = Math.max(0, (Date.now() - started) / 1000);
      el.textContent = seconds < 60 ? seconds.toFixed(1) + " s"
        : Math.floor(seconds / 60) + " min " + Math.floor(seconds % 60) + " s";
    });
  }
  setInterval(tick, 500);

  // -- confirmations on buttons that change things ---------------------------------------
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = (button && button.dataset.confirm) || event.target.dataset.confirm;
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  // -- the run page -------------------------------------------------------------------------
  var run = $("#run-live");
  if (run) { followRun(run); }

  function followRun(root) {
    var log = $("#log", root);
    var currentCell = null;  // the live part is re-rendered: the cell is kept here
    function showCell() {
      var shown = $("#current-cell");
      if (shown && currentCell !== null) { shown.textContent = currentCell; }
    }
    var detail = $("#run-detail");
    var finished = root.dataset.finished === "1";
    var refreshing = false;

    function refresh(done) {
      if (refreshing) { return; }
      refreshing = true;
      fetch(root.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (answer) { return answer.ok ? answer.text() : null; })
        .then(function (html) {
          refreshing = false;
          if (html !== null && detail) {
            detail.innerHTML = html;  // rendered, escaped server-side
            if (root.dataset.finished !== "1") { showCell(); }
          }
          if (done) { done(); }
        })
        .catch(function () { refreshing = false; });
    }

    function cellDone(index, outcome, seconds) {
      var section = $("#live-cells");
      if (!section) { return; }
      var row = document.createElement("tr");
      [index, seconds.toFixed(2) + " s", outcome].forEach(function (text, i) {
        var cell = document.createElement("td");
        cell.textContent = text;
        if (i === 1) { cell.className = "num"; }
        row.appendChild(cell);
      });
      $("tbody", section).appendChild(row);
      section.hidden = false;
    }

    if (finished || !window.EventSource) { return; }
    var source = new EventSource(root.dataset.logUrl, { withCredentials: true });
    var timer = setInterval(function () { refresh(); }, 1500);
    source.addEventListener("log", function (event) {
      if (!log) { return; }
      var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.textContent += event.data + "\n";
      if (atEnd) { log.scrollTop = log.scrollHeight; }
      var lines = event.data.split("\n");
      for (var i = 0; i < lines.length; i++) {
        var started = /\bcell (\d+) started$/.exec(lines[i]);
        if (started) { currentCell = "cell " + started[1]; showCell(); }
        var ended = /\bcell (\d+) (\w+) in ([\d.]+)s$/.exec(lines[i]);
        if (ended) { cellDone(ended[1], ended[2], parseFloat(ended[3])); }
      }
    });
    source.addEventListener("end", function () {
      source.close();
      clearInterval(timer);
      currentCell = "—";
      showCell();
      var cancel = $("#cancel-button");
      if (cancel) { cancel.closest("form").remove(); }
      refresh(function () {
        root.dataset.finished = "1";
        var live = $("#live-cells");
        if (live) { live.remove(); }  // the final timings are in the run's record
        var output = $("#run-output");
        var frame = output && $("iframe", output);
        if (frame && !frame.getAttribute("src")) {
          frame.src = frame.dataset.src;
          output.hidden = false;
        }
      });
    });
    source.onerror = function () {
      // the server closes the stream when the run ends; a closed stream is not retried
      if (source.readyState === EventSource.CLOSED) { clearInterval(timer); refresh(); }
    };
  }

  // -- app mode -----------------------------------------------------------------------------
  var app = $("#app-form");
  if (app) { appMode(app); }

  function appMode(form) {
    var frame = $("#app-output");
    var status = $("#app-status");

    function say(text, kind) {
      status.textContent = text;
      status.className = "notice" + (kind ? " " + kind : "");
      status.hidden = !text;
    }

    function query() {
      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (name !== "csrf" && typeof value === "string") { params.append(name, value); }
      });
      return params;
    }

    function show(result) {
      frame.src = result.output;
      frame.hidden = false;
      say(result.cached ? "Shown from a recent run with the same parameters." : "", "ok");
    }

    function submit() {
      var params = query();
      history.replaceState(null, "", location.pathname + "?" + params.toString());
      say("Running…");
      document.querySelectorAll(".field .error[data-live]").forEach(function (el) { el.remove(); });
      window.kilnAppStarted = performance.now();
      fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        body: new URLSearchParams(new FormData(form))
      })
        .then(function (answer) { return answer.json().then(function (body) { return [answer, body]; }); })
        .then(function (pair) {
          var answer = pair[0], body = pair[1];
          if (!answer.ok) {
            if (body.field) { fieldError(body.field, body.detail); }
            say(body.detail || "The run could not start.", "bad");
            return null;
          }
          if (body.finished) { return body; }
          return fetch(body.wait, { credentials: "same-origin" }).then(function (r) { return r.json(); })
            .then(function (end) { return Object.assign(body, end); });
        })
        .then(function (result) {
          if (!result) { return; }
          if (result.state !== "succeeded") {
            say("The run ended " + result.state + (result.reason ? ": " + result.reason : "") + ".", "bad");
          }
          show(result);
        })
        .catch(function () { say("The server did not answer; try again.", "bad"); });
    }

    function fieldError(name, text) {
      var input = form.elements[name];
      if (!input || !input.closest) { return; }
      var holder = input.closest(".field");
      var note = document.createElement("p");
      note.className = "error";
      note.dataset.live = "1";
      note.id = "error-" + name;
      note.textContent = text;  // text, never markup
      holder.appendChild(note);
      input.setAttribute("aria-describedby", note.id);
    }

    frame.addEventListener("load", function () {
      if (frame.src && window.kilnAppStarted) {
        window.kilnAppShown = performance.now() - window.kilnAppStarted;
        document.body.dataset.appShown = "1";
      }
    });
    form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });
    if (form.dataset.autorun === "1") { submit(); }
  }
})();
