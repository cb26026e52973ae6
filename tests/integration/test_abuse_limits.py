"""Abuse limits against the real binary: --max-connections-per-ip (429 with
Retry-After, slots from accept to close, released on every way a
connection ends), --allow-origin (403), --max-messages-per-second (close
1008), each counted, logged, and with other clients served meanwhile; and
thousands of slowloris handshakes that leave normal clients unaffected and
are all cut at --handshake-timeout.

Clients come from several loopback addresses (127.0.0.2, ...: Linux routes
all of 127/8 to lo), so that one address can be over its limit while
another is served."""

import asyncio
import socket
import time

import pytest

from conftest import (RawClient, PeerClosed, arun, arecv, build_frame,
                      stats, wait_until, ws_connect, OP_TEXT)


def echo(client, text="hello"):
    assert client.cmd(text) == text


def refused_429(port, source="127.0.0.1"):
    with RawClient(port, source=source) as c:
        resp = c.handshake()
        return resp


# ---- --max-connections-per-ip ---------------------------------------------

def test_per_ip_limit_429_retry_after(server):
    srv = server(args=["--max-connections-per-ip", "3"])
    held = [RawClient.connect(srv.port) for _ in range(3)]
    other = RawClient.connect(srv.port, source="127.0.0.2")
    try:
        resp = refused_429(srv.port)
        assert resp.status == 429
        assert resp.headers["retry-after"] == "10"  # --handshake-timeout
        assert b"too many connections from this address" in resp.body

        # An independent client sees the same.
        from websockets.exceptions import InvalidStatusCode

        async def strict():
            with pytest.raises(InvalidStatusCode) as e:
                async with ws_connect(f"ws://127.0.0.1:{srv.port}/"):
                    pass
            return e.value
        err = arun(strict())
        assert err.status_code == 429
        assert err.headers["Retry-After"] == "10"

        # Others keep being served, the held ones too.
        echo(other)
        for c in held:
            echo(c)
        assert stats(other)["connections_per_ip_refused"] == 2
        assert srv.wait_log(
            r"conn \d+ \(127\.0\.0\.1\): refused 429: 127\.0\.0\.1 already "
            r"holds --max-connections-per-ip 3 connections")

        # A slot is free again once one of the three closes.
        held.pop().close()

        def fits():
            with RawClient(srv.port) as c:
                return c.handshake().status == 101
        wait_until(fits, what="a slot freed by a close")
    finally:
        for c in held + [other]:
            c.close()


def test_per_ip_counts_handshakes_from_accept(server):
    """A connection holds its slot from accept: idle sockets that never
    send a request (slowloris from one address) use up the address."""
    srv = server(args=["--max-connections-per-ip", "2"])
    idle = []
    try:
        for _ in range(2):
            s = socket.socket()
            s.bind(("127.0.0.3", 0))
            s.connect(("127.0.0.1", srv.port))
            idle.append(s)
        with RawClient.connect(srv.port, source="127.0.0.4") as probe:
            wait_until(lambda: stats(probe)["connections_accepted"] >= 3)
        assert refused_429(srv.port, source="127.0.0.3").status == 429
        with RawClient.connect(srv.port, source="127.0.0.2") as c:
            echo(c)
    finally:
        for s in idle:
            s.close()


def test_per_ip_slots_released_on_every_close_path(server):
    """Hundreds of connections from one address, ended in every way the
    server and clients can end them; afterwards exactly the limit fits
    again and one more is refused (a slot leaked or released twice would
    show). The C unit test does this thousands of times and checks the
    table itself."""
    limit = 4
    srv = server(args=["--max-connections-per-ip", str(limit),
                       "--handshake-timeout", "1"])
    port = srv.port
    watcher = RawClient.connect(port, source="127.0.0.2")
    before = stats(watcher)

    def one_round(i):
        kind = i % 7
        if kind == 0:  # clean close handshake
            c = RawClient.connect(port)
            c.send_close(1000)
            c.expect_close()
            c.close()
        elif kind == 1:  # reset
            c = RawClient.connect(port)
            c.abort()
        elif kind == 2:  # connect, send nothing, close
            s = socket.create_connection(("127.0.0.1", port))
            s.close()
        elif kind == 3:  # malformed request: 400
            with RawClient(port) as c:
                c.send(b"BREW / HTCPCP/1.0\r\n\r\n")
                assert c.read_http_response().status == 400
        elif kind == 4:  # protocol error: unmasked frame, closed 1002
            c = RawClient.connect(port)
            c.send(build_frame(OP_TEXT, b"x", mask=False))
            assert c.expect_close()[0] == 1002
            c.close()
        elif kind == 5:  # plain HTTP: 404 (no on_http)
            with RawClient(port) as c:
                c.send(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
                assert c.read_http_response().status == 404
        else:  # refused by on_connect
            with RawClient(port) as c:
                assert c.handshake(path="/?refuse=1").status == 403

    for i in range(350):
        for attempt in range(50):
            try:
                one_round(i)
                break
            except AssertionError:
                # Closes are seen by the server a moment after the client
                # made them: a 429 here is a slot not yet released. Retry.
                time.sleep(0.02)
        else:
            pytest.fail(f"round {i} kept failing")

    # Handshake timeouts: four sockets hold every slot until cut.
    idle = [socket.create_connection(("127.0.0.1", port))
            for _ in range(limit)]
    try:
        assert refused_429(port).status == 429
        wait_until(lambda: stats(watcher)["handshakes_timed_out"]
                   >= before["handshakes_timed_out"] + limit, timeout=5)
    finally:
        for s in idle:
            s.close()

    def exactly_limit():
        held = []
        try:
            for _ in range(limit):
                c = RawClient(port)
                held.append(c)
                if c.handshake().status != 101:
                    return False
            return refused_429(port).status == 429
        finally:
            for c in held:
                c.close()
    wait_until(exactly_limit, timeout=5, what="exactly the limit fits")
    echo(watcher)
    watcher.close()


# ---- --allow-origin -------------------------------------------------------

def test_allow_origin(server):
    srv = server(args=["--allow-origin",
                       "https://example.com, http://localhost:8080"])
    url = f"ws://127.0.0.1:{srv.port}/"
    from websockets.exceptions import InvalidStatusCode

    async def run():
        async with ws_connect(url, origin="https://Example.com:443") as ws:
            await ws.send("a")
            assert await arecv(ws) == "a"
        async with ws_connect(url) as ws:  # no Origin: not a browser
            await ws.send("b")
            assert await arecv(ws) == "b"
        with pytest.raises(InvalidStatusCode) as e:
            async with ws_connect(url, origin="https://evil.test"):
                pass
        assert e.value.status_code == 403
        with pytest.raises(InvalidStatusCode) as e:
            async with ws_connect(url, origin="http://localhost:8081"):
                pass
        assert e.value.status_code == 403
    arun(run())
    with RawClient(srv.port) as c:
        resp = c.handshake(extra_headers=[("Origin", "null")])
        assert resp.status == 403 and b"origin not allowed" in resp.body
    with RawClient.connect(srv.port) as c:
        s = stats(c)
        assert s["origins_refused"] == 3
        assert s["handler_refusals"] == 0  # on_connect never ran
    assert srv.wait_log(r"upgrade refused 403: Origin 'https://evil\.test' "
                        r"is not in --allow-origin")


# ---- --max-messages-per-second --------------------------------------------

def test_message_rate_closes_1008(server):
    srv = server(args=["--max-messages-per-second", "5",
                       "--message-burst", "10"])
    url = f"ws://127.0.0.1:{srv.port}/"
    from websockets.exceptions import ConnectionClosedError

    async def flood():
        async with ws_connect(url) as ws:
            for i in range(50):
                await ws.send(f"m{i}")
            got = []
            with pytest.raises(ConnectionClosedError) as e:
                while True:
                    got.append(await arecv(ws))
            return got, e.value.rcvd

    async def steady():
        # Four a second, under five: never closed.
        async with ws_connect(url) as ws:
            for i in range(8):
                await ws.send(f"s{i}")
                assert await arecv(ws) == f"s{i}"
                await asyncio.sleep(0.25)
            return True

    async def both():
        return await asyncio.gather(flood(), steady())
    (got, rcvd), ok = arun(both())
    assert got == [f"m{i}" for i in range(10)]  # the burst, then closed
    assert rcvd.code == 1008 and rcvd.reason == "message rate exceeded"
    assert ok
    with RawClient.connect(srv.port) as c:
        assert stats(c)["message_rate_closes"] == 1
    assert srv.wait_log(r"closed 1008: over --max-messages-per-second 5 "
                        r"\(burst 10\)")


# ---- slowloris ------------------------------------------------------------

SLOWLORIS = 5000


def test_slowloris_handshakes_leave_clients_unaffected(server):
    """SLOWLORIS clients each send the start of a request head and then one
    byte every 2 s. While they hang, normal clients connect and echo within
    a bound; at --handshake-timeout every one of them is cut and counted."""
    timeout = 4
    srv = server(args=["--handshake-timeout", str(timeout)])
    port = srv.port

    async def run():
        conns = []
        sem = asyncio.Semaphore(500)

        async def open_one(i):
            async with sem:
                r, w = await asyncio.open_connection(
                    "127.0.0.1", port,
                    local_addr=(f"127.0.1.{i % 250 + 1}", 0))
                w.write(b"GET / HTTP/1.1\r\n")
                conns.append((r, w))
        t0 = time.monotonic()
        await asyncio.gather(*(open_one(i) for i in range(SLOWLORIS)))
        opened = time.monotonic() - t0

        stop = asyncio.Event()

        async def trickle():
            while not stop.is_set():
                for _, w in conns:
                    if not w.is_closing():
                        w.write(b"X")
                try:
                    await asyncio.wait_for(stop.wait(), 2.0)
                except asyncio.TimeoutError:
                    pass
        tr = asyncio.create_task(trickle())

        # Normal clients while the slowloris ones hang.
        worst = 0.0
        for i in range(5):
            t = time.monotonic()
            async with ws_connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send(f"n{i}")
                assert await arecv(ws, timeout=2) == f"n{i}"
            worst = max(worst, time.monotonic() - t)
            await asyncio.sleep(0.3)

        # Every slowloris connection is cut by the server (EOF or reset).
        async def cut(r):
            try:
                while await r.read(4096):
                    pass
            except (ConnectionError, OSError):
                pass
        await asyncio.wait_for(
            asyncio.gather(*(cut(r) for r, _ in conns)), timeout + 10)
        stop.set()
        await tr
        for _, w in conns:
            w.close()
        return opened, worst

    opened, worst = arun(run(), timeout=60)
    assert worst < 2.0, f"a normal client took {worst:.2f}s"
    with RawClient.connect(port) as c:
        s = stats(c)
    assert s["handshakes_timed_out"] >= SLOWLORIS
    assert srv.wait_log(r"more handshake timeouts in the last second")
    print(f"{SLOWLORIS} slowloris opened in {opened:.2f}s; slowest normal "
          f"client {worst * 1000:.0f} ms")
