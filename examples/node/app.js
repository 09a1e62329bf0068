// A Node.js cluster app as Node's documentation writes it: the primary
// forks a worker per CPU, and each worker serves HTTP on port 3000.
//
// Run it by itself (node examples/node/app.js) and Node's own primary
// forks the workers. Run it under prefork,
//
//	./bin/supervisor -mode shared -- node examples/node/app.js
//
// and the supervisor stands in for the primary: it starts each worker
// itself (cluster.isPrimary is false in them), gives them its listening
// socket, respawns, reloads and drains them.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');
const { Worker } = require('node:worker_threads');

// PORT picks another port; 0 takes whatever port the supervisor listens on.
const port = process.env.PORT === undefined ? 3000 : Number(process.env.PORT);

// primesBelow counts the primes below n, on a worker thread so that the
// event loop keeps serving meanwhile.
const primesSource = `
const { parentPort, workerData: n } = require('node:worker_threads');
let count = 0;
for (let i = 2; i < n; i++) {
  let prime = true;
  for (let d = 2; d * d <= i; d++) {
    if (i % d === 0) { prime = false; break; }
  }
  if (prime) count++;
}
parentPort.postMessage(count);
`;

function primesBelow(n) {
  return new Promise((resolve, reject) => {
    const t = new Worker(primesSource, { eval: true, workerData: n });
    t.once('message', resolve);
    t.once('error', reject);
  });
}

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body) + '\n');
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  switch (url.pathname) {
    case '/':
      res.end('hello from ' + process.pid + '\n');
      return;
    case '/pid':
      res.end(String(process.pid));
      return;
    case '/health':
      json(res, 200, { status: 'ok', pid: process.pid, worker: cluster.worker.id });
      return;
    case '/heavy': {
      const n = Number(url.searchParams.get('n') || 100000);
      if (!Number.isInteger(n) || n < 0 || n > 50000000) {
        json(res, 400, { error: 'n must be an integer from 0 to 50000000' });
        return;
      }
      json(res, 200, { n, primes: await primesBelow(n), pid: process.pid });
      return;
    }
    case '/send': {
      // process.send goes to the primary: under prefork, to `ctl events`.
      const text = url.searchParams.get('text') || 'hello';
      process.send({ from: cluster.worker.id, text });
      res.end('sent\n');
      return;
    }
    case '/disconnect':
      // The worker leaves on its own: it stops listening, finishes its
      // connections and exits. Under prefork its slot gets a new worker.
      res.end('bye from ' + process.pid + '\n', () => cluster.worker.disconnect());
      return;
  }
  res.writeHead(404);
  res.end('not found\n');
}

if (cluster.isPrimary) {
  for (let i = 0; i < os.availableParallelism(); i++) {
    cluster.fork();
  }
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} exited (${signal || code})`);
  });
} else {
  http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      res.writeHead(500);
      res.end(String(err) + '\n');
    });
  }).listen(port);
}
