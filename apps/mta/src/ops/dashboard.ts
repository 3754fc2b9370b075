// The dashboard: one self-contained page (no build step, nothing loaded from elsewhere) that the
// admin server serves at /. It asks for the API token, then polls the JSON API. Every value from
// the queue is put in the page as text (textContent), never as HTML: subjects and addresses are
// written by strangers.
//
// Layout: the summary first (queue counts, the store's health, depth over time), then one panel at
// a time under tabs whose labels carry their counts, so bounces and refusals are one click from the
// top at any size. `#id=<queue id or Message-ID>` opens a message's timeline (every queue id on the
// page links there); `#token=...` hands the page its token once.
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
  header { display: flex; gap: 1rem; align-items: baseline; padding: .6rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 1.1rem; margin: 0; }
  #backend { color: var(--muted); }
  #status { color: var(--muted); margin-left: auto; }
  main { padding: 1rem; display: flex; flex-direction: column; gap: 1rem; max-width: 1600px; margin: 0 auto; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; min-width: 0; }
  h2 { font-size: 1rem; margin: 0 0 .6rem; }
  #summary-section { display: grid; grid-template-columns: minmax(0, 5fr) minmax(0, 7fr); gap: 1rem; }
  @media (max-width: 900px) { #summary-section { grid-template-columns: minmax(0, 1fr); } }
  .tiles { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .5rem; align-content: start; }
  .tile { border: 1px solid var(--line); border-radius: 6px; padding: .4rem .6rem; min-width: 0; }
  .tile b { display: block; font-size: 1.4rem; font-weight: 600; font-variant-numeric: tabular-nums; }
  .tile span { color: var(--muted); font-size: 12px; }
  .tile.store { grid-column: 1 / -1; }
  .tile.store b { font-size: 1rem; }
  .tile.store.down { border-color: var(--bad); background: #fdecea; }
  .tile.store span { display: block; overflow-wrap: anywhere; }
  .tabs { display: flex; flex-wrap: wrap; gap: .25rem; border-bottom: 1px solid var(--line); margin: -.2rem 0 .8rem; }
  .tabs button { background: none; color: var(--fg); border: none; border-bottom: 3px solid transparent; border-radius: 0; padding: .4rem .7rem; font-weight: 600; }
  .tabs button[aria-selected="true"] { border-bottom-color: var(--accent); color: var(--accent); }
  .count { display: inline-block; min-width: 1.4em; padding: 0 .35em; border-radius: 1em; background: var(--line); color: var(--fg); font-size: 12px; text-align: center; }
  .count.bad { background: var(--bad); color: #fff; } .count.warn { background: var(--warn); color: #fff; }
  table { width: 100%; table-layout: fixed; border-collapse: collapse; font-size: 13px; }
  th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: break-word; }
  th { color: var(--muted); font-weight: 600; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .w-time { width: 5.5rem; } .w-id { width: 11.5rem; } .w-num { width: 5.5rem; } .w-kind { width: 8rem; } .w-why { width: 9rem; } .w-since { width: 11rem; }
  .w-by { width: 9rem; } .w-client { width: 16%; } .w-addr { width: 17%; } .w-server { width: 20%; }
  a.qid, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
  .empty { color: var(--muted); font-style: italic; }
  .bad { color: var(--bad); } .warn { color: var(--warn); } .good { color: var(--good); }
  button { padding: .35rem .8rem; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 4px; font: inherit; cursor: pointer; }
  button.more { padding: 0 .35rem; margin-left: .25rem; font-size: 11px; background: #fff; color: var(--accent); }
  form { display: flex; gap: .5rem; margin-bottom: .6rem; }
  input { flex: 1; padding: .35rem .5rem; border: 1px solid var(--line); border-radius: 4px; font: inherit; min-width: 0; }
  ol.timeline { list-style: none; margin: 0; padding: 0; }
  ol.timeline li { padding: .3rem 0 .3rem .8rem; border-left: 3px solid var(--line); margin-left: .3rem; overflow-wrap: break-word; }
  ol.timeline li.attempt { border-color: var(--accent); } ol.timeline li.operator { border-color: var(--warn); }
  ol.timeline li.refused { border-color: var(--bad); }
  .when { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: .5rem; }
  svg { width: 100%; height: 150px; display: block; }
  .legend span { display: inline-block; margin-right: .8rem; font-size: 12px; }
  .legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .25rem; vertical-align: -2px; }
  dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .15rem .8rem; margin: 0 0 .6rem; }
  dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
  #token-dialog { position: fixed; inset: 0; background: rgba(0,0,0,.35); display: none; align-items: center; justify-content: center; }
  #token-dialog form { background: #fff; padding: 1rem; border-radius: 6px; width: min(420px, 90vw); flex-direction: column; }
</style>
</head>
<body>
<header><h1>tern</h1><span id="backend"></span><span id="status">connecting…</span></header>
<main>
  <section id="summary-section" aria-label="summary">
    <div>
      <h2>Queue</h2>
      <div class="tiles">
        <!-- QUEUE-HEALTH: the store's health from GET /api/health ("store"), shown only when the queue backend offers health(). -->
        <div class="tile store" id="store-health" hidden><b id="store-state"></b><span id="store-detail"></span></div>
        <div class="tile"><b id="tile-total">–</b><span>jobs queued</span></div>
        <div class="tile"><b id="tile-scheduled">–</b><span>scheduled</span></div>
        <div class="tile"><b id="tile-deferred">–</b><span>deferred (failed before)</span></div>
        <div class="tile"><b id="tile-held">–</b><span>held</span></div>
        <div class="tile"><b id="tile-active">–</b><span>being delivered</span></div>
        <div class="tile"><b id="tile-destinations">–</b><span>destinations</span></div>
      </div>
    </div>
    <div>
      <h2>Queue depth over time</h2>
      <svg id="depth-chart" viewBox="0 0 800 150" preserveAspectRatio="none" role="img" aria-label="queue depth over time"></svg>
      <div class="legend" id="depth-legend"></div>
    </div>
  </section>
  <section id="panels">
    <div class="tabs" role="tablist" id="tabs">
      <button type="button" role="tab" id="tab-deliveries" aria-controls="panel-deliveries" aria-selected="true">Deliveries and deferrals <span class="count" id="count-deliveries"></span></button>
      <button type="button" role="tab" id="tab-bounces" aria-controls="panel-bounces" aria-selected="false">Bounces <span class="count" id="count-bounces"></span></button>
      <button type="button" role="tab" id="tab-refusals" aria-controls="panel-refusals" aria-selected="false">Refusals <span class="count" id="count-refusals"></span></button>
      <button type="button" role="tab" id="tab-destinations" aria-controls="panel-destinations" aria-selected="false">Destinations <span class="count" id="count-destinations"></span></button>
      <button type="button" role="tab" id="tab-shaping" aria-controls="panel-shaping" aria-selected="false">Traffic shaping <span class="count" id="count-shaping"></span></button>
      <button type="button" role="tab" id="tab-suppressions" aria-controls="panel-suppressions" aria-selected="false">Suppressed <span class="count" id="count-suppressions"></span></button>
      <button type="button" role="tab" id="tab-webhooks" aria-controls="panel-webhooks" aria-selected="false">Webhooks <span class="count" id="count-webhooks"></span></button>
      <button type="button" role="tab" id="tab-message" aria-controls="panel-message" aria-selected="false">Where is my message?</button>
    </div>
    <div role="tabpanel" id="panel-deliveries" aria-labelledby="tab-deliveries">
      <table id="deliveries"><thead><tr><th class="w-time">when</th><th class="w-id">queue id</th><th class="w-addr">recipients</th><th class="w-kind">result</th><th>reply</th><th class="w-server">server</th></tr></thead><tbody></tbody></table>
    </div>
    <div role="tabpanel" id="panel-bounces" aria-labelledby="tab-bounces" hidden>
      <table id="bounces"><thead><tr><th class="w-time">when</th><th class="w-id">queue id</th><th class="w-addr">recipients</th><th>reply</th><th class="w-why">why</th></tr></thead><tbody></tbody></table>
    </div>
    <div role="tabpanel" id="panel-refusals" aria-labelledby="tab-refusals" hidden>
      <table id="rejections"><thead><tr><th class="w-time">when</th><th class="w-client">client</th><th class="w-addr">sender</th><th class="w-addr">recipient</th><th class="w-by">refused by</th><th>reply</th></tr></thead><tbody></tbody></table>
    </div>
    <div role="tabpanel" id="panel-destinations" aria-labelledby="tab-destinations" hidden>
      <table id="summary"><thead><tr><th>domain</th><th class="num w-num">total</th><th class="num w-num">scheduled</th><th class="num w-num">active</th><th class="num w-num">held</th><th class="num w-num">deferred</th><th class="w-num">oldest</th><th>note</th></tr></thead><tbody></tbody></table>
    </div>
    <div role="tabpanel" id="panel-shaping" aria-labelledby="tab-shaping" hidden>
      <table id="warmup"><thead><tr><th class="w-addr">source</th><th class="w-num">day</th><th class="w-kind">cap per destination</th><th>use today</th></tr></thead><tbody></tbody></table>
      <table id="backoffs"><thead><tr><th class="w-addr">source → destination</th><th class="w-kind">action</th><th class="w-by">rule</th><th class="w-time">until</th><th>after the reply</th></tr></thead><tbody></tbody></table>
    </div>
    <div role="tabpanel" id="panel-suppressions" aria-labelledby="tab-suppressions" hidden>
      <form id="suppression-search"><input id="suppression-text" placeholder="search recipients" autocomplete="off"><button>Search</button></form>
      <form id="suppression-add"><input id="suppression-address" placeholder="recipient to suppress" autocomplete="off"><input id="suppression-scope" placeholder="sender domain, tag:name, or * for every sender" autocomplete="off"><input id="suppression-reason" placeholder="reason" autocomplete="off"><button>Suppress</button></form>
      <p id="suppression-error" class="bad" hidden></p>
      <table id="suppressions"><thead><tr><th class="w-by">scope</th><th class="w-addr">recipient</th><th class="w-why">why</th><th class="w-since">since</th><th>reason</th><th class="w-kind"></th></tr></thead><tbody></tbody></table>
    </div>
    <div role="tabpanel" id="panel-webhooks" aria-labelledby="tab-webhooks" hidden>
      <table id="webhooks"><thead><tr><th class="w-by">endpoint</th><th class="w-kind">state</th><th class="num w-num">pending</th><th class="w-time">last success</th><th class="w-time">last failure</th><th>last error</th></tr></thead><tbody></tbody></table>
    </div>
    <div role="tabpanel" id="panel-message" aria-labelledby="tab-message" hidden>
      <form id="lookup-form"><input id="lookup-id" placeholder="queue id or Message-ID" autocomplete="off"><button>Show</button></form>
      <div id="message"></div>
      <ol class="timeline" id="timeline"></ol>
    </div>
  </section>
</main>
<div id="token-dialog"><form id="token-form"><label for="token-input">Admin API token (config.admin)</label><input id="token-input" type="password" autocomplete="off"><button>Use token</button></form></div>
<script>
"use strict";
(function () {
  var REFRESH_MS = 5000;
  /** Characters of a remote reply or timeline line shown before its "more" button. */
  var CLIP = 160;
  var COLORS = ["#1f6feb", "#c62828", "#2e7d32", "#b26a00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e", "#37474f", "#9e9d24"];
  var token = sessionStorage.getItem("tern-token") || "";
  // Texts the operator expanded: they stay open when the tables are drawn again.
  var expanded = new Set();
  var pendingId = null;

  /**
   * Reads the fragment: a token (#token=...) is taken once and removed from the address bar; an
   * id (#id=...) names the message to open.
   */
  function readHash() {
    var hash = new URLSearchParams(location.hash.slice(1));
    var given = hash.get("token");
    var id = hash.get("id");
    if (given) {
      token = given;
      sessionStorage.setItem("tern-token", token);
      history.replaceState(null, "", location.pathname + (id ? "#id=" + encodeURIComponent(id) : ""));
    }
    return { token: Boolean(given), id: id };
  }
  pendingId = readHash().id;
  window.addEventListener("hashchange", function () {
    var hash = readHash();
    if (hash.id) pendingId = hash.id;
    if (hash.token) refresh(); else openPending();
  });

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
  function time(ms) { return ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : ""; }
  function dateTime(ms) { return ms ? new Date(ms).toLocaleString([], { hour12: false }) : ""; }
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

  /** Text, cut at CLIP characters with a button that shows the rest (and back). */
  function clipped(text) {
    text = String(text);
    if (text.length <= CLIP) return document.createTextNode(text);
    var shown = el("span", { class: "clip-text" }, []);
    var more = el("button", { type: "button", class: "more" }, []);
    function draw() {
      var open = expanded.has(text);
      shown.textContent = open ? text : text.slice(0, CLIP) + "…";
      more.textContent = open ? "less" : "more";
      more.setAttribute("aria-expanded", String(open));
    }
    more.addEventListener("click", function () {
      if (expanded.has(text)) expanded.delete(text); else expanded.add(text);
      draw();
    });
    draw();
    return el("span", { class: "clip" }, [shown, more]);
  }

  function fill(table, rows, columns) {
    var body = document.querySelector("#" + table + " tbody");
    body.replaceChildren();
    if (rows.length === 0) {
      body.appendChild(el("tr", {}, [el("td", { colspan: String(columns), class: "empty" }, ["nothing yet"])]));
    }
    rows.forEach(function (cells) { body.appendChild(el("tr", {}, cells)); });
  }
  function count(id, n, cls) {
    var badge = document.getElementById("count-" + id);
    badge.textContent = String(n);
    badge.className = "count" + (n > 0 && cls ? " " + cls : "");
  }

  function api(path, init) {
    return fetch(path, Object.assign({ headers: { authorization: "Bearer " + token } }, init || {})).then(function (res) {
      // Whichever request hears it first says so: the status and the dialog change together.
      if (res.status === 401) { status("the token was refused", "bad"); askToken(); throw new Error("the token was refused"); }
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

  function selectTab(name) {
    document.querySelectorAll("#tabs [role=tab]").forEach(function (tab) {
      var on = tab.id === "tab-" + name;
      tab.setAttribute("aria-selected", String(on));
      document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
    });
  }
  document.querySelectorAll("#tabs [role=tab]").forEach(function (tab) {
    tab.addEventListener("click", function () { selectTab(tab.id.slice(4)); });
  });

  function drawTiles(summary) {
    var t = summary.totals;
    ["total", "scheduled", "deferred", "held", "active"].forEach(function (k) {
      document.getElementById("tile-" + k).textContent = String(t[k]);
    });
    document.getElementById("tile-deferred").className = t.deferred ? "bad" : "";
    document.getElementById("tile-held").className = t.held ? "warn" : "";
    document.getElementById("tile-destinations").textContent = String(summary.destinations.length);
  }

  /** QUEUE-HEALTH: the store tile, drawn only when /api/health carries the backend's health. */
  function drawStore(store) {
    var tile = document.getElementById("store-health");
    tile.hidden = !store;
    if (!store) return;
    tile.className = "tile store" + (store.writable ? "" : " down");
    var state = document.getElementById("store-state");
    state.textContent = store.writable ? "store writable" : "store NOT writable";
    state.className = store.writable ? "good" : "bad";
    var detail = document.getElementById("store-detail");
    detail.replaceChildren();
    if (store.since) detail.appendChild(document.createTextNode("since " + dateTime(store.since)));
    if (store.lastError) detail.appendChild(document.createTextNode((store.since ? "; " : "") + "last error: " + store.lastError));
  }

  function drawSummary(summary) {
    count("destinations", summary.destinations.length);
    fill("summary", summary.destinations.map(function (d) {
      var note = [];
      if (d.suspendedUntil) note.push("suspended until " + dateTime(d.suspendedUntil));
      if (d.nextHop) note.push("rerouted: " + JSON.stringify(d.nextHop));
      return [
        el("td", {}, [d.domain]), el("td", { class: "num" }, [d.total]), el("td", { class: "num" }, [d.scheduled]),
        el("td", { class: "num" }, [d.active]), el("td", { class: "num" + (d.held ? " warn" : "") }, [d.held]),
        el("td", { class: "num" + (d.deferred ? " bad" : "") }, [d.deferred]), el("td", {}, [age(d.oldestCreatedAt)]),
        el("td", { class: note.length ? "warn" : "" }, [clipped(note.join("; "))])
      ];
    }), 8);
  }

  function drawHistory(samples) {
    var chart = document.getElementById("depth-chart");
    var legend = document.getElementById("depth-legend");
    chart.replaceChildren();
    legend.replaceChildren();
    var W = 800, H = 150, PAD = 20;
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
    var top = svg("text", { x: "2", y: String(PAD - 6), fill: "#5b6b7c", "font-size": "11" });
    top.textContent = String(max) + " jobs";
    chart.appendChild(top);
    var label = svg("text", { x: String(W - PAD), y: String(H - 4), fill: "#5b6b7c", "font-size": "11", "text-anchor": "end" });
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
    var deferrals = activity.deliveries.filter(function (a) { return a.kind !== "delivered"; }).length;
    count("deliveries", activity.deliveries.length, deferrals ? "warn" : "");
    count("bounces", activity.bounces.length, "bad");
    count("refusals", activity.rejections.length, "warn");
    fill("deliveries", activity.deliveries.map(function (a) {
      var good = a.kind === "delivered";
      return [el("td", {}, [time(a.at)]), el("td", {}, [messageLink(a.queueId)]), el("td", {}, [clipped(a.recipients.join(", "))]),
        el("td", { class: good ? "good" : "warn" }, [a.kind + (a.category ? " (" + a.category + ")" : "")]), el("td", { class: good ? "good" : "warn" }, [clipped(reply(a))]),
        el("td", { class: "mono" }, [a.remoteMta || a.hop || ""])];
    }), 6);
    fill("bounces", activity.bounces.map(function (a) {
      return [el("td", {}, [time(a.at)]), el("td", {}, [messageLink(a.queueId)]), el("td", {}, [clipped(a.recipients.join(", "))]),
        el("td", { class: "bad" }, [clipped(reply(a))]), el("td", {}, [(a.reason || "") + (a.category ? ", " + a.category : "")])];
    }), 5);
    fill("rejections", activity.rejections.map(function (r) {
      var by = r.by === "core" ? "core (" + (r.command || "") + ")" : r.plugin + " / " + r.hook;
      return [el("td", {}, [time(r.at)]), el("td", {}, [(r.remoteAddress || "") + (r.helo ? " (" + r.helo + ")" : "") + (r.listener ? " on " + r.listener : "")]),
        el("td", {}, [r.sender === undefined ? "" : "<" + r.sender + ">"]), el("td", {}, [r.recipient || ""]),
        el("td", {}, [by]), el("td", { class: "bad" }, [clipped(r.code ? reply(r) : r.outcome)])];
    }), 6);
  }

  function drawShaping(shaping) {
    var backoffs = shaping.backoffs || [];
    fill("warmup", (shaping.warmup || []).map(function (w) {
      return [el("td", {}, [w.source]), el("td", { class: "num" }, [String(w.day)]), el("td", {}, [w.warmed ? "warmed" : String(w.cap) + " a day"]),
        el("td", {}, [w.use.map(function (u) { return u.destination + " " + u.used + (u.cap === undefined ? "" : "/" + u.cap); }).join(", ")])];
    }), 4);
    count("shaping", backoffs.length, "warn");
    fill("backoffs", backoffs.map(function (b) {
      return [el("td", {}, [b.source + " → " + b.destination]), el("td", { class: "warn" }, [b.action + (b.detail ? " (" + b.detail + ")" : "")]),
        el("td", {}, [b.rule]), el("td", {}, [dateTime(b.until)]), el("td", {}, [clipped(reply(b.reply))])];
    }), 5);
  }

  // Webhook endpoints (GET /api/webhooks): the badge counts the failing ones.
  function drawWebhooks(body) {
    var endpoints = body.endpoints || [];
    count("webhooks", endpoints.filter(function (e) { return e.attempts > 0; }).length, "bad");
    fill("webhooks", endpoints.map(function (e) {
      var failing = e.attempts > 0;
      return [el("td", { title: e.url }, [e.name]),
        el("td", { class: failing ? "bad" : "good" }, [failing ? "failing (" + e.attempts + ")" : "ok"]),
        el("td", { class: "num" }, [String(e.pending)]),
        el("td", {}, [e.lastSuccessAt ? dateTime(e.lastSuccessAt) : "never"]),
        el("td", {}, [e.lastFailureAt ? dateTime(e.lastFailureAt) : "never"]),
        el("td", { class: failing ? "bad" : "" }, [clipped(e.lastError || "")])];
    }), 6);
  }

  /** A queue id that opens the message's timeline (#id=...). */
  function messageLink(queueId) {
    var href = "#id=" + encodeURIComponent(queueId);
    var a = el("a", { href: href, class: "qid" }, [queueId]);
    // The same fragment again fires no hashchange: open it here.
    a.addEventListener("click", function (event) {
      if (location.hash !== href) return;
      event.preventDefault();
      pendingId = queueId;
      openPending();
    });
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
          event.recipients.map(function (r) { return r.address + " " + r.result + (r.category ? " [" + r.category + "]" : "") + " (" + r.code + " " + r.enhanced + " " + r.text + ")"; }).join("; ") +
          (event.nextAttemptAt ? "; next attempt " + dateTime(event.nextAttemptAt) : "");
      case "shaping":
        return "shaping: " + ({ triggered: "set off ", waiting: "waiting for ", applied: "went around " }[event.cause] || "") + event.rule + " (" + event.action +
          (event.detail ? ": " + event.detail : "") + ") on " + event.source + " → " + event.destination + " until " + dateTime(event.until) +
          (event.code ? "; reply " + event.code + " " + (event.enhanced || "") + " " + (event.text || "") : "");
      case "operator":
        return "operator: " + event.action + (event.domain ? " " + event.domain : "") + (event.detail ? " (" + event.detail + ")" : "");
      case "async-bounce":
        return "later bounce (" + event.format + ") for " + event.recipient + ": " + event.action + (event.status ? " " + event.status : "") +
          (event.category ? " [" + event.category + "]" : "") + (event.diagnostic ? " (" + event.diagnostic + ")" : "");
      case "complaint":
        return "complaint (" + event.feedbackType + ") from " + event.recipient + (event.userAgent ? " via " + event.userAgent : "");
      default:
        return JSON.stringify(event);
    }
  }

  /** The queue ids of the notices an event sent (bounces, delay notices), as links. */
  function notices(event) {
    var ids = event.type === "attempt" ? event.notices : event.type === "operator" && event.notice ? [event.notice] : [];
    if (!ids.length) return [];
    var parts = ["; notice "];
    ids.forEach(function (id, i) { if (i) parts.push(", "); parts.push(messageLink(id)); });
    return parts;
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
    facts.forEach(function (f) { dl.appendChild(el("dt", {}, [f[0]])); dl.appendChild(el("dd", {}, [clipped(f[1])])); });
    box.appendChild(dl);
    m.timeline.forEach(function (event) {
      var refused = event.type === "hook" && ["reject", "tempfail", "disconnect", "error", "timeout"].indexOf(event.outcome) >= 0;
      list.appendChild(el("li", { class: event.type + (refused ? " refused" : ""), "data-type": event.type },
        [el("span", { class: "when" }, [time(event.at)]), clipped(describe(event))].concat(notices(event))));
    });
  }

  function lookup(id) {
    api("/api/messages/" + encodeURIComponent(id)).then(showMessage, function (error) {
      document.getElementById("timeline").replaceChildren();
      document.getElementById("message").replaceChildren(el("p", { class: "bad", id: "lookup-error" }, [error.message]));
    });
  }

  /** Opens the message a #id= fragment named, once there is a token to ask with. */
  function openPending() {
    if (!pendingId || !token) return;
    var id = pendingId;
    pendingId = null;
    document.getElementById("lookup-id").value = id;
    selectTab("message");
    document.getElementById("panels").scrollIntoView({ block: "start" });
    lookup(id);
  }
  document.getElementById("lookup-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var id = document.getElementById("lookup-id").value.trim();
    if (!id) return;
    // Through the fragment, so the address bar names the message (a link to share, back to return).
    var href = "#id=" + encodeURIComponent(id);
    pendingId = id;
    if (location.hash === href) openPending(); else location.hash = href;
  });

  // The suppression list: the newest entries (or those matching the search), each with a remove button.
  var suppressionSearch = "";
  function loadSuppressions() {
    return api("/api/suppressions?limit=100" + (suppressionSearch ? "&search=" + encodeURIComponent(suppressionSearch) : "")).then(function (page) {
      count("suppressions", page.total, "");
      fill("suppressions", page.entries.map(function (e) {
        var remove = el("button", { type: "button", class: "remove", "data-scope": e.scope, "data-address": e.address }, ["remove"]);
        remove.addEventListener("click", function () {
          api("/api/suppressions/" + encodeURIComponent(e.scope) + "/" + encodeURIComponent(e.address), { method: "DELETE" })
            .then(loadSuppressions, suppressionError);
        });
        return [el("td", {}, [e.scope]), el("td", {}, [e.address]), el("td", {}, [e.source + (e.category ? ", " + e.category : "")]),
          el("td", {}, [dateTime(e.createdAt) + (e.expiresAt ? " until " + dateTime(e.expiresAt) : "")]), el("td", {}, [clipped(e.reason)]), el("td", {}, [remove])];
      }), 6);
    });
  }
  function suppressionError(error) {
    var p = document.getElementById("suppression-error");
    p.textContent = error.message;
    p.hidden = false;
  }
  document.getElementById("suppression-search").addEventListener("submit", function (event) {
    event.preventDefault();
    suppressionSearch = document.getElementById("suppression-text").value.trim();
    loadSuppressions().catch(suppressionError);
  });
  document.getElementById("suppression-add").addEventListener("submit", function (event) {
    event.preventDefault();
    document.getElementById("suppression-error").hidden = true;
    var entry = { address: document.getElementById("suppression-address").value.trim(), scope: document.getElementById("suppression-scope").value.trim() || "*" };
    var reason = document.getElementById("suppression-reason").value.trim();
    if (reason) entry.reason = reason;
    api("/api/suppressions", { method: "POST", headers: { authorization: "Bearer " + token, "content-type": "application/json" }, body: JSON.stringify(entry) })
      .then(function () { document.getElementById("suppression-address").value = ""; document.getElementById("suppression-reason").value = ""; return loadSuppressions(); })
      .catch(suppressionError);
  });

  function refresh() {
    if (!token) { askToken(); return; }
    loadSuppressions().catch(function () { /* a backend without a list: the tab stays empty */ });
    Promise.all([api("/api/health"), api("/api/queue/summary"), api("/api/queue/history"), api("/api/activity"), api("/api/shaping")]).then(function (r) {
      document.getElementById("backend").textContent = r[0].queue + " queue, " + r[1].totals.total + " job(s)";
      drawStore(r[0].store);
      drawTiles(r[1]);
      drawSummary(r[1]);
      drawHistory(r[2].samples);
      drawActivity(r[3]);
      drawShaping(r[4]);
      status("updated " + time(Date.now()), "good");
      openPending();
      // After the main poll (its failure, a refused token included, is the one the status shows).
      api("/api/webhooks").then(drawWebhooks, function () { /* the tab keeps what it showed */ });
    }, function (error) { status(error.message, "bad"); });
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
</script>
</body>
</html>
`;
