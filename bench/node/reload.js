'use strict';
// Node's cluster reload pattern, the reference for keep-alive connections
// through reloads (make bench, the keep-alive table). No dependencies.
//
//   node reload.js PORT [WORKERS]
//
// The primary forks WORKERS workers (default 2) that serve GET /pid and
// POST /submit (read the body, answer the pid) on 127.0.0.1:PORT. SIGHUP is
// a rolling reload as PM2 and most Node deploy scripts do it: for each old
// worker, fork a new one, wait for its 'listening', then disconnect the
// old one (its server closes: no new connections, idle keep-alive ones are
// closed, busy ones after their response), killed if it has not exited
// 1.6 s later, as PM2 does. SIGTTIN forks one more worker,
// SIGTTOU disconnects one. It logs JSON lines on stderr: "all workers
// ready", "reload done", "scale done". SIGTERM stops it.

const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.argv[2] ?? 3000);
const count = Number(process.argv[3] ?? 2);

function log(msg, fields) {
  process.stderr.write(JSON.stringify({ level: 'info', ts: new Date().toISOString(), logger: 'node-reload', msg, ...fields }) + '\n');
}

function primary() {
  const fork = () => new Promise((resolve) => {
    const w = cluster.fork();
    w.once('listening', () => resolve(w));
  });
  const live = new Set();
  let busy = Promise.resolve();
  const serially = (what, f) => { busy = busy.then(f).then(() => log(what, { workers: live.size })); };
  // As PM2's reload: disconnect, and kill a worker that has not exited
  // after killTimeout (PM2's kill_timeout default): a keep-alive client
  // that keeps its connection busy would otherwise hold it forever.
  const killTimeout = 1600;
  const retire = (w) => new Promise((resolve) => {
    live.delete(w);
    const t = setTimeout(() => w.process.kill('SIGKILL'), killTimeout);
    w.once('exit', () => { clearTimeout(t); resolve(); });
    w.disconnect();
  });

  (async () => {
    const ws = await Promise.all(Array.from({ length: count }, fork));
    ws.forEach((w) => live.add(w));
    log('all workers ready', { workers: live.size });
  })();
  process.on('SIGHUP', () => serially('reload done', async () => {
    for (const old of [...live]) {
      const w = await fork();
      live.add(w);
      await retire(old);
    }
  }));
  process.on('SIGTTIN', () => serially('scale done', async () => { live.add(await fork()); }));
  process.on('SIGTTOU', () => serially('scale done', async () => {
    const old = [...live][0];
    if (live.size > 1) await retire(old);
  }));
  const stop = () => {
    for (const w of live) w.process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function worker() {
  const pid = String(process.pid);
  http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': pid.length });
      res.end(pid);
    });
  }).listen(port, '127.0.0.1');
}

if (cluster.isPrimary) primary(); else worker();
