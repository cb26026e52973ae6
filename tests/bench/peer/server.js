'use strict';
// Reference peer for the moonroom benchmark: the same semantics as
// tests/bench/bench.lua, written the way a Node.js developer would with `ws`.
//
//   ws://HOST:PORT/?room=NAME&role=pub|sub
//   every connection joins `room` (default "bench");
//   a message from a role=pub connection is sent to every member of its room
//   (itself included), keeping its text/binary kind; role=sub only listens.
//
// Usage: node server.js [PORT] [HOST] [deflate]   (or PORT / HOST in the
// environment). With `deflate`, permessage-deflate is on with the settings
// moonroom's --compression on uses: no context takeover either way (so no
// compressor state is kept between messages), messages under 128 bytes sent
// plain, compression level 1 (PEER_DEFLATE_LEVEL to change). ws compresses
// each recipient's copy on its own.
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 8080);
const host = process.argv[3] || process.env.HOST || '127.0.0.1';
const deflate = process.argv[4] === 'deflate';

const rooms = new Map(); // room name -> Set of sockets

const wss = new WebSocketServer({
  host,
  port,
  backlog: 4096,
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

wss.on('listening', () => {
  process.stdout.write(`listening ${host}:${port}\n`);
});
wss.on('error', (err) => {
  process.stderr.write(`server error: ${err.message}\n`);
  process.exit(1);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
