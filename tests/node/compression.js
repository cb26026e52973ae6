// Node.js `ws` as a second independent client of moonroom, with
// permessage-deflate (RFC 7692). Driven by
// tests/integration/test_compression_node.py, which starts the real server
// and decides what the facts printed here must be; this script only
// connects, sends, and reports what it saw as one JSON object on stdout.
//
//   node tests/node/compression.js GROUP URL [URL2]
//
// GROUP is one of:
//   matrix     every perMessageDeflate offer ws can make, against echo.lua
//   sizes      every size class of message through echo.lua
//   fragments  fragmented sends (compressed and not), a ping between them
//   broadcast  a chat.lua room of compressing and plain clients (URL is the
//              room's address without the query)
//   plain      a client that offers nothing, and one that offers deflate
//
// Whether a frame from the server was compressed is read from ws itself: the
// extension's decompress() runs once per compressed frame and never for a
// plain one, so it is wrapped and counted per connection.
"use strict";

const WebSocket = require("ws");
const crypto = require("node:crypto");

const WAIT = 15000; // every wait below is bounded by this (ms)

// ------------------------------------------------------------ messages

// Chat-like JSON of exactly `len` bytes (ASCII, so bytes = characters): what
// the feature is for, compressible as real chat is, not one repeated byte.
const WORDS = ("the a room join left hello world moonroom deploy finished is ok " +
  "message sent from ada bob cy dan eve lobby chat ping pong reload build test " +
  "green red blue some more words with numbers").split(" ");

function chatText(len, seed = 1) {
  let x = seed >>> 0 || 1;
  const rnd = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const parts = [];
  let n = 0;
  let seq = 0;
  while (n < len) {
    let words = [];
    for (let i = 0, k = 3 + (rnd() % 9); i < k; i++) words.push(WORDS[rnd() % WORDS.length]);
    const line = JSON.stringify({ from: "user" + (rnd() % 50), room: "lobby", seq: seq++,
      ts: 1700000000000 + (rnd() % 100000), text: words.join(" ") }) + "\n";
    parts.push(line);
    n += line.length;
  }
  return parts.join("").slice(0, len);
}

// A block of `period` bytes of varied text repeated to `len` bytes: deflate
// finds matches `period` bytes back, so an inflater whose window is smaller
// than `period` fails on it ("invalid distance too far back").
function farRepeats(len, period) {
  const block = chatText(period, 7);
  return block.repeat(Math.ceil(len / period)).slice(0, len);
}

function sha(buf) {
  return crypto.createHash("sha256").update(buf).digest("hex").slice(0, 16);
}

// ------------------------------------------------------------ connections

// Opens a client; resolves { ws, inflated() , deflated(), inbox } or rejects
// with the handshake error. `pmd` is ws's perMessageDeflate option.
function open(url, pmd) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: pmd, handshakeTimeout: WAIT });
    const inbox = [];
    const waiters = [];
    const counts = { inflated: 0, deflated: 0 };
    const order = [];
    ws.on("message", (data, isBinary) => {
      const m = { data, isBinary, compressed: null };
      order.push("message");
      inbox.push(m);
      while (waiters.length && inbox.length) waiters.shift()(inbox.shift());
    });
    ws.on("pong", () => order.push("pong"));
    ws.on("error", (e) => {
      if (!ws._opened) return reject(e);
      // After the handshake: a frame ws could not take (it fails the
      // connection); whoever waits for a message hears of it now.
      ws._closeInfo = { error: String(e.message || e) };
      while (waiters.length) waiters.shift()(null);
    });
    ws.on("close", (code, reason) => {
      ws._closeInfo = { ...ws._closeInfo, code, reason: reason.toString() };
      while (waiters.length) waiters.shift()(null);
    });
    ws.on("open", () => {
      ws._opened = true;
      const ext = ws._extensions["permessage-deflate"];
      if (ext) {
        // Counts compressed frames in each direction.
        const dec = ext.decompress.bind(ext);
        ext.decompress = (d, fin, cb) => { counts.inflated++; dec(d, fin, cb); };
        const com = ext.compress.bind(ext);
        ext.compress = (d, fin, cb) => { counts.deflated++; com(d, fin, cb); };
      }
      resolve({
        ws, counts, order,
        ext: ext ? ext.params : null,
        // Resolves with the next message (or null when the socket closed).
        next(ms = WAIT) {
          if (inbox.length) return Promise.resolve(inbox.shift());
          if (ws._closeInfo) return Promise.resolve(null);
          return new Promise((res, rej) => {
            const t = setTimeout(() => rej(new Error("no message within " + ms + " ms")), ms);
            waiters.push((m) => { clearTimeout(t); res(m); });
          });
        },
        // Resolves with the first message satisfying pred, dropping others.
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

// Sends `data` and waits for its echo; reports what came back.
async function roundTrip(c, data, binary) {
  const before = c.counts.inflated;
  const sentBefore = c.counts.deflated;
  await send(c.ws, data, { binary });
  const m = await c.next();
  if (m === null) return { ok: false, error: "closed", close: c.ws._closeInfo };
  const got = Buffer.isBuffer(m.data) ? m.data : Buffer.concat(m.data);
  const want = Buffer.from(data);
  return {
    ok: got.equals(want) && m.isBinary === !!binary,
    len: want.length,
    got_len: got.length,
    binary: m.isBinary,
    compressed_in: c.counts.inflated - before, // server frames that were compressed
    compressed_out: c.counts.deflated - sentBefore,
    sha: sha(got) === sha(want) ? "same" : sha(got) + " != " + sha(want),
  };
}

// ------------------------------------------------------------ groups

// Every offer ws can make: each option absent or set, window bits at the
// ends and in the middle of 8..15, clientMaxWindowBits true (ws's default
// when absent) and false (then ws leaves it out of the offer).
function* offers() {
  for (const snct of [undefined, true])
    for (const cnct of [undefined, true, false])
      for (const smwb of [undefined, 8, 9, 12, 15])
        for (const cmwb of [undefined, true, false, 8, 9, 12, 15]) {
          const o = { threshold: 0 };
          if (snct !== undefined) o.serverNoContextTakeover = snct;
          if (cnct !== undefined) o.clientNoContextTakeover = cnct;
          if (smwb !== undefined) o.serverMaxWindowBits = smwb;
          if (cmwb !== undefined) o.clientMaxWindowBits = cmwb;
          yield o;
        }
}

async function matrix(url) {
  const rows = [];
  // A message with matches 2,000 bytes back: it inflates only with a window
  // of at least 2 KiB, so a server that compressed with a bigger window than
  // it agreed to (or a client that did) shows here.
  const far = farRepeats(6000, 2000);
  const small = chatText(300, 3);
  for (const o of offers()) {
    const row = { offer: o };
    let c;
    try {
      c = await open(url, o);
    } catch (e) {
      row.handshake_error = String(e.message || e);
      rows.push(row);
      continue;
    }
    row.extensions = c.ws.extensions;
    row.params = c.ext;
    row.echo = [];
    try {
      for (const m of [far, small, far, ""]) row.echo.push(await roundTrip(c, m, false));
      row.echo.push(await roundTrip(c, Buffer.from(far), true));
    } catch (e) {
      row.error = String(e.message || e);
      row.close = c.ws._closeInfo;
    }
    row.ok = !row.error && row.echo.every((r) => r.ok);
    await c.close();
    rows.push(row);
  }
  return { rows };
}

async function sizes(url, threshold) {
  const c = await open(url, { threshold: 0 });
  const out = { extensions: c.ws.extensions, params: c.ext, rows: [] };
  const cases = [
    ["empty", ""],
    ["below threshold", chatText(threshold - 1, 11)],
    ["at threshold", chatText(threshold, 12)],
    ["just above threshold", chatText(threshold + 1, 13)],
    ["64 KiB text", chatText(65536, 14)],
    ["64 KiB binary, incompressible", crypto.randomBytes(65536)],
    ["64 KiB binary, compressible", Buffer.from(chatText(65536, 15))],
    ["1 MiB text", chatText(1048576, 16)],
    ["after 1 MiB, small again", chatText(200, 17)],
  ];
  for (const [name, data] of cases) {
    const r = await roundTrip(c, data, Buffer.isBuffer(data));
    r.name = name;
    out.rows.push(r);
    if (r.error) break;
  }
  // The same sizes from a client that never compresses (its threshold above
  // everything): the server still compresses what it sends back.
  const p = await open(url, { threshold: 1 << 30 });
  out.plain_sender = [];
  for (const [name, data] of cases.slice(1, 5)) {
    const r = await roundTrip(p, data, false);
    r.name = name;
    out.plain_sender.push(r);
  }
  await c.close();
  await p.close();
  return out;
}

// Sends `parts` as one fragmented message, optionally with a ping after the
// first fragment; resolves with what came back and the order of events.
async function fragmented(c, parts, binary, pingAfter) {
  const before = c.counts.inflated;
  const sentBefore = c.counts.deflated;
  const start = c.order.length;
  const sends = [];
  parts.forEach((p, i) => {
    sends.push(send(c.ws, p, { binary, fin: i === parts.length - 1 }));
    if (pingAfter && i === 0) c.ws.ping(Buffer.from("between"));
  });
  await Promise.all(sends);
  const m = await c.next();
  if (m === null) return { ok: false, error: "closed", close: c.ws._closeInfo };
  if (pingAfter && !c.order.slice(start).includes("pong")) {
    // The pong may still be on its way when it comes after the echo.
    const deadline = Date.now() + WAIT;
    while (!c.order.slice(start).includes("pong") && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
  }
  const want = Buffer.concat(parts.map((p) => Buffer.from(p)));
  const got = Buffer.from(m.data);
  return {
    ok: got.equals(want) && m.isBinary === !!binary,
    len: want.length,
    got_len: got.length,
    frames_compressed_out: c.counts.deflated - sentBefore,
    compressed_in: c.counts.inflated - before,
    events: c.order.slice(start),
  };
}

async function fragments(url) {
  const out = { rows: [] };
  const c = await open(url, { threshold: 0 });
  out.extensions = c.ws.extensions;
  const text = chatText(30000, 21);
  const cases = [
    ["3 compressed text fragments", [text.slice(0, 10000), text.slice(10000, 20000), text.slice(20000)], false, false],
    ["3 compressed text fragments, ping after the first", [text.slice(0, 7), text.slice(7, 25000), text.slice(25000)], false, true],
    ["compressed binary in 5 fragments of 100 KiB", [0, 1, 2, 3, 4].map((i) => Buffer.from(chatText(102400, 30 + i))), true, false],
    ["compressed fragments, the first and last empty", ["", chatText(5000, 40), ""], false, false],
    ["compressed, a multi-byte character split across fragments", [Buffer.from("caf\xc3", "latin1"), Buffer.from("\xa9 " + chatText(500, 41), "latin1")], false, false],
  ];
  for (const [name, parts, binary, ping] of cases) {
    const r = await fragmented(c, parts, binary, ping);
    r.name = name;
    out.rows.push(r);
    if (r.error) break;
  }
  await c.close();
  // Fragments from a client that compresses nothing (ws decides per message
  // on the first fragment's size), to a server that compresses the echo.
  const p = await open(url, { threshold: 1 << 30 });
  const r = await fragmented(p, [text.slice(0, 100), text.slice(100, 20000), text.slice(20000)], false, true);
  r.name = "plain fragments, ping after the first";
  out.rows.push(r);
  await p.close();
  return out;
}

async function broadcast(base) {
  const room = "mix" + process.pid;
  const mk = (name, pmd) => open(`${base}/?room=${room}&name=${name}`, pmd);
  // A deflating client with ws's default offer, a plain one, one that asked
  // the server for its smallest window, and one with every option set.
  const members = {
    deflate: await mk("deflate", { threshold: 0 }),
    plain: await mk("plain", false),
    small_window: await mk("smallwin", { threshold: 0, serverMaxWindowBits: 9 }),
    all_options: await mk("allopts", { threshold: 0, serverNoContextTakeover: true,
      clientNoContextTakeover: true, serverMaxWindowBits: 15, clientMaxWindowBits: 15 }),
  };
  const out = { members: {}, rows: [] };
  for (const [k, c] of Object.entries(members)) out.members[k] = { extensions: c.ws.extensions };
  // Everyone has seen everyone join before the measured messages.
  const names = ["deflate", "plain", "smallwin", "allopts"];
  // (chat.lua tells the room, not the one who joined.)
  for (const [k, c] of Object.entries(members))
    if (k !== "all_options") await c.until((m) => String(m.data).includes("allopts joined"));
  const cases = [
    ["small", "hi all", "deflate"],
    ["10 KB chat", chatText(10000, 51), "plain"],
    ["60 KB, matches 2,000 bytes back", farRepeats(60000, 2000), "small_window"],
    ["200 KB chat", chatText(200000, 52), "all_options"],
  ];
  for (const [name, text, from] of cases) {
    const before = {};
    for (const [k, c] of Object.entries(members)) before[k] = c.counts.inflated;
    await send(members[from].ws, text);
    const expect = names[Object.keys(members).indexOf(from)] + ": " + text;
    const row = { name, from, len: Buffer.byteLength(expect), got: {} }; // as broadcast
    for (const [k, c] of Object.entries(members)) {
      let m = null;
      let error = null;
      try {
        m = await c.until((x) => !String(x.data).startsWith("* "));
      } catch (e) {
        error = String(e.message || e);
      }
      row.got[k] = {
        ok: m !== null && String(m.data) === expect,
        error: error || (m === null ? "closed " + JSON.stringify(c.ws._closeInfo) : undefined),
        compressed_in: c.counts.inflated - before[k],
      };
    }
    out.rows.push(row);
  }
  for (const c of Object.values(members)) await c.close();
  return out;
}

async function plain(url) {
  const out = {};
  const p = await open(url, false);
  out.no_offer = { extensions: p.ws.extensions, echo: await roundTrip(p, chatText(5000, 61), false) };
  await p.close();
  const d = await open(url, { threshold: 0 });
  out.offer = { extensions: d.ws.extensions, params: d.ext,
    echo: await roundTrip(d, chatText(5000, 62), false) };
  await d.close();
  return out;
}

async function main() {
  const [group, url, arg] = process.argv.slice(2);
  const groups = { matrix, sizes, fragments, broadcast, plain };
  if (!groups[group] || !url) {
    process.stderr.write("usage: node compression.js matrix|sizes|fragments|broadcast|plain URL [THRESHOLD]\n");
    process.exit(2);
  }
  const result = await groups[group](url, Number(arg || 128));
  return result;
}

// Exits once stdout has taken the whole report (a pipe takes 64 KiB at a
// time, and process.exit() does not wait for the rest).
function report(obj, status) {
  process.stdout.write(JSON.stringify(obj) + "\n", () => process.exit(status));
}

main().then((r) => report(r, 0), (e) => report({ fatal: String((e && e.stack) || e) }, 1));
