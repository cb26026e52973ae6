"""Bytes per idle connection, wss:// beside ws://: opens N WebSocket
connections (upgrade done, one echo each, then idle) to a fresh server and
reports the server's RSS growth per connection, for plain and for TLS.

  /usr/bin/python3 tests/bench/idle_tls.py [--conns 2000] [--bin build/moonroom]

Certificates are made on the fly (tests/integration/tlsutil.py). The client
side is Python's ssl; only the server's memory is measured (VmRSS from
/proc), after the connections have sat idle for a moment."""

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import tlsutil  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect(port, ctx):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the upgrade")
        buf += chunk
    assert buf.startswith(b"HTTP/1.1 101"), buf[:80]
    # One masked text frame "hi", and its echo, so that both directions
    # have run once (and any buffers were grown) before the idle period.
    mask = os.urandom(4)
    s.sendall(b"\x81\x82" + mask + bytes(b ^ mask[i % 4]
                                         for i, b in enumerate(b"hi")))
    got = buf.split(b"\r\n\r\n", 1)[1]
    while len(got) < 4:
        got += s.recv(4096)
    return s


def measure(binary, conns, tls, tmp):
    port = free_port()
    args = [binary, "--listen", f"127.0.0.1:{port}", "--idle-timeout", "0",
            "--ping-interval", "0", "--no-reload"]
    ctx = None
    if tls:
        ca = tlsutil.make_ca(tmp / "pki")
        leaf = tlsutil.make_cert(ca, "localhost")
        args += ["--tls-cert", leaf.cert, "--tls-key", leaf.key]
        ctx = tlsutil.client_context(ca)
    log = open(tmp / f"server-{'tls' if tls else 'plain'}.log", "wb")
    p = subprocess.Popen([*args, str(ROOT / "scripts" / "echo.lua")],
                         stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # A few connections first, so one-time allocations are not counted.
        warm = [connect(port, ctx) for _ in range(20)]
        time.sleep(0.3)
        before = rss_kb(p.pid)
        held = [connect(port, ctx) for _ in range(conns)]
        time.sleep(1.0)
        after = rss_kb(p.pid)
        for s in held + warm:
            s.close()
        return (after - before) * 1024 / conns
    finally:
        p.terminate()
        p.wait(10)
        log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--bin", default=str(ROOT / "build" / "moonroom"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        plain = measure(a.bin, a.conns, False, tmp)
        tls = measure(a.bin, a.conns, True, tmp)
    print(f"idle connections: {a.conns}")
    print(f"plain ws://  {plain:8.0f} bytes of server RSS per connection")
    print(f"TLS   wss:// {tls:8.0f} bytes of server RSS per connection "
          f"(+{tls - plain:.0f})")


if __name__ == "__main__":
    main()
