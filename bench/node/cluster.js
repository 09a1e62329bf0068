'use strict';
// Node's cluster module serving the demo worker's /health, /pid and
// /spin?us=N, the reference prefork is measured against (make bench). No
// dependencies.
//
//   NODE_CLUSTER_SCHED_POLICY=rr|none node cluster.js [PORT [WORKERS]]
//
// PORT and WORKERS may also come from the environment (defaults 3000 and 2);
// it listens on 127.0.0.1 (HOST overrides). NODE_CLUSTER_SCHED_POLICY is
// read by the cluster module when it loads: rr = the primary accepts and
// hands connections to workers (SCHED_RR), none = every worker accepts on
// the shared socket (SCHED_NONE).
//
// Like the supervisor with -log-format json, the primary logs JSON lines on
// stderr: "spawned worker" (slot, pid), "worker ready" (slot, pid, boot),
// "all workers ready" (startup), "worker exited unexpectedly". It replaces
// a worker that dies, and on SIGTERM or SIGINT stops the workers and exits 0.

const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.argv[2] ?? process.env.PORT ?? 3000);
const count = Number(process.argv[3] ?? process.env.WORKERS ?? 2);
const host = process.env.HOST ?? '127.0.0.1';

function log(msg, fields) {
  // Writes to a pipe are synchronous on Linux, so lines are never lost at exit.
  process.stderr.write(JSON.stringify({
    level: 'info', ts: new Date().toISOString(), logger: 'node-cluster', msg, ...fields,
  }) + '\n');
}

// since formats the time since t0 (a process.hrtime.bigint()) as a Go
// duration string, so the harness parses it like the supervisor's.
function since(t0) {
  return (Number(process.hrtime.bigint() - t0) / 1e6).toFixed(3) + 'ms';
}

// maxSpinUS bounds /spin's us, as in the Go demo.
const maxSpinUS = 100000;

// spin busy-loops until the process has used us more microseconds of CPU
// (user + system): CPU time, not wall time, so time spent preempted by a
// sibling worker does not count as work. Node has no per-thread CPU clock;
// the process's includes its helper threads (GC, libuv), which may end a
// spin a little early, never late.
function spin(us) {
  const start = process.cpuUsage();
  for (;;) {
    const d = process.cpuUsage(start);
    if (d.user + d.system >= us) return;
  }
}

function primary() {
  if (!Number.isInteger(port) || port < 0 || port > 65535 || !Number.isInteger(count) || count < 1) {
    process.stderr.write(`cluster.js: bad port ${process.argv[2]} or worker count ${process.argv[3]}\n`);
    process.exit(2);
  }
  const started = process.hrtime.bigint();
  const policy = cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'none';
  const slots = new Map(); // worker.id → slot
  let ready = 0;
  let stopping = false;

  function spawn(slot) {
    const t0 = process.hrtime.bigint();
    const w = cluster.fork({ PREFORK_WORKER_ID: String(slot), BENCH_MODE: policy });
    slots.set(w.id, slot);
    log('spawned worker', { slot, pid: w.process.pid });
    w.once('listening', () => {
      log('worker ready', { slot, pid: w.process.pid, boot: since(t0) });
      if (++ready === count) {
        log('all workers ready', { workers: count, startup: since(started) });
      }
    });
  }

  cluster.on('exit', (w, code, signal) => {
    const slot = slots.get(w.id);
    slots.delete(w.id);
    if (stopping) {
      if (slots.size === 0) process.exit(0);
      return;
    }
    log('worker exited unexpectedly', { slot, pid: w.process.pid, code, signal });
    spawn(slot);
  });

  function stop(signal) {
    if (stopping) return;
    stopping = true;
    log('stopping', { signal });
    if (slots.size === 0) process.exit(0);
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => {
      for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
      process.exit(0);
    }, 2000).unref();
  }
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  log('listening', { addr: `${host}:${port}`, mode: policy, workers: count });
  for (let slot = 1; slot <= count; slot++) spawn(slot);
}

function worker() {
  const id = Number(process.env.PREFORK_WORKER_ID ?? cluster.worker.id);
  const mode = process.env.BENCH_MODE ?? 'none';
  const started = process.hrtime.bigint();
  // The same fields as the Go demo's /health; "goroutines" stays for a body
  // of the same size (a Node worker runs one thread of JavaScript).
  const prefix = `{"status":"ok","pid":${process.pid},"worker":${id},"mode":"${mode}","generation":1,"uptime_s":`;
  const pid = String(process.pid);

  const server = http.createServer((req, res) => {
    const q = req.url.indexOf('?');
    const path = q < 0 ? req.url : req.url.slice(0, q);
    let code = 200;
    let type = 'application/json';
    let body;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      code = 405;
      body = '{"error":"method not allowed"}\n';
    } else if (path === '/health') {
      const up = (Number(process.hrtime.bigint() - started) / 1e9).toFixed(3);
      body = prefix + up + ',"goroutines":1}\n';
    } else if (path === '/spin') {
      const v = q < 0 ? null : new URLSearchParams(req.url.slice(q + 1)).get('us');
      const us = /^[0-9]+$/.test(v ?? '') ? Number(v) : -1;
      if (us < 0 || us > maxSpinUS) {
        code = 400;
        body = `{"error":"us must be an integer between 0 and ${maxSpinUS}"}\n`;
      } else {
        spin(us);
        body = `{"spun_us":${us},"pid":${process.pid}}\n`;
      }
    } else if (path === '/pid') {
      type = 'text/plain; charset=utf-8';
      body = pid;
    } else {
      code = 404;
      body = '{"error":"not found"}\n';
    }
    res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
  server.listen(port, host);
}

if (cluster.isPrimary ?? cluster.isMaster) {
  primary();
} else {
  worker();
}
