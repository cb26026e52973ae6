"""Process and connection lifecycle: SIGINT/SIGTERM shutdown, idle timeout,
server pings."""

import signal
import subprocess
import time

import pytest

from conftest import (OP_CLOSE, OP_PING, RawClient, arecv, arun, join,
                      ws_connect)


def pump(client, seconds, answer_pings=True):
    """Reads for `seconds`, answering pings; fails if the connection ends.
    Returns the data messages received."""
    got = []
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return got
        try:
            got.append(client.recv_message(timeout=remaining,
                                           answer_pings=answer_pings))
        except TimeoutError:
            return got


# -- signals ----------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_sends_1001_to_all_and_exits_0(server, sig):
    srv = server()
    clients = [RawClient.connect(srv.port) for _ in range(3)]
    join(clients[0], "room")
    srv.signal(sig)
    for c in clients:
        code, _ = c.expect_close(timeout=5)
        assert code == 1001, code
        try:
            c.send_close(1001)
        except OSError:
            pass  # the server may already have dropped TCP
    assert srv.wait(5) == 0, srv.log()
    for c in clients:
        assert c.wait_eof(2)
        c.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_without_connections_exits_0(server, sig):
    srv = server()
    srv.signal(sig)
    assert srv.wait(5) == 0, srv.log()


def test_sigterm_exits_even_if_clients_never_answer(server):
    srv = server()
    c = RawClient.connect(srv.port)
    deaf = RawClient.connect(srv.port)  # never reads, never answers
    srv.signal(signal.SIGTERM)
    code, _ = c.expect_close(timeout=5)
    assert code == 1001
    try:
        rc = srv.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("server did not exit within 10 s of SIGTERM while a "
                    "client did not answer its close")
    assert rc == 0
    c.close()
    deaf.close()


def test_sigterm_seen_by_python_websockets_client(server):
    srv = server()

    async def go():
        import websockets
        async with ws_connect(srv.url) as ws:
            await ws.send("ping?")
            assert await arecv(ws) == "ping?"
            srv.signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed):
                await arecv(ws, timeout=5)
            assert ws.close_code == 1001, ws.close_code
    arun(go())
    assert srv.wait(5) == 0


def test_sigterm_stops_accepting(server):
    srv = server()
    srv.signal(signal.SIGTERM)
    srv.wait(5)
    with pytest.raises(OSError):
        RawClient(srv.port, timeout=1)


# -- idle timeout -------------------------------------------------------------

def test_idle_connection_closed(server):
    srv = server(args=["--ping-interval", "0", "--idle-timeout", "1"])
    c = RawClient.connect(srv.port)
    t0 = time.monotonic()
    code, _ = c.expect_close(timeout=4)
    elapsed = time.monotonic() - t0
    assert code in (1001, None), code
    assert 0.5 <= elapsed <= 3.5, elapsed
    assert c.wait_eof(3)
    c.close()


def idle_closed_within(ref, seconds):
    """Waits at most `seconds` for the server to close `ref` (a connection
    that stays silent); True once it has."""
    try:
        code, _ = ref.expect_close(timeout=seconds)
    except TimeoutError:
        return False
    assert code in (1001, None), code
    return True


def keep_active_until_reference_idles_out(srv, c, activity, limit=10.0):
    """Calls activity(i) on c at most 0.35 s apart, well within the 1 s idle
    timeout, until a silent reference connection, opened just after c's
    first activity, has been closed for being idle; then once more.

    Every connection is judged in the same periodic sweep, and the
    reference's last activity is later than c's first, so if activity did
    not reset c's timer, c would have been closed no later than the
    reference: the last activity(i) on c would then fail."""
    activity(0)
    ref = RawClient.connect(srv.port)
    try:
        t0 = time.monotonic()
        i = 1
        # The 0.35 s bound is the pacing of c's activity, spent waiting for
        # the condition that ends the loop.
        while not idle_closed_within(ref, 0.35):
            assert time.monotonic() - t0 < limit, \
                f"the silent reference connection was not closed within " \
                f"{limit}s"
            activity(i)
            i += 1
    finally:
        ref.close()
    activity(i)
    return i + 1


def test_activity_resets_idle_timer(server):
    srv = server(args=["--ping-interval", "0", "--idle-timeout", "1"])
    c = RawClient.connect(srv.port)

    def tick(i):
        assert c.cmd(f"tick{i}") == f"tick{i}"

    n = keep_active_until_reference_idles_out(srv, c, tick)
    assert n >= 3, n  # the reference's 1 s took several 0.35 s rounds
    c.close()


def test_client_pings_count_as_activity(server):
    srv = server(args=["--ping-interval", "0", "--idle-timeout", "1"])
    c = RawClient.connect(srv.port)

    def ping(i):
        c.send_frame(0x9, f"p{i}".encode())
        f = c.recv_frame()
        assert (f.opcode, f.payload) == (0xA, f"p{i}".encode())

    n = keep_active_until_reference_idles_out(srv, c, ping)
    assert n >= 3, n
    assert c.cmd("alive") == "alive"
    c.close()


def test_idle_timeout_zero_disables_and_ping_zero_sends_none(server):
    srv = server(args=["--ping-interval", "0", "--idle-timeout", "0"])
    c = RawClient.connect(srv.port)
    assert pump(c, 2.5) == []
    assert c.pings == [], "server pinged with --ping-interval 0"
    assert c.cmd("still open") == "still open"
    c.close()


def test_pongs_count_as_activity(server):
    srv = server(args=["--ping-interval", "1", "--idle-timeout", "2"])
    c = RawClient.connect(srv.port)
    assert pump(c, 4.5) == []
    assert len(c.pings) >= 2, c.pings
    assert c.cmd("alive") == "alive"
    c.close()


# -- server pings ---------------------------------------------------------------

def test_server_pings_and_answering_peer_stays_open(server):
    srv = server(args=["--ping-interval", "1", "--idle-timeout", "0"])
    c = RawClient.connect(srv.port)
    assert pump(c, 3.5) == []
    assert 2 <= len(c.pings) <= 5, c.pings
    assert c.cmd("alive") == "alive"
    c.close()


def test_peer_not_answering_pings_is_closed(server):
    srv = server(args=["--ping-interval", "1", "--idle-timeout", "0"])
    c = RawClient.connect(srv.port)
    t0 = time.monotonic()
    saw_ping_at = None
    closed = False
    while time.monotonic() - t0 < 6:
        try:
            f = c.recv_frame(timeout=max(0.01, 6 - (time.monotonic() - t0)))
        except TimeoutError:
            break
        except Exception as e:
            assert type(e).__name__ == "PeerClosed", repr(e)
            closed = True
            break
        if f.opcode == OP_PING and saw_ping_at is None:
            saw_ping_at = time.monotonic() - t0
        if f.opcode == OP_CLOSE:
            closed = c.wait_eof(3)
            break
    elapsed = time.monotonic() - t0
    assert saw_ping_at is not None and saw_ping_at < 2.0, saw_ping_at
    assert closed, "peer that never answers pings was not disconnected"
    assert elapsed <= 5.0, f"closed only after {elapsed:.1f}s"
    c.close()


def test_python_websockets_client_survives_pings(server):
    # websockets answers pings automatically.
    srv = server(args=["--ping-interval", "1", "--idle-timeout", "0"])

    async def go():
        import asyncio
        async with ws_connect(srv.url) as ws:
            await asyncio.sleep(3.2)
            await ws.send("still there")
            assert await arecv(ws) == "still there"
    arun(go())
