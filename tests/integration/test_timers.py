"""Script timers against the real binary: ws.after and ws.every send at the
right times on the loop's clock, conn:after closes a connection that did
not authenticate in time, a callback's error is logged with the script's
file and line (and a repeating timer that raised is stopped), and SIGTERM
with 10,000 pending timers still exits at once.

Times are measured from just before the command is sent. A timer never
fires early by the loop's clock, which the server reads when the command
arrives, so a message may come at most a little before its due time as the
client sees it (EARLY_MS); the upper bounds only catch a timer that is far
off on a slow, shared (or sanitized) machine."""

import re
import signal
import subprocess
import time

import pytest

from conftest import SCRIPTS, RawClient, arecv, arun, wait_until, ws_connect

TIMERS_SCRIPT = SCRIPTS / "timers.lua"
EARLY_MS = 15
LATE_MS = 1500


def ms_since(t0):
    return (time.monotonic() - t0) * 1000


def recv_timed(client, t0, timeout=5.0):
    """(text, ms since t0) of the next message."""
    text = client.recv_text(timeout)
    return text, ms_since(t0)


def script_line(marker):
    """The line number of the script line holding marker."""
    for n, line in enumerate(TIMERS_SCRIPT.read_text().splitlines(), 1):
        if marker in line:
            return n
    raise AssertionError(f"{marker!r} not in {TIMERS_SCRIPT}")


def stats(client):
    return dict(kv.split("=") for kv in client.cmd("stats").split())


def test_after_and_every_send_at_the_right_times(server):
    srv = server(script=TIMERS_SCRIPT)
    c = RawClient.connect(srv.port)
    t0 = time.monotonic()
    c.send_text("after 300 a")
    c.send_text("every 100 e 3")
    got = [recv_timed(c, t0) for _ in range(4)]
    # e3 ties with a at best, and was re-armed after a was scheduled.
    assert [text for text, _ in got] == ["e1", "e2", "a", "e3"], got
    for (text, at), due in zip(got, [100, 200, 300, 300]):
        assert due - EARLY_MS <= at <= due + LATE_MS, (text, at, due)
    # The repeating timer cancelled itself after 3: nothing comes before a
    # later marker.
    c.send_text("after 250 done")
    assert c.recv_text() == "done"
    assert stats(c) == {"timers": "0", "timer_errors": "0"}
    c.close()


def test_a_sooner_timer_scheduled_later_fires_first(server):
    srv = server(script=TIMERS_SCRIPT)
    c = RawClient.connect(srv.port)
    t0 = time.monotonic()
    c.send_text("after 5000 late")
    assert c.cmd("sync") == "sync"  # the 5 s timer is armed
    c.send_text("after 100 soon")
    text, at = recv_timed(c, t0)
    assert text == "soon"
    assert at <= 100 + LATE_MS, at
    assert stats(c)["timers"] == "1"
    c.close()


def test_conn_after_closes_a_connection_that_did_not_authenticate(server):
    srv = server(script=TIMERS_SCRIPT)

    async def go():
        import websockets
        t0 = time.monotonic()
        async with ws_connect(srv.url + "/?auth_ms=400") as good, \
                ws_connect(srv.url + "/?auth_ms=400") as late:
            await good.send("auth")
            assert await arecv(good) == "welcome"
            with pytest.raises(websockets.ConnectionClosed):
                await arecv(late, timeout=5)
            elapsed = ms_since(t0)
            assert late.close_code == 4001, late.close_code
            assert late.close_reason == "authenticate first"
            assert 400 - EARLY_MS <= elapsed <= 400 + LATE_MS, elapsed
            # The one that authenticated stays, and its deadline is gone.
            await good.send("still here")
            assert await arecv(good) == "still here"
            await good.send("stats")
            assert await arecv(good) == "timers=0 timer_errors=0"
    arun(go())


def test_conn_after_is_cancelled_when_the_connection_closes(server):
    srv = server(script=TIMERS_SCRIPT)
    watcher = RawClient.connect(srv.port)
    for _ in range(3):
        RawClient.connect(srv.port, path="/?auth_ms=60000").abort()
    c = RawClient.connect(srv.port, path="/?auth_ms=60000")
    c.send_close(1000)
    assert c.expect_close() == (1000, b"")
    c.close()
    # Closes are seen by the server in their own time: wait for the count.
    wait_until(lambda: stats(watcher)["timers"] == "0",
               what="the closed connections' conn:after timers to go")
    watcher.close()


def test_timer_error_is_logged_with_file_and_line(server):
    srv = server(script=TIMERS_SCRIPT)
    c = RawClient.connect(srv.port)
    c.send_text("boom 10")
    c.send_text("boomevery 10")
    boom = script_line("BOOM LINE")
    every = script_line("BOOM EVERY LINE")
    m = srv.wait_log(rf"timers\.lua: ws\.after: \S*timers\.lua:{boom}: "
                     r"timer boom")
    assert m, srv.log()
    m = srv.wait_log(rf"timers\.lua: ws\.every: \S*timers\.lua:{every}: "
                     r"every boom")
    assert m, srv.log()
    m = srv.wait_log(r"ws\.every timer \d+ \(every 10 ms, function at "
                     rf"\S*timers\.lua:{every - 1}\) raised an error: stopped")
    assert m, srv.log()
    # Stopped after its first error: one line, however long we wait for
    # something later to happen.
    c.send_text("after 100 later")
    assert c.recv_text() == "later"
    assert len(re.findall("every boom", srv.log())) == 1
    assert stats(c) == {"timers": "0", "timer_errors": "2"}
    # The server goes on serving.
    assert c.cmd("echo") == "echo"
    c.close()


def test_sigterm_with_10000_pending_timers_exits_promptly(server):
    srv = server(script=TIMERS_SCRIPT)
    c = RawClient.connect(srv.port)
    assert c.cmd("many 10000 600000", timeout=20) == "armed 10000"
    assert stats(c)["timers"] == "10000"
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    code, _ = c.expect_close(timeout=5)
    assert code == 1001
    c.send_close(1001)
    c.close()
    try:
        rc = srv.wait(5)
    except subprocess.TimeoutExpired:
        pytest.fail("server did not exit within 5 s of SIGTERM with "
                    "10,000 timers pending")
    assert rc == 0
    # Well under the 3 s grace the clients get: nothing waited on timers.
    assert ms_since(t0) < 2500, ms_since(t0)
    assert re.search(r"shutdown: dropping 10000 pending timers", srv.log())


def test_sigterm_with_pending_timers_and_no_clients(server):
    srv = server(script=TIMERS_SCRIPT)
    c = RawClient.connect(srv.port)
    # Armed for the earliest: ten minutes away.
    assert c.cmd("many 100 600000") == "armed 100"
    c.send_close(1000)
    assert c.expect_close() == (1000, b"")
    c.close()
    srv.signal(signal.SIGTERM)
    try:
        assert srv.wait(5) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("server did not exit within 5 s of SIGTERM with timers "
                    "pending")
