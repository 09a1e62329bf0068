// prefork dashboard: loads what the supervisor remembers (/api/history),
// then polls /api/status and follows /api/events, and draws the charts on
// canvases. Plain script, no build step, nothing from the network.
"use strict";

(function () {
  const POLL_MS = 1000;
  const HISTORY_S = 300; // charts: last 5 minutes
  const SHARE_S = 10; // share bars: last 10 seconds
  const MAX_EVENTS = 500;
  const COLORS = ["#4f81bd", "#c0504d", "#9bbb59", "#8064a2", "#4bacc6", "#f79646", "#2c4d75", "#772c2a"];
  // Events after which the table is out of date at once.
  const LIFECYCLE = new Set(["fork", "ready", "exit", "respawn", "drain", "reload", "scale", "hang", "recycle", "running", "stop", "dropped"]);
  const CRED_KEY = "prefork-credential";

  const $ = (sel) => document.querySelector(sel);
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const actionsOn = meta("prefork-actions") === "on";
  const token = meta("prefork-token");
  const scheme = meta("prefork-auth"); // "", "Bearer" or "Basic"

  const history = []; // {t, total, slots: {slot: {rps, p50, p99, rss, cpu}}}
  const seen = new Map(); // pid -> {slot, samples: [{t, requests, uptime}]}
  let lastEvent = 0; // sequence number of the last event shown

  // ---- credential: asked once, kept for the tab's session ----
  let credential = scheme ? sessionStorage.getItem(CRED_KEY) : null;
  class Unauthorized extends Error {}
  function headers(extra) {
    const h = Object.assign({ "X-Prefork-Page": "1" }, extra || {});
    if (credential) h.Authorization = credential;
    if (token) h["X-Prefork-Token"] = token;
    return h;
  }
  // api fetches path with the credential; a 401 asks for it again.
  async function api(path, opts) {
    opts = Object.assign({ cache: "no-store" }, opts || {});
    opts.headers = headers(opts.headers);
    const resp = await fetch(path, opts);
    if (resp.status === 401 && scheme) {
      askLogin("");
      throw new Unauthorized("unauthorized");
    }
    return resp;
  }
  function askLogin(message) {
    credential = null;
    sessionStorage.removeItem(CRED_KEY);
    $("#login-box").hidden = false;
    $("#login-error").textContent = message;
    const basic = scheme === "Basic";
    $("#login-user-row").hidden = !basic;
    $("#login-secret-label").textContent = basic ? "password" : "token";
    (basic && !$("#login-user").value ? $("#login-user") : $("#login-secret")).focus();
  }
  async function login(ev) {
    ev.preventDefault();
    const secret = $("#login-secret").value;
    const cred = scheme === "Basic"
      ? "Basic " + btoa(String.fromCharCode(...new TextEncoder().encode($("#login-user").value + ":" + secret)))
      : "Bearer " + secret.trim();
    $("#login-submit").disabled = true;
    try {
      const resp = await fetch("/api/status", { cache: "no-store", headers: { "X-Prefork-Page": "1", Authorization: cred } });
      if (resp.ok) {
        credential = cred;
        sessionStorage.setItem(CRED_KEY, cred);
        $("#login-secret").value = "";
        $("#login-box").hidden = true;
        $("#login-error").textContent = "";
        start();
      } else if (resp.status === 429) {
        const wait = resp.headers.get("Retry-After") || "a few";
        $("#login-error").textContent = `Too many failed attempts: try again in ${wait} s.`;
      } else if (resp.status === 401) {
        $("#login-error").textContent = scheme === "Basic" ? "Wrong user or password." : "Wrong token.";
      } else {
        $("#login-error").textContent = "The supervisor answered " + resp.status + ".";
      }
    } catch (e) {
      $("#login-error").textContent = "Supervisor unreachable.";
    } finally {
      $("#login-submit").disabled = false;
    }
  }
  $("#login").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => { sessionStorage.removeItem(CRED_KEY); location.reload(); });

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
  function clock(t) {
    const d = new Date(t);
    if (isNaN(d)) return "";
    const hms = d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
    return d.toDateString() === new Date().toDateString() ? hms : d.toLocaleDateString() + " " + hms;
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  // classes is a worker's answers by status class, if it reports them.
  function classes(w) {
    const c = w.status_classes || w.classes || w.responses;
    if (c && typeof c === "object") return c;
    if (w.status_2xx !== undefined || w.status_5xx !== undefined) return { "2xx": w.status_2xx, "4xx": w.status_4xx, "5xx": w.status_5xx };
    return null;
  }

  // renderCanary shows a canary reload: its state, the two generations
  // side by side over the bake, and the verdict with its reason.
  function renderCanary(c) {
    $("#canary-box").hidden = !c;
    if (!c) return;
    let text = `${c.state}: slots ${(c.slots || []).join(", ")}, generation ${c.generation} against ${c.old_generation}, baked ${dur(c.baked_s)} of ${dur(c.bake_s)}`;
    if (c.verdict) text += ` · verdict ${c.verdict}: ${c.why}`;
    $("#canary-state").textContent = text;
    $("#canary-state").className = c.verdict && c.verdict !== "pass" ? "error" : "";
    const row = (name, gen, f) => {
      const tr = document.createElement("tr");
      cell(tr, `${gen} (${name})`);
      cell(tr, f.workers);
      cell(tr, f.requests);
      cell(tr, f.errors);
      cell(tr, f.error_rate < 0 ? "-" : (100 * f.error_rate).toFixed(2));
      cell(tr, f.p99_s < 0 ? "-" : ms(f.p99_s));
      cell(tr, f.crashes);
      cell(tr, f.hangs);
      return tr;
    };
    $("#canary tbody").replaceChildren(row("old", c.old_generation, c.old || {}), row("canary", c.generation, c.new || {}));
  }

  // ---- status ----
  let inFlight = false, again = false, pollTimer = null;
  async function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    clearTimeout(pollTimer);
    let retry = true;
    try {
      const resp = await api("/api/status");
      if (resp.ok) render(await resp.json());
      else $("#summary").textContent = "status unavailable (" + resp.status + ")";
    } catch (e) {
      if (e instanceof Unauthorized) retry = false;
      else $("#summary").textContent = "supervisor unreachable";
    } finally {
      inFlight = false;
      if (retry) pollTimer = setTimeout(refresh, again ? 0 : POLL_MS);
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
      document.createTextNode(`pid ${st.pid} · `),
      // Several listeners: each by name (NAME=ADDRESS), as ctl status says.
      Object.assign(document.createElement("span"), { id: "listeners", textContent: (st.listeners || [st.listen]).join(", ") }),
      document.createTextNode(` · mode ${st.mode} · generation `),
      Object.assign(document.createElement("b"), { id: "generation", textContent: String(st.generation) }),
      document.createTextNode(` · up ${dur(st.uptime_s)} · `),
      Object.assign(document.createElement("b"), { id: "nworkers", textContent: String(workers.length) }),
      document.createTextNode(" workers"));
    if (st.sticky) {
      const sk = st.sticky;
      $("#summary").append(document.createTextNode(` · sticky ${sk.key || "-"}: `),
        Object.assign(document.createElement("b"), { id: "sticky-keys", textContent: String(sk.table_keys) }),
        document.createTextNode(` claimed keys, ${sk.hits} hits, ${sk.fallbacks} fallbacks, ${sk.peek_timeouts} peek timeouts, ${sk.proxy_rejected} PROXY rejected`));
    }
    document.querySelectorAll("th.sticky").forEach((th) => (th.hidden = !(st.sticky && st.sticky.key)));
    const scaleN = $("#scale-n");
    if (document.activeElement !== scaleN && !scaleN.value) scaleN.value = new Set(workers.map((w) => w.slot)).size;

    renderCanary(st.canary);
    const anyClasses = workers.some((w) => classes(w));
    document.querySelectorAll("th.classes").forEach((th) => (th.hidden = !anyClasses));
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
      if (anyClasses) {
        const c = classes(w) || {};
        for (const k of ["2xx", "4xx", "5xx"]) cell(tr, c[k] === undefined ? "-" : String(c[k]), "classes c" + k + (c[k] > 0 ? " some" : ""));
      }
      if (st.sticky && st.sticky.key) cell(tr, `${w.sticky_keys || 0} / ${w.sticky_conns || 0}`, "sticky");
      return tr;
    });
    $("#workers tbody").replaceChildren(...rows);

    const now = Date.now() / 1000;
    record(now, workers);
    drawShare(now);
    drawCharts(now);
  }

  // sample adds one point per slot: rates and memory add up over a slot's
  // workers (two during a reload), latency takes the worst.
  function sample(t, workers) {
    const s = { t, total: 0, slots: {} };
    for (const w of workers) {
      s.total += w.requests_per_s;
      const v = s.slots[w.slot] || (s.slots[w.slot] = { rps: 0, p50: 0, p99: 0, rss: 0, cpu: 0 });
      v.rps += w.requests_per_s;
      v.p50 = Math.max(v.p50, w.p50_s);
      v.p99 = Math.max(v.p99, w.p99_s);
      v.rss += w.rss_bytes;
      v.cpu += w.cpu_percent;
    }
    return s;
  }

  function record(now, workers) {
    history.push(sample(now, workers));
    while (history.length && history[0].t < now - HISTORY_S) history.shift();
    for (const w of workers) {
      let p = seen.get(w.pid);
      if (!p) seen.set(w.pid, (p = { slot: w.slot, samples: [] }));
      p.samples.push({ t: now, requests: w.requests, uptime: w.uptime_s });
    }
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
  // ticks returns about n round values from 0 to at least max (steps of
  // 1, 2 or 5 times a power of ten), and how many decimals they need, so
  // that a quiet service reads 0, 0.5, 1 and never 0, 0, 1, 1.
  function ticks(max, n) {
    if (!(max > 0)) max = 1;
    const raw = max / n;
    const pow = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw);
    const top = Math.ceil(max / step - 1e-9) * step;
    const out = [];
    for (let v = 0; v <= top + step / 2; v += step) out.push(v);
    return { values: out, top, decimals: Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) };
  }
  window.preforkTicks = ticks; // for the browser tests

  // A unit scales values for one axis: its ticks are round in its unit.
  const UNITS = {
    rps: () => ({ div: 1, suffix: "" }),
    seconds: (max) => (max >= 1 ? { div: 1, suffix: " s" } : { div: 1e-3, suffix: " ms" }),
    bytes: (max) => (max >= 1 << 30 ? { div: 1 << 30, suffix: " GiB" } : max >= 1 << 20 ? { div: 1 << 20, suffix: " MiB" } : { div: 1 << 10, suffix: " KiB" }),
    percent: () => ({ div: 1, suffix: "%" }),
  };

  function drawCharts(now) {
    const slots = new Set();
    for (const s of history) for (const k of Object.keys(s.slots)) slots.add(Number(k));
    const sorted = [...slots].sort((a, b) => a - b);
    const perSlot = (field, extra) => sorted.map((slot) => Object.assign({
      color: COLORS[slot % COLORS.length],
      points: history.filter((s) => s.slots[slot]).map((s) => [s.t, s.slots[slot][field]]),
    }, extra || {}));
    const total = { color: "#1d2329", width: 2, points: history.map((s) => [s.t, s.total]) };
    drawChart($("#chart-rps"), now, [total, ...perSlot("rps")], UNITS.rps);
    drawChart($("#chart-latency"), now, [...perSlot("p99"), ...perSlot("p50", { dash: [4, 3], width: 1 })], UNITS.seconds);
    // A worker's RSS is 0 until first measured: not a point.
    const rss = perSlot("rss").map((s) => Object.assign(s, { points: s.points.filter(([, v]) => v > 0) }));
    drawChart($("#chart-rss"), now, rss, UNITS.bytes);
    drawChart($("#chart-cpu"), now, perSlot("cpu"), UNITS.percent);
    const legend = [{ color: "#1d2329", name: "total" }, ...sorted.map((slot) => ({ color: COLORS[slot % COLORS.length], name: "slot " + slot }))];
    $("#legend").replaceChildren(...legend.map((l) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = l.color;
      span.append(swatch, document.createTextNode(l.name));
      return span;
    }));
  }

  function drawChart(canvas, now, series, unitOf) {
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || canvas.width, cssH = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(cssW * dpr)) { canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr); }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const left = 64, right = 8, top = 8, bottom = 18;
    const w = cssW - left - right, h = cssH - top - bottom;
    let max = 0;
    for (const s of series) for (const [, v] of s.points) max = Math.max(max, v);
    const unit = unitOf(max);
    const axis = ticks(max / unit.div, 4);
    const ymax = axis.top * unit.div;
    const x = (t) => left + ((t - (now - HISTORY_S)) / HISTORY_S) * w;
    const y = (v) => top + h - (v / ymax) * h;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6a737d";
    ctx.strokeStyle = "#d8dee4";
    ctx.lineWidth = 1;
    ctx.setLineDash([]);
    ctx.textAlign = "right";
    const labels = [];
    for (const v of axis.values) {
      const py = y(v * unit.div);
      ctx.beginPath(); ctx.moveTo(left, py); ctx.lineTo(left + w, py); ctx.stroke();
      const label = v.toFixed(axis.decimals) + unit.suffix;
      labels.push(label);
      ctx.fillText(label, left - 4, py + 4);
    }
    canvas.dataset.ticks = labels.join(","); // for the browser tests
    canvas.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
    ctx.textAlign = "center";
    for (let m = 0; m <= 5; m++) {
      ctx.textAlign = m === 0 ? "right" : m === 5 ? "left" : "center";
      ctx.fillText(m === 0 ? "now" : "-" + m + "m", x(now - m * 60), cssH - 4);
    }
    ctx.save();
    ctx.beginPath(); ctx.rect(left, 0, w, cssH); ctx.clip();
    for (const s of series) {
      if (s.points.length < 1) continue;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.width || 1.5;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      s.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
    }
    ctx.restore();
  }

  // ---- events ----
  function describe(e) {
    const skip = new Set(["time", "event"]);
    return Object.keys(e).filter((k) => !skip.has(k)).sort().map((k) => k + "=" + (typeof e[k] === "string" ? e[k] : JSON.stringify(e[k]))).join(" ");
  }
  // logEvent puts e on top of the list: newest first.
  function logEvent(e) {
    const li = document.createElement("li");
    li.className = e.event;
    li.dataset.event = e.event;
    if (e.pid !== undefined) li.dataset.pid = e.pid;
    if (e.slot !== undefined) li.dataset.slot = e.slot;
    const when = document.createElement("time");
    when.dateTime = e.time || "";
    when.textContent = clock(e.time);
    const what = document.createElement("b");
    what.textContent = e.event;
    li.append(when, what, document.createTextNode(" " + describe(e)));
    const list = $("#events");
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  // follow reads the event stream with fetch, which, unlike EventSource,
  // can send the credential in a header. It resumes after the last event
  // shown (Last-Event-ID), so nothing is missed or shown twice.
  let following = false;
  async function follow() {
    if (following) return;
    following = true;
    try { await followLoop(); } finally { following = false; }
  }
  async function followLoop() {
    const stream = $("#stream");
    for (;;) {
      try {
        const resp = await api("/api/events", { headers: { "Last-Event-ID": String(lastEvent) } });
        if (!resp.ok) throw new Error("status " + resp.status);
        stream.className = "stream on";
        stream.textContent = "events: live";
        refreshSoon(); // anything missed while disconnected shows in the status
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let end;
          while ((end = buf.indexOf("\n\n")) >= 0) {
            frame(buf.slice(0, end));
            buf = buf.slice(end + 2);
          }
        }
      } catch (e) {
        if (e instanceof Unauthorized) return;
      }
      stream.className = "stream off";
      stream.textContent = "events: reconnecting";
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  function frame(text) {
    let id = 0, data = "";
    for (const line of text.split("\n")) {
      if (line.startsWith("id: ")) id = Number(line.slice(4));
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (!data || (id && id <= lastEvent)) return;
    if (id) lastEvent = id;
    let e;
    try { e = JSON.parse(data); } catch (err) { return; }
    logEvent(e);
    if (LIFECYCLE.has(e.event)) refreshSoon();
  }

  // loadHistory draws what the supervisor remembers: the charts' last 5
  // minutes and the recent events.
  async function loadHistory() {
    const resp = await api("/api/history");
    if (!resp.ok) return;
    const h = await resp.json();
    history.length = 0;
    for (const s of h.samples || []) history.push(sample(s.t, s.workers || []));
    for (const raw of h.events || []) logEvent(raw);
    lastEvent = h.last_event || 0;
    drawCharts(Date.now() / 1000);
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
      const resp = await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const r = await resp.json();
      result.className = r.ok ? "" : "error";
      result.textContent = r.ok ? (r.message || "done") : (r.error || resp.statusText);
    } catch (e) {
      result.className = "error";
      result.textContent = e instanceof Unauthorized ? "sign in again" : String(e);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      refreshSoon();
    }
  }
  if (actionsOn) {
    $("#reload").addEventListener("click", () => {
      const canary = Number($("#reload-canary").value) || 0;
      const bake = Number($("#reload-bake").value) || 30;
      if (canary > 0) act("/api/reload", { canary, bake_ms: bake * 1000 }, `Reload ${canary} slot(s) first, judge them for ${bake}s, then the rest or roll back?`);
      else act("/api/reload", { canary: 0 }, "Reload every worker, slot by slot?");
    });
    $("#scale").addEventListener("click", () => {
      const n = Number($("#scale-n").value);
      act("/api/scale", { n }, `Scale to ${n} workers?`);
    });
  }

  // start loads the history once, then follows and polls; after a new
  // sign-in it resumes what a 401 stopped.
  let loaded = false;
  async function start() {
    $("#actions").hidden = !actionsOn;
    $("#logout").hidden = !scheme;
    if (!loaded) {
      try {
        await loadHistory();
        loaded = true;
      } catch (e) {
        if (e instanceof Unauthorized) return;
      }
    }
    follow();
    refresh();
  }
  if (scheme && !credential) askLogin("");
  else start();
})();
