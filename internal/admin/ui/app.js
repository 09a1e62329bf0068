// prefork dashboard: polls /api/status, follows /api/events, draws the
// charts on canvases. Plain script, no build step, nothing from the network.
"use strict";

(function () {
  const POLL_MS = 1000;
  const HISTORY_S = 300; // charts: last 5 minutes
  const SHARE_S = 10; // share bars: last 10 seconds
  const MAX_EVENTS = 500;
  const COLORS = ["#4f81bd", "#c0504d", "#9bbb59", "#8064a2", "#4bacc6", "#f79646", "#2c4d75", "#772c2a"];
  // Events after which the table is out of date at once.
  const LIFECYCLE = new Set(["fork", "ready", "exit", "respawn", "drain", "reload", "scale", "hang", "recycle", "running", "stop"]);

  const $ = (sel) => document.querySelector(sel);
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const actionsOn = meta("prefork-actions") === "on";
  const token = meta("prefork-token");

  const history = []; // {t, total, slots: {slot: {rps, p99}}}
  const seen = new Map(); // pid -> {slot, samples: [{t, requests, uptime}]}

  // ---- formatting ----
  function dur(s) {
    if (s < 60) return s.toFixed(0) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }
  function ms(s) {
    if (!(s > 0)) return "-";
    const v = s * 1000;
    return (v < 10 ? v.toFixed(2) : v.toFixed(1)) + " ms";
  }
  function bytes(n) {
    if (!n) return "-";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }
  function cell(tr, text) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }

  // ---- status ----
  let inFlight = false, again = false, pollTimer = null;
  async function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    clearTimeout(pollTimer);
    try {
      const resp = await fetch("/api/status", { cache: "no-store" });
      if (resp.ok) render(await resp.json());
      else $("#summary").textContent = "status unavailable (" + resp.status + ")";
    } catch (e) {
      $("#summary").textContent = "supervisor unreachable";
    } finally {
      inFlight = false;
      pollTimer = setTimeout(refresh, again ? 0 : POLL_MS);
      again = false;
    }
  }
  let soonTimer = null;
  function refreshSoon() {
    if (soonTimer === null) soonTimer = setTimeout(() => { soonTimer = null; refresh(); }, 50);
  }

  function render(st) {
    const workers = st.workers || [];
    $("#summary").replaceChildren(
      document.createTextNode(`pid ${st.pid} · ${st.listen} · mode ${st.mode} · generation `),
      Object.assign(document.createElement("b"), { id: "generation", textContent: String(st.generation) }),
      document.createTextNode(` · up ${dur(st.uptime_s)} · `),
      Object.assign(document.createElement("b"), { id: "nworkers", textContent: String(workers.length) }),
      document.createTextNode(" workers"));
    const scaleN = $("#scale-n");
    if (document.activeElement !== scaleN && !scaleN.value) scaleN.value = new Set(workers.map((w) => w.slot)).size;

    const tbody = $("#workers tbody");
    const rows = workers.map((w) => {
      const tr = document.createElement("tr");
      tr.className = w.state;
      tr.dataset.slot = w.slot;
      tr.dataset.pid = w.pid;
      tr.dataset.generation = w.generation;
      tr.dataset.state = w.state;
      cell(tr, w.slot);
      cell(tr, w.pid);
      cell(tr, w.generation);
      cell(tr, w.state);
      cell(tr, dur(w.uptime_s));
      cell(tr, w.restarts);
      cell(tr, w.open_conns);
      cell(tr, w.requests_per_s.toFixed(1));
      cell(tr, ms(w.p50_s));
      cell(tr, ms(w.p99_s));
      cell(tr, bytes(w.rss_bytes));
      cell(tr, w.cpu_percent.toFixed(1) + "%");
      return tr;
    });
    tbody.replaceChildren(...rows);

    const now = Date.now() / 1000;
    record(now, workers);
    drawShare(now);
    drawCharts(now);
  }

  function record(now, workers) {
    const sample = { t: now, total: 0, slots: {} };
    for (const w of workers) {
      sample.total += w.requests_per_s;
      const s = sample.slots[w.slot] || (sample.slots[w.slot] = { rps: 0, p99: 0 });
      s.rps += w.requests_per_s;
      s.p99 = Math.max(s.p99, w.p99_s);
      let p = seen.get(w.pid);
      if (!p) seen.set(w.pid, (p = { slot: w.slot, samples: [] }));
      p.samples.push({ t: now, requests: w.requests, uptime: w.uptime_s });
    }
    history.push(sample);
    while (history.length && history[0].t < now - HISTORY_S) history.shift();
    for (const [pid, p] of seen) {
      // Keep one sample from before the window, as its baseline.
      while (p.samples.length > 1 && p.samples[1].t <= now - SHARE_S) p.samples.shift();
      if (p.samples[p.samples.length - 1].t < now - SHARE_S - 2) seen.delete(pid);
    }
  }

  // ---- share of requests per slot ----
  function drawShare(now) {
    const bySlot = new Map();
    for (const p of seen.values()) {
      const last = p.samples[p.samples.length - 1];
      let first = p.samples[0];
      // A worker started within the window served everything it counts
      // within it.
      if (first.t > now - SHARE_S && first.uptime <= SHARE_S) first = { requests: 0 };
      const n = Math.max(0, last.requests - first.requests);
      bySlot.set(p.slot, (bySlot.get(p.slot) || 0) + n);
    }
    const total = [...bySlot.values()].reduce((a, b) => a + b, 0);
    const bars = [...bySlot.keys()].sort((a, b) => a - b).map((slot) => {
      const n = bySlot.get(slot);
      const pct = total ? (100 * n) / total : 0;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.dataset.slot = slot;
      const label = document.createElement("span");
      label.textContent = "slot " + slot;
      const track = document.createElement("div");
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = pct.toFixed(1) + "%";
      fill.style.background = COLORS[slot % COLORS.length];
      track.appendChild(fill);
      const text = document.createElement("span");
      text.className = "pct";
      text.textContent = pct.toFixed(0) + "%";
      bar.title = n + " requests";
      bar.append(label, track, text);
      return bar;
    });
    $("#share").replaceChildren(...bars);
  }

  // ---- charts ----
  function drawCharts(now) {
    const slots = new Set();
    for (const s of history) for (const k of Object.keys(s.slots)) slots.add(Number(k));
    const sorted = [...slots].sort((a, b) => a - b);
    const perSlot = (field) => sorted.map((slot) => ({
      color: COLORS[slot % COLORS.length],
      points: history.filter((s) => s.slots[slot]).map((s) => [s.t, s.slots[slot][field]]),
    }));
    const total = { color: "#1d2329", width: 2, points: history.map((s) => [s.t, s.total]) };
    drawChart($("#chart-rps"), now, [total, ...perSlot("rps")], (v) => v.toFixed(0));
    drawChart($("#chart-p99"), now, perSlot("p99"), (v) => (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " ms");
    const legend = [{ color: "#1d2329", name: "total" }, ...sorted.map((slot) => ({ color: COLORS[slot % COLORS.length], name: "slot " + slot }))];
    $("#legend").replaceChildren(...legend.map((l) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = l.color;
      span.append(swatch, document.createTextNode(l.name));
      return span;
    }));
  }

  function drawChart(canvas, now, series, label) {
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || canvas.width, cssH = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(cssW * dpr)) { canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr); }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const left = 56, right = 8, top = 8, bottom = 18;
    const w = cssW - left - right, h = cssH - top - bottom;
    let ymax = 0;
    for (const s of series) for (const [, v] of s.points) ymax = Math.max(ymax, v);
    ymax = ymax > 0 ? ymax * 1.1 : 1;
    const x = (t) => left + ((t - (now - HISTORY_S)) / HISTORY_S) * w;
    const y = (v) => top + h - (v / ymax) * h;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6a737d";
    ctx.strokeStyle = "#d8dee4";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    for (let i = 0; i <= 4; i++) {
      const v = (ymax * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(left + w, y(v)); ctx.stroke();
      ctx.fillText(label(v), left - 4, y(v) + 4);
    }
    ctx.textAlign = "center";
    for (let m = 0; m <= 5; m++) ctx.fillText(m === 0 ? "now" : "-" + m + "m", x(now - m * 60), cssH - 4);
    for (const s of series) {
      if (s.points.length < 1) continue;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.width || 1.5;
      ctx.beginPath();
      s.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
    }
  }

  // ---- events ----
  function describe(e) {
    const skip = new Set(["time", "event"]);
    return Object.keys(e).filter((k) => !skip.has(k)).sort().map((k) => k + "=" + (typeof e[k] === "string" ? e[k] : JSON.stringify(e[k]))).join(" ");
  }
  function logEvent(e) {
    const li = document.createElement("li");
    li.className = e.event;
    li.dataset.event = e.event;
    if (e.pid !== undefined) li.dataset.pid = e.pid;
    if (e.slot !== undefined) li.dataset.slot = e.slot;
    const t = new Date(e.time);
    const when = isNaN(t) ? "" : t.toLocaleTimeString([], { hour12: false }) + "." + String(t.getMilliseconds()).padStart(3, "0");
    li.textContent = `${when} ${e.event} ${describe(e)}`;
    const list = $("#events");
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }
  function follow() {
    const stream = $("#stream");
    const es = new EventSource("/api/events");
    es.onopen = () => {
      stream.className = "stream on";
      stream.textContent = "events: live";
      refreshSoon(); // anything missed while disconnected shows in the status
    };
    es.onerror = () => {
      stream.className = "stream off";
      stream.textContent = "events: reconnecting";
    };
    es.onmessage = (m) => {
      let e;
      try { e = JSON.parse(m.data); } catch (err) { return; }
      logEvent(e);
      if (LIFECYCLE.has(e.event)) refreshSoon();
    };
  }

  // ---- actions ----
  async function act(path, body, question) {
    if (!window.confirm(question)) return;
    const result = $("#action-result");
    const buttons = document.querySelectorAll("#actions button");
    buttons.forEach((b) => (b.disabled = true));
    result.className = "";
    result.textContent = "working…";
    try {
      const resp = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Prefork-Token": token },
        body: JSON.stringify(body),
      });
      const r = await resp.json();
      result.className = r.ok ? "" : "error";
      result.textContent = r.ok ? (r.message || "done") : (r.error || resp.statusText);
    } catch (e) {
      result.className = "error";
      result.textContent = String(e);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      refreshSoon();
    }
  }
  if (actionsOn) {
    $("#actions").hidden = false;
    $("#reload").addEventListener("click", () => act("/api/reload", {}, "Reload every worker, slot by slot?"));
    $("#scale").addEventListener("click", () => {
      const n = Number($("#scale-n").value);
      act("/api/scale", { n }, `Scale to ${n} workers?`);
    });
  }

  follow();
  refresh();
})();
