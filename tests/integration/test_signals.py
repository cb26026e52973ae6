"""Signals whatever the loop is doing (issue 16, items 1, 6a, 6c): a handler
stuck in `while true do end` no longer makes the node ignore SIGTERM and
SIGINT; the shutdown grace is the documented 3 s; ws.clock() moves inside a
long handler where ws.now() does not."""

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RawClient

SCRIPT = Path(__file__).parent / "scripts" / "signals.lua"
STUCK_EXIT = 3


def start_stuck(server):
    """A server whose loop is stuck in on_message, with the client that
    sent the message."""
    srv = server(script=SCRIPT)
    c = RawClient.connect(srv.port)
    c.send_text("echo?")
    assert c.recv_text() == "echo?"
    c.send_text("spin")
    assert srv.wait_log(r"spinning", 5), srv.log()
    return srv, c


def wait_exit(srv, timeout):
    t0 = time.monotonic()
    try:
        rc = srv.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit within {timeout} s of the "
                    f"signal:\n{srv.log()}")
    return rc, time.monotonic() - t0


def names_the_handler(log):
    return re.search(r"stuck in \S*signals\.lua: on_message \(conn \d+\)",
                     log)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_stuck_handler_signal_exits_3_after_grace(server, sig):
    srv, c = start_stuck(server)
    srv.signal(sig)
    rc, elapsed = wait_exit(srv, 6)
    log = srv.log()
    assert rc == STUCK_EXIT, (rc, log)
    assert 1.8 <= elapsed < 5, elapsed  # the loop had its 2 s to answer
    assert "did not answer within 2 s" in log, log
    assert names_the_handler(log), log
    c.close()


def test_stuck_handler_second_signal_exits_at_once(server):
    srv, c = start_stuck(server)
    srv.signal(signal.SIGTERM)
    t0 = time.monotonic()
    srv.signal(signal.SIGINT)
    rc, _ = wait_exit(srv, 6)
    elapsed = time.monotonic() - t0
    log = srv.log()
    assert rc == STUCK_EXIT, (rc, log)
    assert elapsed < 1.5, elapsed  # well inside the 2 s grace
    assert "second signal" in log, log
    assert names_the_handler(log), log
    c.close()


def test_signal_during_a_short_busy_handler_is_orderly(server):
    """A handler that is busy for less than the grace is not 'stuck': the
    loop answers when it returns, and shutdown is the usual one."""
    srv = server(script=SCRIPT)
    c = RawClient.connect(srv.port)
    c.send_text("busy:0.7")
    assert srv.wait_log(r"busy for", 5), srv.log()
    srv.signal(signal.SIGTERM)
    assert c.recv_text(timeout=5) == "done"
    code, _ = c.expect_close(timeout=5)
    assert code == 1001
    c.send_close(1001)
    rc, _ = wait_exit(srv, 6)
    assert rc == 0, srv.log()
    assert "stuck" not in srv.log()


def test_second_signal_with_a_free_loop_exits_0_at_once(server):
    """The README's promise when nothing is stuck: the loop takes the second
    signal itself and exits 0 without waiting out the 3 s grace."""
    srv = server(script=SCRIPT)
    deaf = RawClient.connect(srv.port)
    srv.signal(signal.SIGTERM)
    code, _ = deaf.expect_close(timeout=5, answer_pings=False)
    assert code == 1001
    t0 = time.monotonic()
    srv.signal(signal.SIGINT)
    rc, _ = wait_exit(srv, 5)
    assert time.monotonic() - t0 < 1.5
    assert rc == 0, srv.log()
    assert "second signal: exiting now" in srv.log()
    deaf.close()


def test_sighup_still_reloads(server):
    srv = server(script=SCRIPT)
    srv.proc.send_signal(signal.SIGHUP)
    assert srv.wait_log(r"SIGHUP", 5), srv.log()
    c = RawClient.connect(srv.port)
    c.send_text("still?")
    assert c.recv_text() == "still?"
    c.close()


def test_shutdown_grace_is_three_seconds(server):
    """6a: SIGTERM arrives while a handler is busy for 1 s; the grace must
    start after it, not from the loop's cached clock of before it. A client
    that never answers its close is cut after ~3 s, not ~2 s."""
    srv = server(script=SCRIPT)
    busy = RawClient.connect(srv.port)
    deaf = RawClient.connect(srv.port)
    busy.send_text("busy:1.0")
    assert srv.wait_log(r"busy for", 5), srv.log()
    srv.signal(signal.SIGTERM)
    code, _ = deaf.expect_close(timeout=5, answer_pings=False)
    t_close = time.monotonic()
    assert code == 1001
    assert deaf.wait_eof(6), "the server never dropped the deaf client"
    grace = time.monotonic() - t_close
    assert 2.8 <= grace <= 4.0, grace
    rc, _ = wait_exit(srv, 5)
    assert rc == 0, srv.log()
    busy.close()
    deaf.close()


def test_clock_advances_in_a_long_handler_now_does_not(server):
    """6c: ws.now() is the loop's cached clock; ws.clock() reads the time."""
    srv = server(script=SCRIPT)
    c = RawClient.connect(srv.port)
    c.send_text("clock:0.3")
    m = re.fullmatch(r"now=([\d.]+) clock=([\d.]+)", c.recv_text())
    assert m, m
    assert float(m.group(1)) == 0
    assert 250 <= float(m.group(2)) <= 2000, m.group(2)
    c.close()
