"""Issue 16, item 5: events that come in bursts are logged at a rate limit,
with one line counting what was held back; the counters stay exact."""

import re
import socket

from conftest import free_port, wait_until
from test_admin import counter, scrape


def test_handshake_timeout_burst_is_summed_up(server):
    admin = free_port()
    srv = server(args=["--handshake-timeout", "1",
                       "--admin-listen", f"127.0.0.1:{admin}"])
    socks = []
    try:
        for _ in range(200):
            socks.append(socket.create_connection(("127.0.0.1", srv.port),
                                                  timeout=5))
        wait_until(lambda: counter(scrape(admin), "handshakes_timed_out")
                   == 200, timeout=10, what="200 handshake timeouts counted")
        m = srv.wait_log(r"\.\.\. and ([\d,]+) more handshake timeouts in "
                         r"the last second", timeout=5)
        assert m, srv.log()
    finally:
        for s in socks:
            s.close()

    def lines_and_summed():
        log = srv.log()
        lines = [ln for ln in log.splitlines() if "handshake timed out" in ln]
        summed = sum(int(n.replace(",", "")) for n in re.findall(
            r"\.\.\. and ([\d,]+) more handshake timeouts", log))
        return len(lines), summed

    # Every timeout is either a line or counted in a summary.
    wait_until(lambda: sum(lines_and_summed()) == 200, timeout=5,
               what="lines plus summed-up counts reach 200")
    lines, _ = lines_and_summed()
    # At most a handful per second: the burst spans one or two windows.
    assert 1 <= lines <= 15, f"{lines} lines:\n{srv.log()}"


def test_upgrades_refused_by_on_connect_are_summed_up(server):
    """A token check refusing a flood of clients (here lobby.lua's 401 for a
    wrong token) logs a handful of lines and sums up the rest; the count in
    handler_refusals stays exact."""
    from conftest import REPO_ROOT
    admin = free_port()
    srv = server(script=REPO_ROOT / "scripts" / "lobby.lua",
                 args=["--admin-listen", f"127.0.0.1:{admin}"])
    request = (f"GET /?token=wrong&name=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(request)
            assert s.recv(64).startswith(b"HTTP/1.1 401")
    wait_until(lambda: counter(scrape(admin), "handler_refusals") == 200,
               timeout=10, what="200 refusals counted")

    def lines_and_summed():
        log = srv.log()
        lines = [ln for ln in log.splitlines()
                 if "upgrade refused 401 by on_connect" in ln]
        summed = sum(int(n.replace(",", "")) for n in re.findall(
            r"\.\.\. and ([\d,]+) more upgrades refused by on_connect", log))
        return len(lines), summed

    wait_until(lambda: sum(lines_and_summed()) == 200, timeout=5,
               what="lines plus summed-up counts reach 200")
    lines, _ = lines_and_summed()
    assert 1 <= lines <= 15, f"{lines} lines:\n{srv.log()}"
