// The Node.js peer of `shopcue bench fanout`: the same broadcast with the `ws` package.
//
// Prints `READY <ws port> <control port>`. Every line received on the control port is a
// cue event as JSON ({"type":"start","cue":{...}}); it is sent to every subscriber of
// /v1/channels/<id>/cues as {"type":...,"offset":...,"cue":{...}}, serialised once per
// event (one Buffer shared by all sends), the idiomatic ws broadcast. Subscribers get a
// hello and an (empty) snapshot on connect, like shopcue's feed; a subscriber with more
// than 1 MiB buffered is closed (1008), and there is a ping every 30 s. Exits when stdin
// closes (the bench holds it).
'use strict';

const http = require('http');
const net = require('net');
const { WebSocketServer } = require('ws');

const SLOW_BYTES = 1 << 20;
const PING_MS = 30000;

let lastMs = 0;
let seq = 0;
function nextOffset() {
  const now = Date.now();
  if (now > lastMs) {
    lastMs = now;
    seq = 0;
  } else {
    seq += 1;
  }
  return `${lastMs}-${seq}`;
}
const currentOffset = () => `${lastMs}-${seq}`;

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"error":"not found"}');
});
const wss = new WebSocketServer({ noServer: true, maxPayload: 4096, perMessageDeflate: false });
const route = /^\/v1\/channels\/([A-Za-z0-9_-]{1,64})\/cues(\?.*)?$/;

server.on('upgrade', (req, socket, head) => {
  const m = route.exec(req.url);
  if (!m) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.isAlive = true;
    ws.on('pong', () => { ws.isAlive = true; });
    ws.on('message', () => {});
    ws.on('error', () => {});
    const offset = currentOffset();
    ws.send(JSON.stringify({
      type: 'hello', channel: m[1], server_time: new Date().toISOString(), offset,
      resumed: false, ping_interval_ms: PING_MS,
    }));
    ws.send(JSON.stringify({ type: 'snapshot', offset, cues: [] }));
  });
});

function broadcast(line) {
  let ev;
  try {
    ev = JSON.parse(line);
  } catch (e) {
    process.stderr.write(`bad control line: ${e}\n`);
    return;
  }
  const msg = Buffer.from(JSON.stringify({ type: ev.type, offset: nextOffset(), cue: ev.cue }));
  for (const client of wss.clients) {
    if (client.readyState !== 1) continue;
    if (client.bufferedAmount > SLOW_BYTES) {
      client.close(1008, 'client too slow');
      continue;
    }
    client.send(msg, { binary: false });
  }
}

const control = net.createServer((sock) => {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.length) broadcast(line);
    }
  });
  sock.on('error', () => {});
});

setInterval(() => {
  for (const client of wss.clients) {
    if (!client.isAlive) {
      client.terminate();
      continue;
    }
    client.isAlive = false;
    client.ping();
  }
}, PING_MS).unref();

server.listen(0, '127.0.0.1', 2048, () => {
  control.listen(0, '127.0.0.1', () => {
    process.stdout.write(`READY ${server.address().port} ${control.address().port}\n`);
  });
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
