'use strict';
// A Node cluster worker for the nodeipc tests: an HTTP server listening
// through the cluster protocol, plus a few messages to exercise the channel.
const cluster = require('cluster');
const http = require('http');
const net = require('net');

if (!cluster.isWorker) {
  console.error('worker.js: not a cluster worker (is NODE_UNIQUE_ID set?)');
  process.exit(3);
}

const server = http.createServer((req, res) => {
  res.setHeader('connection', 'close');
  res.end(JSON.stringify({ worker: cluster.worker.id, url: req.url }));
});
server.on('error', (err) => {
  process.send({ error: err.code, syscall: err.syscall });
});
server.listen(Number(process.env.TEST_PORT || 0), '127.0.0.1', () => {
  process.send({ hello: 1, address: server.address() });
});

process.on('message', (msg) => {
  if (msg.echo !== undefined) {
    process.send({ echo: msg.echo });
  }
  if (msg.sendServer) {
    // exclusive: listen here, not through the cluster primary.
    const s = net.createServer();
    s.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      process.send({ server: s.address().port }, s);
      // Node holds this message until the handle above is acknowledged.
      process.send({ after: 1 }, () => s.close());
    });
  }
});
