"""TLS for clients (--tls-cert, --tls-key): wss:// and https:// with Python
`websockets`, `ssl` and `http.client` against a throw-away CA made at test
time (tlsutil.py); plain-text and untrusting clients refused cleanly; the
TLS handshake under --handshake-timeout; certificates reloaded on SIGHUP."""

import asyncio
import http.client
import os
import shutil
import signal
import socket
import ssl
import time

import pytest
import websockets

from conftest import (REPO_ROOT, RawClient, free_port, require_bin, run_bin,
                      upgrade_request, wait_until)
import tlsutil

SCRIPTS = REPO_ROOT / "tests" / "integration" / "scripts"
CMD = SCRIPTS / "cmd.lua"
HTTP = SCRIPTS / "http.lua"


@pytest.fixture
def pki(tmp_path):
    """A CA and a certificate for localhost/127.0.0.1, copied to fixed
    paths the server is started with (so a test can replace them)."""
    ca = tlsutil.make_ca(tmp_path / "pki")
    leaf = tlsutil.make_cert(ca, "localhost")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    shutil.copy(leaf.cert, cert)
    shutil.copy(leaf.key, key)
    return {"ca": ca, "leaf": leaf, "cert": str(cert), "key": str(key)}


def tls_server(server, pki, script=CMD, args=()):
    return server(script=script,
                  args=["--tls-cert", pki["cert"], "--tls-key", pki["key"],
                        *args])


def wss(srv, path="/"):
    return f"wss://localhost:{srv.port}{path}"


def run(coro, timeout=15):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def tls_socket(port, ctx, alpn=None, timeout=5.0):
    """A connected, handshaken TLS socket to the server."""
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="localhost")


async def stats_of(srv, ca):
    async with websockets.connect(wss(srv), ssl=tlsutil.client_context(ca)) as ws:
        await ws.send("stats")
        text = await ws.recv()
    return {k: int(v) for k, v in (p.split("=", 1) for p in text.split(","))}


def stats(srv, ca):
    return run(stats_of(srv, ca))


# -- round trips ---------------------------------------------------------


def test_echo_and_chat_over_wss(server, pki):
    srv = tls_server(server, pki)
    ctx = tlsutil.client_context(pki["ca"])

    async def go():
        async with websockets.connect(wss(srv), ssl=ctx) as a, \
                websockets.connect(wss(srv), ssl=ctx) as b:
            await a.send("hello")
            assert await a.recv() == "hello"
            big = "x" * 300_000  # many records each way
            await a.send(big)
            assert await a.recv() == big
            await a.send(b"\x00\x01" * 1000)
            assert await a.recv() == b"\x00\x01" * 1000
            for ws in (a, b):
                await ws.send("join:lobby")
                assert await ws.recv() == "joined:lobby"
            await a.send("bcast:lobby:hi all")
            got = {await a.recv(), await a.recv()}
            assert got == {"hi all", "sent:2"}
            assert await b.recv() == "hi all"
            # A burst of small broadcasts, sealed together.
            for i in range(200):
                await a.send(f"bcast:lobby:m{i}")
            seen = []
            while len(seen) < 200:
                m = await b.recv()
                seen.append(m)
            assert seen == [f"m{i}" for i in range(200)]
    run(go())
    s = stats(srv, pki["ca"])
    assert s["tls_handshakes"] >= 3
    assert s["tls_handshake_failures"] == 0


@pytest.mark.parametrize("version,name", [
    (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
    (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
])
def test_tls12_and_tls13_both_work(server, pki, version, name):
    srv = tls_server(server, pki)
    ctx = tlsutil.client_context(pki["ca"], minimum=version, maximum=version)

    async def go():
        async with websockets.connect(wss(srv), ssl=ctx) as ws:
            tls = ws.transport.get_extra_info("ssl_object")
            assert tls.version() == name
            if name == "TLSv1.2":
                # ECDHE with an AEAD cipher, nothing else.
                cipher = tls.cipher()[0]
                assert cipher.startswith("ECDHE-") and (
                    "GCM" in cipher or "CHACHA20" in cipher), cipher
            await ws.send("ping me")
            assert await ws.recv() == "ping me"
    run(go())


def tls11_client_hello():
    """A minimal TLS 1.1 ClientHello (record and handshake version 3.2),
    built by hand: the local OpenSSL may refuse to send one itself."""
    ciphers = bytes.fromhex("c013c014002f0035")
    body = (b"\x03\x02" + os.urandom(32) + b"\x00" +
            len(ciphers).to_bytes(2, "big") + ciphers + b"\x01\x00")
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x02" + len(hs).to_bytes(2, "big") + hs


def test_tls11_refused_with_an_alert(server, pki):
    srv = tls_server(server, pki)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(tls11_client_hello())
        reply = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    # A fatal alert (21), protocol_version (70), then the close.
    assert reply[:1] == b"\x15", reply
    assert reply[5:7] == b"\x02\x46", reply
    assert srv.wait_log(r"TLS handshake failed: unsupported protocol")
    wait_until(lambda: stats(srv, pki["ca"])["tls_handshake_failures"] == 1)


def test_alpn_selects_http11(server, pki):
    srv = tls_server(server, pki)
    with tls_socket(srv.port, tlsutil.client_context(pki["ca"]),
                    alpn=["h2", "http/1.1"]) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    # A client that offers only other protocols is not refused.
    with tls_socket(srv.port, tlsutil.client_context(pki["ca"]),
                    alpn=["h2"]) as s:
        assert s.selected_alpn_protocol() is None


# -- refusals ------------------------------------------------------------


def test_untrusting_client_fails_and_server_counts_it(server, pki):
    srv = tls_server(server, pki)

    async def go():
        with pytest.raises(ssl.SSLCertVerificationError):
            async with websockets.connect(
                    wss(srv), ssl=tlsutil.client_context(None)):
                pass
    run(go())
    assert srv.wait_log(r"closed: TLS handshake failed: (tlsv1 alert unknown ca|the client closed)")
    wait_until(lambda: stats(srv, pki["ca"])["tls_handshake_failures"] == 1)
    # The server keeps serving trusted clients.
    assert stats(srv, pki["ca"])["tls_handshakes"] >= 1


def test_plaintext_client_refused_cleanly(server, pki):
    srv = tls_server(server, pki)
    ctx = tlsutil.client_context(pki["ca"])

    async def go():
        async with websockets.connect(wss(srv), ssl=ctx) as ws:
            # A ws:// upgrade on the TLS port, while a wss:// client is on.
            c = RawClient(srv.port)
            resp = c.handshake()
            assert resp.status == 400, resp
            assert b"this port speaks TLS" in resp.body
            c.close()
            # An HTTP GET likewise.
            c = RawClient(srv.port)
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.read_http_response().status == 400
            c.close()
            await ws.send("still here")
            assert await ws.recv() == "still here"
            # And websockets' own client, told to speak ws:// there.
            with pytest.raises(Exception):
                async with websockets.connect(f"ws://127.0.0.1:{srv.port}/"):
                    pass
            await ws.send("stats")
            s = dict(p.split("=", 1) for p in (await ws.recv()).split(","))
            assert int(s["tls_plaintext_refused"]) == 3
            assert int(s["tls_handshake_failures"]) == 0
    run(go())
    assert srv.wait_log(r"refused: plain text on the TLS port")


def test_tls_handshake_that_stalls_is_cut(server, pki):
    srv = tls_server(server, pki, args=["--handshake-timeout", "1"])
    hello = tls11_client_hello()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(hello[:9])  # a record header and a little of the hello
        t0 = time.monotonic()
        s.settimeout(5)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - t0
    assert data == b""
    assert 0.7 <= elapsed < 3.0, elapsed
    assert srv.wait_log(r"handshake timed out \(TLS handshake not finished\)")
    wait_until(lambda: stats(srv, pki["ca"])["handshakes_timed_out"] == 1)


# -- plain HTTP over TLS (on_http) ----------------------------------------


def test_https_on_http_with_keep_alive(server, pki):
    srv = tls_server(server, pki, script=HTTP)
    ctx = tlsutil.client_context(pki["ca"])
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx,
                                       timeout=5)
    conn.request("GET", "/echo?a=1")
    r = conn.getresponse()
    assert r.status == 200
    assert r.read() == b"GET /echo?a=1|"
    sock = conn.sock
    conn.request("POST", "/echo", body=b"body over tls")
    r = conn.getresponse()
    assert r.status == 200
    assert r.read() == b"POST /echo?|body over tls"
    assert conn.sock is sock  # the same TLS connection, kept alive
    assert sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.request("GET", "/big?n=200000")
    r = conn.getresponse()
    assert r.read() == b"x" * 200000
    conn.close()


# -- reload ---------------------------------------------------------------


def peer_serial(port, ca):
    with tls_socket(port, tlsutil.client_context(ca)) as s:
        return tlsutil.serial_of(s.getpeercert(binary_form=True))


def test_sighup_new_certificate_for_new_connections_only(server, pki):
    srv = tls_server(server, pki)
    ca = pki["ca"]
    assert peer_serial(srv.port, ca) == pki["leaf"].serial
    ctx = tlsutil.client_context(ca)

    async def go():
        async with websockets.connect(wss(srv), ssl=ctx) as old:
            tls = old.transport.get_extra_info("ssl_object")
            before = tlsutil.serial_of(tls.getpeercert(binary_form=True))
            assert before == pki["leaf"].serial
            new = tlsutil.make_cert(ca, "localhost")
            shutil.copy(new.cert, pki["cert"])
            shutil.copy(new.key, pki["key"])
            srv.proc.send_signal(signal.SIGHUP)
            assert srv.wait_log(r"--tls-cert .* reloaded: subject CN=localhost,"
                                rf" serial 0*{new.serial}")
            # A new connection gets the new certificate ...
            assert peer_serial(srv.port, ca) == new.serial
            # ... and the old one keeps working on its session.
            await old.send("after reload")
            assert await old.recv() == "after reload"
            await old.send("x" * 100_000)
            assert await old.recv() == "x" * 100_000
    run(go())
    s = stats(srv, ca)
    assert s["tls_reloads"] == 1 and s["tls_reload_failures"] == 0


def test_sighup_with_a_broken_key_keeps_the_old_pair(server, pki):
    srv = tls_server(server, pki)
    ca = pki["ca"]
    with open(pki["key"], "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    srv.proc.send_signal(signal.SIGHUP)
    m = srv.wait_log(r"warn  --tls-cert: reload failed, keeping the previous "
                     r"certificate: cannot load the key .*")
    assert m
    assert len([l for l in srv.log().splitlines()
                if "reload failed" in l]) == 1
    assert peer_serial(srv.port, ca) == pki["leaf"].serial
    # A key that does not match the certificate is refused likewise.
    other = tlsutil.make_cert(ca, "other")
    shutil.copy(other.key, pki["key"])
    srv.proc.send_signal(signal.SIGHUP)
    assert srv.wait_log(r"reload failed, keeping the previous certificate: "
                        r"the key does not match the certificate")
    assert peer_serial(srv.port, ca) == pki["leaf"].serial
    s = stats(srv, ca)
    assert s["tls_reload_failures"] == 2 and s["tls_reloads"] == 0


# -- startup --------------------------------------------------------------


def test_startup_with_a_bad_certificate_exits_1(tmp_path, pki):
    require_bin()
    port = free_port()
    r = run_bin(["--listen", f"127.0.0.1:{port}", "--tls-cert",
                 str(tmp_path / "missing.crt"), "--tls-key", pki["key"],
                 str(CMD)])
    assert r.returncode == 1
    assert b"--tls-cert: cannot load the certificate" in r.stderr
    r = run_bin(["--listen", f"127.0.0.1:{port}", "--tls-cert", pki["cert"],
                 str(CMD)])
    assert r.returncode == 2
    assert b"--tls-cert and --tls-key go together" in r.stderr
