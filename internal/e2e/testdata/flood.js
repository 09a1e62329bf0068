// A Node.js cluster worker that floods its primary with messages on
// request: GET /flood?n=N&kib=K sends N messages of K KiB with
// process.send, then answers. Under prefork each becomes a "message"
// event for every event stream.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');

http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== '/flood') {
    res.end(String(process.pid));
    return;
  }
  const n = Number(url.searchParams.get('n') || 1);
  const pad = 'x'.repeat(Number(url.searchParams.get('kib') || 1) * 1024);
  for (let i = 0; i < n; i++) process.send({ from: cluster.worker.id, i, pad });
  res.end('sent ' + n + '\n');
}).listen(0);
