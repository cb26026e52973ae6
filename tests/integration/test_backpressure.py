"""Backpressure: a connection whose unsent output exceeds --max-backpressure
is closed (on_close sees 1008, counted in ws.stats().backpressure_closes),
other members keep receiving, and server memory stays bounded."""

import time

from conftest import (sanitized_build, OP_BINARY, PeerClosed, RawClient, conn_id, join,
                      observer, stats, wait_closed_report, build_frame)

BP_ARGS = ["--max-backpressure", "65536", "--ping-interval", "0",
           "--idle-timeout", "0"]


def test_slow_reader_disconnected_fast_reader_unaffected(server):
    srv = server(args=BP_ARGS)
    obs = observer(srv.port)

    # The slow reader: tiny receive buffer, never reads after joining.
    slow = RawClient(srv.port, rcvbuf=4096)
    assert slow.handshake().status == 101
    join(slow, "bp")
    slow_id = conn_id(slow)

    fast = RawClient.connect(srv.port)
    join(fast, "bp")
    pub = RawClient.connect(srv.port)

    rss0 = srv.rss_kb()
    peak = rss0
    size = 4096
    count = (20 << 20) // size  # 20 MiB in total
    pad = "x" * (size - 8)
    window = 8
    counts = []
    t0 = time.monotonic()
    for start in range(0, count, window):
        stop = min(start + window, count)
        pub.send(b"".join(
            build_frame(0x1, f"bcast:bp:{i:07d}:{pad}".encode())
            for i in range(start, stop)))
        for i in range(start, stop):
            r = pub.recv_text(timeout=10)
            assert r.startswith("sent:"), r
            counts.append(int(r[5:]))
        for i in range(start, stop):
            msg = fast.recv_text(timeout=10)
            assert msg[:8] == f"{i:07d}:" and len(msg) == size, \
                f"fast reader got {msg[:20]!r}... expected #{i}"
        if start % 256 == 0:
            peak = max(peak, srv.rss_kb())
    elapsed = time.monotonic() - t0
    peak = max(peak, srv.rss_kb())

    assert counts[0] == 2, counts[:5]
    assert counts[-1] == 1, "slow reader still in the room after 20 MiB"
    first_drop = counts.index(1)
    assert first_drop < count // 2, \
        f"slow reader only dropped after {first_drop * size} bytes"

    code, _, still = wait_closed_report(obs, slow_id, timeout=10)
    assert code == 1008, code
    assert still == ""
    assert slow.wait_eof(10.0), "slow reader's TCP connection not closed"
    slow.close()

    s = stats(pub)
    assert s["backpressure_closes"] == 1, s
    growth_mb = (peak - rss0) / 1024
    print(f"slow reader dropped after {first_drop * size} bytes; "
          f"RSS growth {growth_mb:.1f} MB; {elapsed:.2f}s for 20 MiB")
    if not sanitized_build():
        assert growth_mb < 30, f"RSS grew by {growth_mb:.1f} MB"
    assert fast.cmd("id") != ""
    assert elapsed < 60, f"20 MiB took {elapsed:.1f}s"
    for c in (fast, pub, obs):
        c.close()


def test_client_that_never_reads_its_echoes_is_disconnected(server):
    srv = server(args=BP_ARGS)
    obs = observer(srv.port)
    c = RawClient(srv.port, rcvbuf=4096)
    assert c.handshake().status == 101
    cid = conn_id(c)
    rss0 = srv.rss_kb()
    chunk = build_frame(OP_BINARY, b"e" * 16384)
    sent = 0
    broke = False
    c.sock.settimeout(5)
    try:
        while sent < (20 << 20):
            c.sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        broke = True
    except TimeoutError:
        # The server stopped reading from us instead of closing; the
        # report below tells whether it closed the connection.
        pass
    code, _, _ = wait_closed_report(obs, cid, timeout=10)
    assert code == 1008, (code, sent, broke)
    assert c.wait_eof(10.0)
    c.close()
    if not sanitized_build():
        assert (srv.rss_kb() - rss0) / 1024 < 30
    o = RawClient.connect(srv.port)
    assert stats(o)["backpressure_closes"] == 1
    o.close()
    obs.close()


def test_output_under_limit_is_not_closed(server):
    # A reader that is merely a little late must not be dropped: 32 KiB
    # queued against a 64 KiB limit.
    srv = server(args=BP_ARGS)
    late = RawClient.connect(srv.port)
    join(late, "late")
    pub = RawClient.connect(srv.port)
    # Each "sent:1" reply comes after the server queued that message for
    # `late` and judged the backpressure limit (it does so when queuing, not
    # later), so once the 8 replies are in, everything a close could depend
    # on has happened; `late` has read nothing yet.
    for i in range(8):
        assert pub.cmd(f"bcast:late:{i}:" + "y" * 4000) == "sent:1"
    for i in range(8):
        assert late.recv_text().startswith(f"{i}:")
    assert late.cmd("still") == "still"
    assert stats(pub)["backpressure_closes"] == 0
    late.close()
    pub.close()


def test_one_message_larger_than_the_limit_reaches_a_reader(server):
    # The limit is on what is already waiting when a message is queued, so a
    # single 200 KiB message still reaches a reader that keeps up, even with
    # a 64 KiB limit and a small socket buffer on the reader's side.
    srv = server(args=BP_ARGS)
    r = RawClient(srv.port, rcvbuf=4096)
    assert r.handshake().status == 101
    join(r, "big")
    pub = RawClient.connect(srv.port)
    text = "z" * (200 << 10)
    for i in range(3):
        assert pub.cmd(f"bcast:big:{i}{text}") == "sent:1"
        got = r.recv_text(timeout=10)
        assert got == f"{i}{text}"
    assert stats(pub)["backpressure_closes"] == 0
    r.close()
    pub.close()


def test_pings_without_reading_do_not_pile_up_pongs(server):
    # Every ping is owed a pong; a client that keeps pinging and never reads
    # must hit the same limit as for messages, not grow the server's memory.
    srv = server(args=BP_ARGS)
    obs = observer(srv.port)
    c = RawClient(srv.port, rcvbuf=4096)
    assert c.handshake().status == 101
    cid = conn_id(c)
    rss0 = srv.rss_kb()
    ping = build_frame(0x9, b"p" * 125)
    burst = ping * 256
    c.sock.settimeout(5)
    sent = 0
    try:
        while sent < (40 << 20):
            c.sock.sendall(burst)
            sent += len(burst)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except TimeoutError:
        pass
    code, _, _ = wait_closed_report(obs, cid, timeout=10)
    assert code == 1008, (code, sent)
    assert c.wait_eof(10.0)
    c.close()
    if not sanitized_build():
        assert (srv.rss_kb() - rss0) / 1024 < 30
    o = RawClient.connect(srv.port)
    assert stats(o)["backpressure_closes"] == 1
    o.close()
    obs.close()
