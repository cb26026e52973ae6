"""--trace-latency: the real server writes one line per broadcast frame with
the stamps of its way out (read, handler, queued, first and last socket
write), and the write sweep of a large room goes out in slices of 32
connections a loop turn, so that messages read meanwhile can join it. The
benchmark's latency breakdown (tests/bench/run.py) is built on these lines."""

import asyncio
import math
from pathlib import Path

from conftest import REPO_ROOT, arecv, arun, ws_connect

BENCH = REPO_ROOT / "tests" / "bench" / "bench.lua"
SUBS = 200
MESSAGES = 5
SLICE = 32  # FLUSH_SLICE in core/server.c


def read_trace(path):
    lines, footer = [], {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            words = line[1:].split()
            if words and words[0] == "frames":
                footer = {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}
            continue
        (seq, read_no, in_read, read, msg, queued, first, last, recipients, writes,
         turn_queued, turn_last) = (int(x) for x in line.split())
        lines.append(dict(seq=seq, read_no=read_no, in_read=in_read, read=read, msg=msg,
                          queued=queued, first=first, last=last, recipients=recipients,
                          writes=writes, turn_queued=turn_queued, turn_last=turn_last))
    return lines, footer


async def fan_out(url):
    subs = []
    for _ in range(SUBS):
        subs.append(await ws_connect(url + "/?room=t&role=sub").__aenter__())
    async with ws_connect(url + "/?room=t&role=pub") as pub:
        for i in range(MESSAGES):
            await pub.send(f"m{i}")
            assert await arecv(pub) == f"m{i}"  # the publisher is a member too
        for ws in subs:
            for i in range(MESSAGES):
                assert await arecv(ws) == f"m{i}"
    for ws in subs:
        await ws.close()


def test_every_broadcast_frame_is_traced_in_order(server, tmp_path):
    trace = tmp_path / "frames.trace"
    srv = server(script=BENCH, args=["--trace-latency", str(trace),
                                     "--ping-interval", "0"])
    assert srv.wait_log(r"tracing every broadcast frame's timings to")
    arun(fan_out(srv.url), timeout=60)
    srv.expect_exit = True
    srv.signal(15)
    assert srv.wait(timeout=10) == 0
    lines, footer = read_trace(trace)
    assert footer.get("frames") == MESSAGES and footer.get("lost") == 0, footer
    assert [l["seq"] for l in lines] == list(range(1, MESSAGES + 1))
    for l in lines:
        # Every member (the publisher too) got its copy, written once each.
        assert l["recipients"] == SUBS + 1 and l["writes"] == SUBS + 1, l
        assert 0 < l["read"] <= l["msg"] <= l["queued"] <= l["first"] <= l["last"], l
        assert l["in_read"] >= 1
        # The sweep went out in slices: 201 connections at 32 a turn take
        # at least seven turns after the one that queued the frame. Written
        # all at once, turn_last would equal turn_queued + 1.
        assert l["turn_last"] - l["turn_queued"] >= math.ceil((SUBS + 1) / SLICE), l
    assert footer["sends"] >= MESSAGES * (SUBS + 1) // 2


def test_off_by_default_writes_nothing(server, tmp_path):
    srv = server(script=BENCH, args=["--ping-interval", "0"])
    arun(fan_out(srv.url), timeout=60)
    assert "tracing" not in srv.log()
    assert not list(tmp_path.glob("*.trace"))


def test_unwritable_trace_file_is_a_clear_startup_error(tmp_path):
    from conftest import free_port, run_bin
    r = run_bin(["--listen", f"127.0.0.1:{free_port()}", "--trace-latency",
                 str(tmp_path / "no" / "such" / "dir" / "t"), str(BENCH)])
    assert r.returncode == 1
    assert b"cannot write --trace-latency" in r.stdout + r.stderr
