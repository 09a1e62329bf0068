// A Node.js cluster app with two servers in each worker, plain node:cluster
// and node:http: one on a TCP port (PORT), one on a Unix socket path
// (SOCK). Each answers /pid with "NAME PID". Run by itself, its primary
// forks two workers; under prefork (-listen for both addresses) the
// supervisor is the primary and hands each server its listener.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');

if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
} else {
  const serve = (name) => (req, res) => {
    res.setHeader('Connection', 'close');
    res.end(`${name} ${process.pid}\n`);
  };
  http.createServer(serve('tcp')).listen(Number(process.env.PORT));
  http.createServer(serve('unix')).listen(process.env.SOCK);
}
