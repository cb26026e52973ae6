// Node.js `ws` over TLS (wss://) as a second independent client of moonroom.
// Driven by tests/integration/test_tls_node.py, which starts the real server
// with --tls-cert/--tls-key from a throw-away CA and decides what the facts
// printed here must be; this script only connects, sends, and reports what
// it saw as one JSON object on stdout.
//
//   node tests/node/tls.js GROUP URL CA_FILE
//
// GROUP is one of:
//   echo       round trips through echo.lua over TLS 1.3 and 1.2: small text,
//              binary, 1 MiB each way, and a message written to the TLS
//              socket one byte per TLS record
//   chat       two clients in a chat.lua room (URL is the room's address
//              without the query) see each other's messages
//   untrusted  a client that does not trust the CA (CA_FILE unused), and one
//              that trusts it but asks for another name: both must fail in
//              the TLS handshake with a certificate error
//   deflate    permessage-deflate over TLS (the server runs --compression on)
//
// ALPN "http/1.1" is offered on every connection (ws offers none by itself),
// and the protocol the server chose is reported.
"use strict";

const WebSocket = require("ws");
const crypto = require("node:crypto");
const fs = require("node:fs");

const WAIT = 15000; // every wait below is bounded by this (ms)

function sha(buf) {
  return crypto.createHash("sha256").update(buf).digest("hex").slice(0, 16);
}

// Chat-like text of exactly `len` ASCII bytes, varied so that nothing in
// the path can get away with a repeated byte.
function text(len, seed = 1) {
  let x = seed >>> 0 || 1;
  const rnd = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const words = "the room join hello world moonroom tls record cipher wss ada bob eve".split(" ");
  const parts = [];
  let n = 0;
  while (n < len) {
    const w = words[rnd() % words.length] + " ";
    parts.push(w);
    n += w.length;
  }
  return parts.join("").slice(0, len);
}

// Opens a client; resolves with helpers, or rejects with the error that
// ended the handshake (a TLS error carries a `code` such as
// UNABLE_TO_VERIFY_LEAF_SIGNATURE).
function open(url, opts) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: WAIT, ALPNProtocols: ["http/1.1"],
      perMessageDeflate: false, ...opts });
    const inbox = [];
    const waiters = [];
    let opened = false;
    ws.on("message", (data, isBinary) => {
      inbox.push({ data, isBinary });
      while (waiters.length && inbox.length) waiters.shift()(inbox.shift());
    });
    ws.on("error", (e) => {
      if (!opened) return reject(e);
      ws._closeInfo = { error: String(e.message || e) };
      while (waiters.length) waiters.shift()(null);
    });
    ws.on("close", (code, reason) => {
      ws._closeInfo = { ...ws._closeInfo, code, reason: reason.toString() };
      while (waiters.length) waiters.shift()(null);
    });
    ws.on("open", () => {
      opened = true;
      const sock = ws._socket;
      resolve({
        ws,
        tls: { protocol: sock.getProtocol(), cipher: sock.getCipher().name,
          alpn: sock.alpnProtocol || null, authorized: sock.authorized,
          peer_cn: (sock.getPeerCertificate() || {}).subject?.CN || null },
        next(ms = WAIT) {
          if (inbox.length) return Promise.resolve(inbox.shift());
          if (ws._closeInfo) return Promise.resolve(null);
          return new Promise((res, rej) => {
            const t = setTimeout(() => rej(new Error("no message within " + ms + " ms")), ms);
            waiters.push((m) => { clearTimeout(t); res(m); });
          });
        },
        async until(pred, ms = WAIT) {
          const deadline = Date.now() + ms;
          for (;;) {
            const m = await this.next(Math.max(1, deadline - Date.now()));
            if (m === null) return null;
            if (pred(m)) return m;
          }
        },
        close() {
          return new Promise((res) => {
            if (ws.readyState === WebSocket.CLOSED) return res();
            const t = setTimeout(() => { ws.terminate(); res(); }, 3000);
            ws.once("close", () => { clearTimeout(t); res(); });
            ws.close(1000);
          });
        },
      });
    });
  });
}

function send(ws, data, opts) {
  return new Promise((resolve, reject) => ws.send(data, opts || {}, (e) => (e ? reject(e) : resolve())));
}

async function roundTrip(c, data, binary) {
  await send(c.ws, data, { binary });
  const m = await c.next();
  if (m === null) return { ok: false, error: "closed", close: c.ws._closeInfo };
  const got = Buffer.isBuffer(m.data) ? m.data : Buffer.concat(m.data);
  const want = Buffer.from(data);
  return { ok: got.equals(want) && m.isBinary === !!binary, len: want.length,
    got_len: got.length, sha: sha(got) === sha(want) ? "same" : sha(got) + " != " + sha(want) };
}

// A masked client text frame, built by hand, as ws would build it.
function clientFrame(payload) {
  const mask = crypto.randomBytes(4);
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x81, 0x80 | n])
    : Buffer.from([0x81, 0x80 | 126, n >> 8, n & 255]);
  const body = Buffer.alloc(n);
  for (let i = 0; i < n; i++) body[i] = payload[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

// Writes one frame to the TLS socket under ws one byte at a time, each
// write its own TLS record (Node does not coalesce writes into records),
// with a turn of the event loop between them so that the records leave
// in separate TCP segments too; resolves with the echo.
async function tinyPieces(c, payload) {
  const sock = c.ws._socket;
  sock.setNoDelay(true);
  const frame = clientFrame(payload);
  for (let i = 0; i < frame.length; i++) {
    await new Promise((res, rej) => sock.write(frame.subarray(i, i + 1), (e) => (e ? rej(e) : res())));
    if (i % 16 === 0) await new Promise((r) => setImmediate(r));
  }
  const m = await c.next();
  if (m === null) return { ok: false, error: "closed", close: c.ws._closeInfo, records: frame.length };
  const got = Buffer.from(m.data);
  return { ok: got.equals(payload) && !m.isBinary, len: payload.length, records: frame.length };
}

async function echo(url, ca) {
  const out = { versions: {} };
  for (const [name, v] of [["tls1.3", {}], ["tls1.2", { maxVersion: "TLSv1.2" }]]) {
    const c = await open(url, { ca, ...v });
    const row = { tls: c.tls, rows: [] };
    const cases = [
      ["small text", "hello over tls", false],
      ["empty", "", false],
      ["binary 64 KiB", crypto.randomBytes(65536), true],
      ["text 1 MiB", text(1048576, 5), false],
      ["binary 1 MiB", crypto.randomBytes(1048576), true],
      ["small after 1 MiB", "still here", false],
    ];
    for (const [what, data, bin] of cases) {
      let r;
      try {
        r = await roundTrip(c, data, bin);
      } catch (e) {
        r = { ok: false, error: String(e.message || e), close: c.ws._closeInfo };
      }
      r.name = what;
      row.rows.push(r);
      if (!r.ok) break;
    }
    if (row.rows.every((r) => r.ok)) {
      const r = await tinyPieces(c, Buffer.from(text(300, 9)));
      r.name = "one byte per TLS record";
      row.rows.push(r);
    }
    await c.close();
    out.versions[name] = row;
  }
  return out;
}

async function chat(base, ca) {
  const room = "tls" + process.pid;
  const ada = await open(`${base}/?room=${room}&name=ada`, { ca });
  const bob = await open(`${base}/?room=${room}&name=bob`, { ca });
  const out = { tls: ada.tls };
  // chat.lua tells the room that bob joined; ada waits for it, so that
  // what follows reaches bob.
  out.ada_saw_bob_join = !!(await ada.until((m) => String(m.data).includes("bob joined")));
  await send(ada.ws, "hi bob, over tls");
  const big = text(100000, 3);
  out.bob_got = String((await bob.until((m) => String(m.data).includes("hi bob")))?.data ?? "");
  await send(bob.ws, big);
  const m = await ada.until((x) => String(x.data).length > 50000);
  out.ada_got_big = m !== null && String(m.data) === "bob: " + big;
  await ada.close();
  await bob.close();
  return out;
}

async function untrusted(url, ca) {
  const out = {};
  const attempt = async (opts) => {
    try {
      const c = await open(url, opts);
      await c.close();
      return { connected: true };
    } catch (e) {
      return { connected: false, code: e.code || null, message: String(e.message || e) };
    }
  };
  // No `ca`: Node's bundled roots, which do not include the test CA.
  out.no_ca = await attempt({});
  // The test CA trusted, but the certificate checked for a name it lacks.
  out.wrong_name = await attempt({ ca, servername: "not-this-server.example" ,
    checkServerIdentity: (host, cert) =>
      require("node:tls").checkServerIdentity("not-this-server.example", cert) });
  // And with the CA, as a control: this one must get through.
  out.with_ca = await attempt({ ca });
  return out;
}

async function deflate(url, ca) {
  let inflated = 0;
  const c = await open(url, { ca, perMessageDeflate: { threshold: 0 } });
  const ext = c.ws._extensions["permessage-deflate"];
  if (ext) {
    const dec = ext.decompress.bind(ext);
    ext.decompress = (d, fin, cb) => { inflated++; dec(d, fin, cb); };
  }
  const out = { tls: c.tls, extensions: c.ws.extensions, rows: [] };
  for (const [name, data] of [["10 KB chat", text(10000, 4)], ["1 MiB", text(1048576, 6)],
    ["small", "hi"]]) {
    const before = inflated;
    const r = await roundTrip(c, data, false);
    r.name = name;
    r.compressed_in = inflated - before;
    out.rows.push(r);
    if (!r.ok) break;
  }
  await c.close();
  return out;
}

async function main() {
  const [group, url, caFile] = process.argv.slice(2);
  const groups = { echo, chat, untrusted, deflate };
  if (!groups[group] || !url || !caFile) {
    process.stderr.write("usage: node tls.js echo|chat|untrusted|deflate URL CA_FILE\n");
    process.exit(2);
  }
  return groups[group](url, fs.readFileSync(caFile));
}

// Exits once stdout has taken the whole report.
function report(obj, status) {
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(status));
}

main().then((r) => report(r, 0), (e) => report({ fatal: String((e && e.stack) || e) }, 1));
