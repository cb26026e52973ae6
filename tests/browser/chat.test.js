// The chat demo in a real browser: Debian's Chromium driven by
// playwright-core (no browser download). Two pages join a room of
// scripts/chat.lua served by the real moonroom binary; one types, the other
// sees it; the server restarts and both reconnect by themselves; a message
// published through the HTTP API appears in both. A screenshot is saved next
// to the binary under test (build/browser-chat.png).
//
// A second test starts the server with --compression on and checks that the
// page's socket negotiated permessage-deflate and that messages arrive intact.
//
// A third serves the page over https and the socket over wss: the server
// runs with --tls-cert/--tls-key from a throw-away CA made with the openssl
// command, and Chromium trusts that one certificate by the SHA-256 of its
// public key (--ignore-certificate-errors-spki-list), nothing else.
//
//   MOONROOM_BIN=build/moonroom node --test tests/browser/
"use strict";

const { test } = require("node:test");
const assert = require("node:assert/strict");
const { spawn, execFileSync } = require("node:child_process");
const crypto = require("node:crypto");
const os = require("node:os");
const net = require("node:net");
const path = require("node:path");
const fs = require("node:fs");
const { chromium } = require("playwright-core");

const ROOT = path.resolve(__dirname, "..", "..");
const BIN = path.resolve(process.env.MOONROOM_BIN || path.join(ROOT, "build", "moonroom"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TOKEN = "browser-test-token";
const WAIT = 10000; // every wait below is bounded by this (ms)

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("connect", () => { s.destroy(); resolve(true); });
    s.on("error", () => resolve(false));
  });
}

async function until(what, fn, ms = WAIT) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// A throw-away CA and a certificate for 127.0.0.1 signed by it (ECDSA
// P-256), made with the openssl command in a new temporary directory.
function makeCerts() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moonroom-browser-tls-"));
  const f = (n) => path.join(dir, n);
  fs.writeFileSync(f("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n" +
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" +
    "extendedKeyUsage=serverAuth\n");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const run = (args) => execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });
  run(["req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "2",
    "-subj", "/CN=moonroom browser test CA", "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  run(["req", ...ec, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=127.0.0.1"]);
  run(["x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"),
    "-CAcreateserial", "-out", f("server.pem"), "-days", "2", "-extfile", f("server.ext")]);
  return { dir, cert: f("server.pem"), key: f("server.key") };
}

// What --ignore-certificate-errors-spki-list takes: base64 of the SHA-256
// of the certificate's SubjectPublicKeyInfo (DER).
function spkiHash(certFile) {
  const spki = new crypto.X509Certificate(fs.readFileSync(certFile)).publicKey
    .export({ type: "spki", format: "der" });
  return crypto.createHash("sha256").update(spki).digest("base64");
}

// Starts moonroom on scripts/chat.lua; resolves once it accepts connections.
async function startServer(port, log, extra = []) {
  const proc = spawn(BIN, ["--listen", "127.0.0.1:" + port, "--no-reload", ...extra,
    path.join(ROOT, "scripts", "chat.lua")], {
    env: { ...process.env, CHAT_PUBLISH_TOKEN: TOKEN },
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout.on("data", (d) => log.push(d.toString()));
  proc.stderr.on("data", (d) => log.push(d.toString()));
  await until("moonroom to listen on " + port, async () => {
    if (proc.exitCode !== null) throw new Error("moonroom exited: " + log.join(""));
    return accepts(port);
  });
  return proc;
}

function stopServer(proc) {
  return new Promise((resolve) => {
    if (!proc || proc.exitCode !== null) return resolve();
    const kill = setTimeout(() => proc.kill("SIGKILL"), 5000);
    proc.once("exit", () => { clearTimeout(kill); resolve(); });
    proc.kill("SIGTERM");
  });
}

async function messages(page) {
  return page.$$eval("#messages li", (lis) => lis.map((li) => li.textContent));
}

async function seeMessage(page, text) {
  await until(`"${text}" on the page`, async () =>
    (await messages(page)).some((m) => m.includes(text)));
}

async function isOpen(page) {
  return (await page.getAttribute("#status", "data-state")) === "open";
}

test("two pages chat, survive a server restart, and see HTTP publishes", { timeout: 90000 }, async () => {
  const port = await freePort();
  const log = [];
  let server = await startServer(port, log);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const base = `http://127.0.0.1:${port}/`;
    const ada = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    const bob = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    const consoleErrors = [];
    for (const p of [ada, bob]) {
      p.on("pageerror", (e) => consoleErrors.push(String(e)));
    }
    const resp = await ada.goto(base + "?room=demo&name=ada");
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()["content-type"], /text\/html/);
    await bob.goto(base + "?room=demo&name=bob");
    await until("both pages to connect", async () => (await isOpen(ada)) && (await isOpen(bob)));

    // Both see each other in the member list and the count.
    await until("two members on both pages", async () => {
      const a = await ada.textContent("#count");
      const b = await bob.textContent("#count");
      return a.startsWith("2 ") && b.startsWith("2 ");
    });
    assert.deepEqual(await ada.$$eval("#members li", (l) => l.map((x) => x.textContent)), ["ada", "bob"]);
    assert.equal(await ada.textContent("#room-name"), "demo");

    // One types, the other sees it.
    await ada.fill("#input", "hello from ada");
    await ada.press("#input", "Enter");
    await seeMessage(bob, "hello from ada");
    await seeMessage(ada, "hello from ada");

    // The server restarts: both pages notice and reconnect on their own.
    await stopServer(server);
    await until("both pages to notice the restart", async () =>
      (await ada.getAttribute("#status", "data-state")) === "closed" &&
      (await bob.getAttribute("#status", "data-state")) === "closed");
    server = await startServer(port, log);
    await until("both pages to reconnect", async () => (await isOpen(ada)) && (await isOpen(bob)));
    await bob.fill("#input", "bob is back");
    await bob.press("#input", "Enter");
    await seeMessage(ada, "bob is back");

    // A backend publishes through the HTTP API; both pages show it.
    const pub = await fetch(base + "rooms/demo/messages", {
      method: "POST",
      headers: { Authorization: "Bearer " + TOKEN, "Content-Type": "text/plain" },
      body: "deploy finished",
    });
    assert.ok(pub.status >= 200 && pub.status < 300, "publish answered " + pub.status);
    await seeMessage(ada, "deploy finished");
    await seeMessage(bob, "deploy finished");

    const shot = path.join(path.dirname(BIN), "browser-chat.png");
    await ada.screenshot({ path: shot });
    assert.ok(fs.statSync(shot).size > 1000);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await browser.close();
    await stopServer(server);
  }
});

// Chromium offers permessage-deflate on every WebSocket ("permessage-deflate;
// client_max_window_bits"). With --compression on, the chat page's own socket
// (recorded by wrapping the WebSocket constructor before the page runs) has
// it negotiated, and chat messages small and large arrive intact both ways.
test("chat with --compression on: the page's socket negotiates permessage-deflate", { timeout: 60000 }, async () => {
  const port = await freePort();
  const log = [];
  const server = await startServer(port, log, ["--compression", "on"]);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const base = `http://127.0.0.1:${port}/`;
    const pages = {};
    for (const name of ["ada", "bob"]) {
      const p = await browser.newPage();
      await p.addInitScript(() => {
        const Real = window.WebSocket;
        window.__sockets = [];
        window.WebSocket = function (...args) {
          const s = new Real(...args);
          window.__sockets.push(s);
          return s;
        };
        window.WebSocket.prototype = Real.prototype;
        Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
      });
      await p.goto(base + `?room=deflate&name=${name}`);
      pages[name] = p;
    }
    const { ada, bob } = pages;
    await until("both pages to connect", async () => (await isOpen(ada)) && (await isOpen(bob)));
    for (const p of [ada, bob]) {
      const ext = await p.evaluate(() => window.__sockets.map((s) => s.extensions));
      assert.equal(ext.length, 1);
      assert.match(ext[0], /^permessage-deflate/, "extensions: " + ext[0]);
    }
    // Below the server's threshold (sent plain) and 10 KB (sent compressed).
    const small = "small hello from ada";
    let large = "";
    for (let i = 0; large.length < 10000; i++)
      large += `{"seq":${i},"text":"the quick brown fox number ${i * 7919 % 1000}"} `;
    // The small one typed; the large one (the input takes 2,000 characters)
    // sent on the page's own socket.
    await ada.fill("#input", small);
    await ada.press("#input", "Enter");
    await seeMessage(bob, small);
    await bob.evaluate((t) => window.__sockets[0].send(t), large.trim());
    await seeMessage(ada, large.trim());
    await seeMessage(bob, large.trim());
    const exact = await bob.$$eval("#messages li", (lis) => lis.map((li) => li.textContent));
    assert.ok(exact.some((m) => m.endsWith(large.trim())), "the 10 KB message arrived intact");
    assert.ok(large.length >= 10000);
  } finally {
    await browser.close();
    await stopServer(server);
  }
});

// The page over https and its socket over wss, with the test CA's
// certificate trusted by its key's hash only: the page loads, its socket is
// wss:// and open, and two pages chat.
test("chat over https and wss with a throw-away CA", { timeout: 60000 }, async () => {
  const certs = makeCerts();
  const port = await freePort();
  const log = [];
  const server = await startServer(port, log, ["--tls-cert", certs.cert, "--tls-key", certs.key]);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--ignore-certificate-errors-spki-list=" + spkiHash(certs.cert)],
  });
  try {
    const base = `https://127.0.0.1:${port}/`;
    const pages = {};
    for (const name of ["ada", "bob"]) {
      const p = await browser.newPage();
      await p.addInitScript(() => {
        const Real = window.WebSocket;
        window.__sockets = [];
        window.WebSocket = function (...args) {
          const s = new Real(...args);
          window.__sockets.push(s);
          return s;
        };
        window.WebSocket.prototype = Real.prototype;
        Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
      });
      const resp = await p.goto(base + `?room=tls&name=${name}`);
      assert.equal(resp.status(), 200);
      assert.match(resp.url(), /^https:\/\/127\.0\.0\.1:/);
      const sec = await resp.securityDetails();
      assert.ok(sec, "the page came without TLS");
      assert.match(sec.protocol, /^TLS 1\.[23]$/, "protocol " + sec.protocol);
      assert.equal(sec.subjectName, "127.0.0.1");
      pages[name] = p;
    }
    const { ada, bob } = pages;
    await until("both pages to connect", async () => (await isOpen(ada)) && (await isOpen(bob)));
    for (const p of [ada, bob]) {
      const urls = await p.evaluate(() => window.__sockets.map((s) => s.url));
      assert.equal(urls.length, 1);
      assert.match(urls[0], new RegExp(`^wss://127\\.0\\.0\\.1:${port}/`), "socket " + urls[0]);
    }
    await ada.fill("#input", "hello over wss");
    await ada.press("#input", "Enter");
    await seeMessage(bob, "hello over wss");
    await bob.fill("#input", "and back");
    await bob.press("#input", "Enter");
    await seeMessage(ada, "and back");
  } finally {
    await browser.close();
    await stopServer(server);
    fs.rmSync(certs.dir, { recursive: true, force: true });
  }
});
