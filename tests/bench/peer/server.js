'use strict';
// Reference peer for the moonroom benchmark: the same semantics as
// tests/bench/bench.lua, written the way a Node.js developer would with `ws`.
//
//   ws://HOST:PORT/?room=NAME&role=pub|sub
//   every connection joins `room` (default "bench");
//   a message from a role=pub connection is sent to every member of its room
//   (itself included), keeping its text/binary kind; role=sub only listens.
//
// Usage: node server.js [PORT] [HOST] [deflate] [--tls-cert FILE --tls-key FILE]
// (or PORT / HOST in the environment). With `deflate`, permessage-deflate is on with the settings
// moonroom's --compression on uses: no context takeover either way (so no
// compressor state is kept between messages), messages under 128 bytes sent
// plain, compression level 1 (PEER_DEFLATE_LEVEL to change). ws compresses
// each recipient's copy on its own.
// With --tls-cert and --tls-key the port speaks only TLS (wss://): Node's
// https server with ws attached to it, as the ws documentation shows, with
// Node's default TLS settings (1.2 and 1.3, its default ciphers).
const fs = require('fs');
const https = require('https');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 8080);
const host = process.argv[3] || process.env.HOST || '127.0.0.1';
const rest = process.argv.slice(4);
const deflate = rest.includes('deflate');
const flag = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const tlsCert = flag('--tls-cert');
const tlsKey = flag('--tls-key');
if (!tlsCert !== !tlsKey) {
  process.stderr.write('--tls-cert and --tls-key go together\n');
  process.exit(2);
}
const tlsServer = tlsCert &&
  https.createServer({ cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey) });

const rooms = new Map(); // room name -> Set of sockets

const wss = new WebSocketServer({
  ...(tlsServer ? { server: tlsServer } : { host, port, backlog: 4096 }),
  clientTracking: false,
  perMessageDeflate: deflate && {
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
    threshold: 128,
    zlibDeflateOptions: { level: Number(process.env.PEER_DEFLATE_LEVEL || 1) },
  },
  maxPayload: 16 * 1024 * 1024,
});

wss.on('connection', (ws, req) => {
  const q = new URL(req.url, 'http://localhost').searchParams;
  const room = q.get('room') || 'bench';
  const role = q.get('role') || 'sub';
  let members = rooms.get(room);
  if (!members) {
    members = new Set();
    rooms.set(room, members);
  }
  members.add(ws);
  if (role === 'pub') {
    ws.on('message', (data, isBinary) => {
      for (const m of members) {
        if (m.readyState === 1) m.send(data, { binary: isBinary });
      }
    });
  }
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0 && rooms.get(room) === members) rooms.delete(room);
  });
  ws.on('error', () => {});
});

const onListening = () => {
  process.stdout.write(`listening ${host}:${port}${tlsServer ? ' (tls)' : ''}\n`);
};
const onError = (err) => {
  process.stderr.write(`server error: ${err.message}\n`);
  process.exit(1);
};
if (tlsServer) {
  tlsServer.on('error', onError);
  tlsServer.listen({ host, port, backlog: 4096 }, onListening);
} else {
  wss.on('listening', onListening);
  wss.on('error', onError);
}

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
