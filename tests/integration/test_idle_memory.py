"""What an idle connection costs: the server's RSS grows by well under a
kilobyte for each open WebSocket that sits in a room and sends nothing.

The benchmark (tests/bench/run.py --only idle) measures about 630 bytes with
19,000 connections; this holds 2,000 and allows 800, so that page rounding
and the Lua collector's timing cannot make it flaky, while a connection that
grew back to its old size (about 1 KB: a uthash handle, inline queue slots,
a heap array for its one room link, a bigger Lua handle) fails it."""

import socket

import pytest

from conftest import sanitized_build

# Rooms of ten, as the benchmark's bench.lua makes them.
SCRIPT = """
local ws = require "moonroom"
return {
  on_connect = function(conn, req)
    ws.join(conn, req.query.room or "lobby")
  end,
}
"""

N = 2000
WARMUP = 100


def upgrade(port, room):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall((f"GET /?room={room} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return s


@pytest.mark.skipif(sanitized_build(), reason="ASan's allocator keeps freed memory: "
                    "RSS says nothing about the server's own")
def test_idle_connection_costs_under_800_bytes(server, tmp_path):
    script = tmp_path / "idle.lua"
    script.write_text(SCRIPT)
    srv = server(script=script, args=("--ping-interval", "0", "--idle-timeout", "0"))
    socks = []
    try:
        # The first connections make what every later one shares (the wslay
        # pool, tables' first sizes); the cost counted is the others'.
        for i in range(WARMUP):
            socks.append(upgrade(srv.port, f"warm{i // 10}"))
        before = srv.rss_kb()
        for i in range(N):
            socks.append(upgrade(srv.port, f"room{i // 10}"))
        after = srv.rss_kb()
        per_conn = (after - before) * 1024 / N
        assert per_conn < 800, f"{per_conn:.0f} bytes of RSS per idle connection"
    finally:
        for s in socks:
            s.close()
