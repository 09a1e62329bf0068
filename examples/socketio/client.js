'use strict';
// Load for the socket.io example: N clients, each forced to long-polling
// (transports: ['polling'], the transport that needs stickiness: every poll
// is a new HTTP request), each sending M acknowledged emits, one at a time.
//
//   node client.js URL [CLIENTS [EMITS]]
//
// With PAUSE=K each client stops after K emits; once every client has, the
// script prints "paused" and waits for a line on stdin before going on (a
// test kills a worker meanwhile). Clients reconnect on their own
// (socket.io's default) after a lost session.
//
// The last line on stdout is a JSON report: per client, the engine.io
// session ids it had, the worker pids that answered, its acks, and its
// errors: handshake (connect_error), unknown (a request of its session
// answered 400 "Session ID unknown") and disconnects; before is what it
// had seen at the pause.

const { io } = require('socket.io-client');

const url = process.argv[2] ?? 'http://127.0.0.1:3000';
const clients = Number(process.argv[3] ?? 200);
const emits = Number(process.argv[4] ?? 20);
const pause = Number(process.env.PAUSE ?? 0);
const timeoutMs = Number(process.env.ACK_TIMEOUT_MS ?? 10000);

let resume;
const resumed = new Promise((r) => { resume = r; });
let pausedCount = 0;

function unknownSid(err) {
  const ctx = err && err.context;
  const text = ctx && (ctx.responseText ?? '');
  return (typeof text === 'string' && text.includes('Session ID unknown')) ||
    (err && err.description === 400);
}

// snapshot is what a client had seen when it paused.
function snapshot(r) {
  return { acks: r.acks, handshake: r.handshake, unknown: r.unknown, disconnects: r.disconnects, pids: [...r.pids] };
}

async function run(id) {
  const r = { id, sids: [], pids: [], acks: 0, handshake: 0, unknown: 0, disconnects: 0, timeouts: 0, reasons: [] };
  const socket = io(url, { transports: ['polling'], forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 500 });
  socket.on('connect', () => { r.sids.push(socket.io.engine.id); });
  socket.on('connect_error', (err) => {
    r.handshake++;
    if (unknownSid(err)) r.unknown++;
  });
  socket.on('disconnect', (reason, details) => {
    r.disconnects++;
    r.reasons.push(reason);
    if (details && unknownSid(details)) r.unknown++;
  });
  for (let n = 0; n < emits; n++) {
    if (pause > 0 && n === pause) {
      r.before = snapshot(r);
      if (++pausedCount === clients) process.stdout.write('paused\n');
      await resumed;
    }
    try {
      const res = await socket.timeout(timeoutMs).emitWithAck('echo', n);
      r.acks++;
      if (!r.pids.includes(res.pid)) r.pids.push(res.pid);
    } catch {
      r.timeouts++;
    }
  }
  socket.close();
  if (!r.before) r.before = snapshot(r);
  return r;
}

if (pause > 0) {
  process.stdin.once('data', () => resume());
}

Promise.all(Array.from({ length: clients }, (_, i) => run(i))).then((results) => {
  // Exit once the report is written: a pipe may take it in several writes.
  process.stdout.write(JSON.stringify(results) + '\n', () => process.exit(0));
});
