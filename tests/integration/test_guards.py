"""The Lua guards (issue 14): --handler-timeout interrupts a handler that
runs too long where LuaJIT lets it (interpreted code) and ends the process
with status 4 where it cannot (a JIT-compiled loop); --lua-memory-limit
refuses the work of a handler that leaves the Lua heap over the limit. Each
with the guard off as well, where the README's warnings stand."""

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CloseReceived, RawClient, http_request, parse_kv

SCRIPT = Path(__file__).parent / "scripts" / "guards.lua"
STALLED_EXIT = 4
STUCK_EXIT = 3


def stats(c):
    return {k: int(v) for k, v in parse_kv(c.cmd("stats"), sep=" ").items()}


def wait_exit(srv, timeout):
    try:
        return srv.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit within {timeout} s:\n"
                    f"{srv.log()}")


# ---- --handler-timeout -----------------------------------------------------


@pytest.mark.parametrize("what", ["spin-interp", "spin-pcall"])
def test_interpreted_loop_is_interrupted(server, what):
    srv = server(script=SCRIPT, args=["--handler-timeout", "300"])
    other = RawClient.connect(srv.port)
    spinner = RawClient.connect(srv.port)
    t0 = time.monotonic()
    spinner.send_text(what)
    code, reason = spinner.expect_close(timeout=5)
    elapsed = time.monotonic() - t0
    assert code == 1011, (code, reason, srv.log())
    assert reason == b"handler error"
    # The timeout, plus at most a quarter of it before the watchdog looks.
    assert 0.3 <= elapsed < 2.0, elapsed
    # The node goes on serving, and the hook went with the call.
    assert other.cmd("hello") == "hello"
    st = stats(other)
    assert st["handler_timeouts"] == 1, st
    assert st["handler_errors"] == 1, st
    log = srv.log()
    assert re.search(r"guards\.lua: on_message \(conn \d+\): \S*guards\.lua:"
                     r"\d+: handler timeout: ran over 300 ms", log), log
    assert srv.alive()
    other.close()
    spinner.close()


def test_timer_and_http_handlers_are_interrupted(server):
    srv = server(script=SCRIPT, args=["--handler-timeout", "200"])
    c = RawClient.connect(srv.port)
    assert c.cmd("spin-timer") == "armed"
    assert srv.wait_log(r"ws\.after: \S*guards\.lua:\d+: handler timeout", 5)
    resp = http_request(srv.port, b"GET /spin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 500, resp
    st = stats(c)
    assert st["handler_timeouts"] == 2, st
    assert st["timer_errors"] == 1, st
    assert c.cmd("still here") == "still here"
    c.close()


@pytest.mark.parametrize("what", ["spin-jit", "spin-calls"])
def test_compiled_loop_exits_4_after_the_grace(server, what):
    srv = server(script=SCRIPT, args=["--handler-timeout", "300"])
    c = RawClient.connect(srv.port)
    assert c.cmd("warm") == "warm"
    srv.expect_exit = True
    t0 = time.monotonic()
    c.send_text(what)
    rc = wait_exit(srv, 6)
    elapsed = time.monotonic() - t0
    log = srv.log()
    assert rc == STALLED_EXIT, (rc, log)
    # 300 ms, then the 1 s grace after the interrupt.
    assert 1.3 <= elapsed < 4, elapsed
    assert re.search(r"handler timeout: \S*guards\.lua: on_message \(conn \d+\)"
                     r" has run for \d+ ms, over --handler-timeout 300 ms, "
                     r"and did not give up the loop within 1000 ms", log), log
    assert "exiting with status 4" in log
    c.close()


def test_guard_off_leaves_a_stuck_loop_to_the_signals(server):
    """--handler-timeout 0: the loop stays stuck (the README's warning),
    and SIGTERM still ends it with status 3."""
    srv = server(script=SCRIPT, args=["--handler-timeout", "0"])
    c = RawClient.connect(srv.port)
    c.send_text("spin-interp")
    assert srv.wait_log(r"spinning \(interpreted\)", 5), srv.log()
    # Nothing is to happen: a bounded look for an exit that must not come,
    # longer than a 300 ms timeout and its grace would take.
    with pytest.raises(subprocess.TimeoutExpired):
        srv.wait(1.6)
    srv.signal(signal.SIGTERM)
    rc = wait_exit(srv, 6)
    log = srv.log()
    assert rc == STUCK_EXIT, (rc, log)
    assert "handler timeout" not in log
    assert re.search(r"stuck in \S*guards\.lua: on_message \(conn \d+\)", log)
    c.close()


# ---- --lua-memory-limit ----------------------------------------------------


def grow_until_closed(c, most):
    """Sends "grow" until the server closes; returns (grows, code, reason),
    grows being how many calls ran (each answers "grew N", N counting the
    whole table; the refused call's answer, sent before it returned, comes
    before the close frame)."""
    for i in range(most):
        c.send_text("grow")
        try:
            assert re.fullmatch(r"grew \d+", c.recv_text(timeout=10))
        except CloseReceived as e:
            return i, e.code, e.reason
    return most, None, None


def test_memory_limit_refuses_the_growing_handler(server):
    srv = server(script=SCRIPT, args=["--lua-memory-limit", "32"])
    other = RawClient.connect(srv.port)
    leaky = RawClient.connect(srv.port)
    rss0 = srv.rss_kb()
    grows, code, reason = grow_until_closed(leaky, 100)
    assert code == 1011, (grows, code, reason, srv.log())
    assert reason == b"lua memory limit"
    assert 25 <= grows <= 33, grows
    # Served while the heap is over: a handler that keeps nothing.
    assert other.cmd("hello") == "hello"
    # One that keeps more is refused too; then the heap is over for good.
    grows, code, _ = grow_until_closed(other, 5)
    assert (grows, code) == (1, 1011)
    resp = RawClient(srv.port).handshake()
    assert resp.status == 503, resp
    assert resp.body == b"server over its memory limit\n"
    resp = http_request(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 503, resp
    log = srv.log()
    assert re.search(r"on_message \(\S*guards\.lua:\d+\) \(conn \d+\) left "
                     r"the Lua heap at 3\d\.\d MiB after a full collection, "
                     r"over --lua-memory-limit 32 MiB", log), log
    assert re.search(r"upgrade refused 503: the Lua heap is over", log), log
    # Bounded: the limit, the one refused megabyte, the buffers around.
    assert srv.rss_kb() - rss0 < 48 * 1024, (rss0, srv.rss_kb())
    assert srv.alive()
    other.close()
    leaky.close()


def test_memory_limit_counts(server):
    srv = server(script=SCRIPT, args=["--lua-memory-limit", "16"])
    watcher = RawClient.connect(srv.port)
    leaky = RawClient.connect(srv.port)
    _, code, _ = grow_until_closed(leaky, 40)
    assert code == 1011
    st = stats(watcher)
    assert st["lua_memory_limit_hits"] == 1, st
    assert st["handler_errors"] == 0, st
    assert 16 * 1024 < st["lua_kb"] < 20 * 1024, st
    watcher.close()
    leaky.close()


def test_memory_limit_off_lets_the_heap_grow(server):
    """--lua-memory-limit 0: nothing stops the table (the README's warning
    stands)."""
    srv = server(script=SCRIPT, args=["--lua-memory-limit", "0"])
    c = RawClient.connect(srv.port)
    rss0 = srv.rss_kb()
    grows, code, _ = grow_until_closed(c, 64)
    assert (grows, code) == (64, None)
    st = stats(c)
    assert st["lua_kb"] > 64 * 1024, st
    assert st["lua_memory_limit_hits"] == 0, st
    assert srv.rss_kb() - rss0 > 60 * 1024
    c.close()
