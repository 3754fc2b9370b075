// The dashboard: one self-contained page (no build step, nothing loaded from elsewhere) that the
// admin server serves at /. It asks for the API token, then polls the JSON API. Every value from
// the queue is put in the page as text (textContent), never as HTML: subjects and addresses are
// written by strangers.
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tern dashboard</title>
<style>
  :root { --fg: #1d2733; --muted: #5b6b7c; --line: #d6dde5; --bg: #f6f8fa; --accent: #1f6feb; --bad: #c62828; --warn: #b26a00; --good: #2e7d32; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; gap: 1rem; align-items: center; padding: .6rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 1.1rem; margin: 0; }
  #status { color: var(--muted); margin-left: auto; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 1rem; padding: 1rem; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 1rem; margin: 0 0 .6rem; }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
  th { color: var(--muted); font-weight: 600; white-space: nowrap; }
  td.nowrap { white-space: nowrap; overflow-wrap: normal; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .empty { color: var(--muted); font-style: italic; }
  .bad { color: var(--bad); } .warn { color: var(--warn); } .good { color: var(--good); }
  form { display: flex; gap: .5rem; margin-bottom: .6rem; }
  input { flex: 1; padding: .35rem .5rem; border: 1px solid var(--line); border-radius: 4px; font: inherit; }
  button { padding: .35rem .8rem; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 4px; font: inherit; cursor: pointer; }
  ol.timeline { list-style: none; margin: 0; padding: 0; }
  ol.timeline li { padding: .3rem 0 .3rem .8rem; border-left: 3px solid var(--line); margin-left: .3rem; }
  ol.timeline li.attempt { border-color: var(--accent); } ol.timeline li.operator { border-color: var(--warn); }
  ol.timeline li.refused { border-color: var(--bad); }
  .when { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: .5rem; }
  svg { width: 100%; height: 220px; display: block; }
  .legend span { display: inline-block; margin-right: .8rem; font-size: 12px; }
  .legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .25rem; vertical-align: -2px; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .8rem; margin: 0 0 .6rem; }
  dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
  #token-dialog { position: fixed; inset: 0; background: rgba(0,0,0,.35); display: none; align-items: center; justify-content: center; }
  #token-dialog form { background: #fff; padding: 1rem; border-radius: 6px; width: min(420px, 90vw); flex-direction: column; }
</style>
</head>
<body>
<header><h1>tern</h1><span id="backend"></span><span id="status">connecting…</span></header>
<main>
  <section class="wide">
    <h2>Queue depth over time</h2>
    <svg id="depth-chart" viewBox="0 0 800 220" preserveAspectRatio="none" role="img" aria-label="queue depth over time"></svg>
    <div class="legend" id="depth-legend"></div>
  </section>
  <section>
    <h2>Destinations</h2>
    <table id="summary"><thead><tr><th>domain</th><th class="num">total</th><th class="num">scheduled</th><th class="num">active</th><th class="num">held</th><th class="num">deferred</th><th>oldest</th><th>note</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Where is my message?</h2>
    <form id="lookup-form"><input id="lookup-id" placeholder="queue id or Message-ID" autocomplete="off"><button>Show</button></form>
    <div id="message"></div>
    <ol class="timeline" id="timeline"></ol>
  </section>
  <section>
    <h2>Recent deliveries and deferrals</h2>
    <table id="deliveries"><thead><tr><th>when</th><th>queue id</th><th>recipients</th><th>reply</th><th>server</th></tr></thead><tbody></tbody></table>
  </section>
  <section>
    <h2>Recent bounces</h2>
    <table id="bounces"><thead><tr><th>when</th><th>queue id</th><th>recipients</th><th>reply</th><th>why</th></tr></thead><tbody></tbody></table>
  </section>
  <section class="wide">
    <h2>Recent refusals (why was it rejected?)</h2>
    <table id="rejections"><thead><tr><th>when</th><th>client</th><th>sender</th><th>recipient</th><th>plugin / hook</th><th>reply</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<div id="token-dialog"><form id="token-form"><label for="token-input">Admin API token (config.admin)</label><input id="token-input" type="password" autocomplete="off"><button>Use token</button></form></div>
<script>
"use strict";
(function () {
  var REFRESH_MS = 5000;
  var COLORS = ["#1f6feb", "#c62828", "#2e7d32", "#b26a00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e", "#37474f", "#9e9d24"];
  var token = sessionStorage.getItem("tern-token") || "";
  // A token in the fragment (#token=...) is taken once and removed from the address bar.
  function tokenFromHash() {
    var hash = new URLSearchParams(location.hash.slice(1));
    if (!hash.get("token")) return false;
    token = hash.get("token");
    sessionStorage.setItem("tern-token", token);
    history.replaceState(null, "", location.pathname);
    return true;
  }
  tokenFromHash();
  window.addEventListener("hashchange", function () { if (tokenFromHash()) refresh(); });

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function time(ms) { return ms ? new Date(ms).toLocaleTimeString() : ""; }
  function dateTime(ms) { return ms ? new Date(ms).toLocaleString() : ""; }
  function age(ms) {
    if (!ms) return "";
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  function reply(r) { return r.code ? r.code + " " + (r.enhanced || "") + " " + (r.text || "") : ""; }
  function status(text, cls) { var s = document.getElementById("status"); s.textContent = text; s.className = cls || ""; }
  function fill(table, rows, columns) {
    var body = document.querySelector("#" + table + " tbody");
    body.replaceChildren();
    if (rows.length === 0) {
      body.appendChild(el("tr", {}, [el("td", { colspan: String(columns), class: "empty" }, ["nothing yet"])]));
    }
    rows.forEach(function (cells) { body.appendChild(el("tr", {}, cells)); });
  }

  function api(path, init) {
    return fetch(path, Object.assign({ headers: { authorization: "Bearer " + token } }, init || {})).then(function (res) {
      if (res.status === 401) { askToken(); throw new Error("the token was refused"); }
      return res.json().then(function (body) {
        if (!res.ok) throw new Error(body.error || ("HTTP " + res.status));
        return body;
      });
    });
  }

  function askToken() {
    document.getElementById("token-dialog").style.display = "flex";
    document.getElementById("token-input").focus();
  }
  document.getElementById("token-form").addEventListener("submit", function (event) {
    event.preventDefault();
    token = document.getElementById("token-input").value.trim();
    sessionStorage.setItem("tern-token", token);
    document.getElementById("token-dialog").style.display = "none";
    refresh();
  });

  function drawSummary(summary) {
    fill("summary", summary.destinations.map(function (d) {
      var note = [];
      if (d.suspendedUntil) note.push("suspended until " + dateTime(d.suspendedUntil));
      if (d.nextHop) note.push("rerouted: " + JSON.stringify(d.nextHop));
      return [
        el("td", {}, [d.domain]), el("td", { class: "num" }, [d.total]), el("td", { class: "num" }, [d.scheduled]),
        el("td", { class: "num" }, [d.active]), el("td", { class: "num" + (d.held ? " warn" : "") }, [d.held]),
        el("td", { class: "num" + (d.deferred ? " bad" : "") }, [d.deferred]), el("td", {}, [age(d.oldestCreatedAt)]),
        el("td", { class: note.length ? "warn" : "" }, [note.join("; ")])
      ];
    }), 8);
  }

  function drawHistory(samples) {
    var chart = document.getElementById("depth-chart");
    var legend = document.getElementById("depth-legend");
    chart.replaceChildren();
    legend.replaceChildren();
    var W = 800, H = 220, PAD = 24;
    if (samples.length === 0) {
      var t = svg("text", { x: String(W / 2), y: String(H / 2), "text-anchor": "middle", fill: "#5b6b7c" });
      t.textContent = "no samples yet";
      chart.appendChild(t);
      return;
    }
    var series = { total: samples.map(function (s) { return s.total; }) };
    samples.forEach(function (s, i) {
      Object.keys(s.destinations).forEach(function (d) {
        if (!series[d]) series[d] = samples.map(function () { return 0; });
        series[d][i] = s.destinations[d];
      });
    });
    var max = Math.max(1, Math.max.apply(null, series.total));
    var t0 = samples[0].at, t1 = samples[samples.length - 1].at;
    var span = Math.max(1, t1 - t0);
    function x(i) { return PAD + ((samples[i].at - t0) / span) * (W - 2 * PAD); }
    function y(v) { return H - PAD - (v / max) * (H - 2 * PAD); }
    chart.appendChild(svg("line", { x1: String(PAD), y1: String(H - PAD), x2: String(W - PAD), y2: String(H - PAD), stroke: "#d6dde5" }));
    var top = svg("text", { x: "2", y: String(PAD - 8), fill: "#5b6b7c", "font-size": "11" });
    top.textContent = String(max) + " jobs";
    chart.appendChild(top);
    var label = svg("text", { x: String(W - PAD), y: String(H - 6), fill: "#5b6b7c", "font-size": "11", "text-anchor": "end" });
    label.textContent = time(t0) + " – " + time(t1);
    chart.appendChild(label);
    Object.keys(series).forEach(function (name, n) {
      var color = COLORS[n % COLORS.length];
      var points = series[name].map(function (v, i) { return x(i).toFixed(1) + "," + y(v).toFixed(1); }).join(" ");
      var line = svg("polyline", { points: points, fill: "none", stroke: color, "stroke-width": name === "total" ? "2.5" : "1.5", "data-series": name });
      chart.appendChild(line);
      legend.appendChild(el("span", {}, [el("i", { style: "background:" + color }), name + " (" + series[name][series[name].length - 1] + ")"]));
    });
  }

  function drawActivity(activity) {
    fill("deliveries", activity.deliveries.map(function (a) {
      return [el("td", { class: "nowrap" }, [time(a.at)]), el("td", {}, [lookupLink(a.queueId)]), el("td", {}, [a.recipients.join(", ")]),
        el("td", { class: a.kind === "delivered" ? "good" : "warn" }, [reply(a)]), el("td", {}, [a.remoteMta || a.hop || ""])];
    }), 5);
    fill("bounces", activity.bounces.map(function (a) {
      return [el("td", { class: "nowrap" }, [time(a.at)]), el("td", {}, [lookupLink(a.queueId)]), el("td", {}, [a.recipients.join(", ")]),
        el("td", { class: "bad" }, [reply(a)]), el("td", {}, [a.reason || ""])];
    }), 5);
    fill("rejections", activity.rejections.map(function (r) {
      return [el("td", { class: "nowrap" }, [time(r.at)]), el("td", {}, [(r.remoteAddress || "") + (r.helo ? " (" + r.helo + ")" : "") + (r.listener ? " on " + r.listener : "")]),
        el("td", {}, [r.sender === undefined ? "" : "<" + r.sender + ">"]), el("td", {}, [r.recipient || ""]),
        el("td", {}, [r.plugin + " / " + r.hook]), el("td", { class: "bad" }, [r.code ? reply(r) : r.outcome])];
    }), 6);
  }

  function lookupLink(queueId) {
    var a = el("a", { href: "#" }, [queueId]);
    a.addEventListener("click", function (event) { event.preventDefault(); document.getElementById("lookup-id").value = queueId; lookup(); });
    return a;
  }

  function describe(event) {
    switch (event.type) {
      case "received":
        return "received from <" + event.mailFrom + "> for " + event.recipients.join(", ") +
          (event.remoteAddress ? " from " + event.remoteAddress : "") + (event.helo ? " (" + event.helo + ")" : "") +
          (event.listener ? " on " + event.listener : "") + ", " + event.size + " bytes";
      case "hook":
        return event.plugin + " " + event.hook + ": " + event.outcome + (event.code ? " " + event.code + " " + (event.enhanced || "") + " " + (event.text || "") : "") +
          " (" + event.durationMs + " ms)";
      case "attempt":
        return "attempt " + event.attempt + " to " + event.domain + (event.remoteMta ? " via " + event.remoteMta : "") + ": " +
          event.recipients.map(function (r) { return r.address + " " + r.result + " (" + r.code + " " + r.enhanced + " " + r.text + ")"; }).join("; ") +
          (event.nextAttemptAt ? "; next attempt " + dateTime(event.nextAttemptAt) : "") +
          (event.notices.length ? "; notice " + event.notices.join(", ") : "");
      case "operator":
        return "operator: " + event.action + (event.domain ? " " + event.domain : "") + (event.detail ? " (" + event.detail + ")" : "") +
          (event.notice ? "; bounce " + event.notice : "");
      default:
        return JSON.stringify(event);
    }
  }

  function showMessage(m) {
    var box = document.getElementById("message");
    var list = document.getElementById("timeline");
    box.replaceChildren();
    list.replaceChildren();
    var facts = [["queue id", m.queueId], ["state", m.state + (m.held ? " (held)" : "")], ["Message-ID", m.messageId || ""],
      ["from", m.envelope ? "<" + m.envelope.mailFrom + ">" : ""], ["received", dateTime(m.createdAt)]];
    (m.jobs || []).forEach(function (j) {
      facts.push(["job " + j.domain, j.state + ", " + j.attempts + " attempt(s)" + (j.nextAttemptAt ? ", next " + dateTime(j.nextAttemptAt) : "") + ": " +
        j.recipients.map(function (r) { return r.address + " " + r.status; }).join(", ")]);
    });
    var subject = (m.headers || []).filter(function (h) { return h[0].toLowerCase() === "subject"; })[0];
    if (subject) facts.push(["subject", subject[1]]);
    var dl = el("dl", { id: "message-facts" }, []);
    facts.forEach(function (f) { dl.appendChild(el("dt", {}, [f[0]])); dl.appendChild(el("dd", {}, [f[1]])); });
    box.appendChild(dl);
    m.timeline.forEach(function (event) {
      var refused = event.type === "hook" && ["reject", "tempfail", "disconnect", "error", "timeout"].indexOf(event.outcome) >= 0;
      list.appendChild(el("li", { class: event.type + (refused ? " refused" : ""), "data-type": event.type }, [
        el("span", { class: "when" }, [time(event.at)]), describe(event)
      ]));
    });
  }

  function lookup() {
    var id = document.getElementById("lookup-id").value.trim();
    if (!id) return;
    api("/api/messages/" + encodeURIComponent(id)).then(showMessage, function (error) {
      document.getElementById("timeline").replaceChildren();
      document.getElementById("message").replaceChildren(el("p", { class: "bad", id: "lookup-error" }, [error.message]));
    });
  }
  document.getElementById("lookup-form").addEventListener("submit", function (event) { event.preventDefault(); lookup(); });

  function refresh() {
    if (!token) { askToken(); return; }
    Promise.all([api("/api/health"), api("/api/queue/summary"), api("/api/queue/history"), api("/api/activity")]).then(function (r) {
      document.getElementById("backend").textContent = r[0].queue + " queue, " + r[1].totals.total + " job(s)";
      drawSummary(r[1]);
      drawHistory(r[2].samples);
      drawActivity(r[3]);
      status("updated " + time(Date.now()), "good");
    }, function (error) { status(error.message, "bad"); });
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
</script>
</body>
</html>
`;
