'use strict';
// A socket.io 4 app written for @socket.io/sticky, as its README shows:
// the primary (setupMaster) reads each connection's first packet and
// passes the socket to the worker that owns its engine.io session; each
// worker (setupWorker) serves the sessions it is handed and never listens.
//
// Under prefork the primary's half is not needed: prefork is the primary.
//
//   supervisor -workers 4 -worker-protocol node -sticky socketio -- node app.js
//
// runs the worker branch, unmodified: prefork peeks at each connection's
// request line (never consuming it), routes a request that names a session
// (?sid=...) to the worker that reported it, and hands the socket over as
// the {type: 'sticky:connection'} message setupWorker expects.
//
// Run by itself, `node app.js` is the same app under Node's own primary:
// STICKY=none makes it a plain cluster app whose workers listen and whose
// primary deals connections round-robin without stickiness, which breaks
// every long-polling session (engine.io answers "Session ID unknown").
//
// PORT (3000), WORKERS (4) and HOST (127.0.0.1) come from the environment.

const cluster = require('node:cluster');
const http = require('node:http');
const { Server } = require('socket.io');
const { setupMaster, setupWorker } = require('@socket.io/sticky');

const port = Number(process.env.PORT ?? 3000);
const workers = Number(process.env.WORKERS ?? 4);
const host = process.env.HOST ?? '127.0.0.1';
const sticky = process.env.STICKY !== 'none';

if (cluster.isPrimary) {
  const httpServer = http.createServer();
  if (sticky) {
    setupMaster(httpServer, { loadBalancingMethod: 'least-connection' });
    httpServer.listen(port, host);
  }
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (w, code, signal) => {
    if (!w.exitedAfterDisconnect) cluster.fork();
  });
  cluster.on('listening', () => {}); // STICKY=none: the workers listen
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  const worker = Number(process.env.PREFORK_WORKER_ID ?? cluster.worker.id);
  // Any request that is not socket.io's says which worker answered.
  const httpServer = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ status: 'ok', pid: process.pid, worker }) + '\n');
  });
  const io = new Server(httpServer);
  if (sticky) {
    setupWorker(io);
  } else {
    httpServer.listen(port, host);
  }
  io.on('connection', (socket) => {
    // An acknowledged echo: the client learns which process serves it.
    socket.on('echo', (n, ack) => {
      if (typeof ack === 'function') ack({ n, pid: process.pid, worker });
    });
  });
}
