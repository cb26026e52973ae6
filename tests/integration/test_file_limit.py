"""Issue 16, item 2: at the open-file limit, new clients are refused
visibly (counted in connections_refused, logged once per burst naming the
file limit), they see a close rather than a hang, and a reserve of
descriptors keeps the admin port answering."""

import re

from conftest import (PeerClosed, RawClient, Server, free_port, require_bin,
                      wait_until, CMD_SCRIPT)
from test_admin import counter, get, scrape

NOFILE = 64


class LimitedServer(Server):
    """A server started under `ulimit -n NOFILE` (the shell execs it, so
    the pid is moonroom's)."""

    def argv(self):
        return ["/bin/sh", "-c", f'ulimit -n {NOFILE} && exec "$0" "$@"',
                *super().argv()]


def test_clients_past_the_file_limit_are_refused_visibly(tmp_path):
    require_bin()
    admin = free_port()
    port = free_port()
    srv = LimitedServer(["--admin-listen", f"127.0.0.1:{admin}"], CMD_SCRIPT,
                        tmp_path / "limited.log", port)
    clients, refused = [], 0
    try:
        srv.start()
        # More clients than the limit allows: the first ones are served,
        # then every new one is closed at once.
        for i in range(NOFILE + 10):
            c = RawClient(port, timeout=3.0)
            try:
                resp = c.handshake(timeout=3.0)
                assert resp.status == 101
                clients.append(c)
            except (PeerClosed, ConnectionResetError, BrokenPipeError):
                refused += 1
                c.close()
            except TimeoutError:
                raise AssertionError(f"client {i} hung: neither served nor "
                                     f"closed within 3 s\n{srv.log()}")
        assert clients, srv.log()
        assert refused >= 10, srv.log()
        # The served clients still work at the limit.
        assert clients[0].cmd("still here") == "still here"
        # The admin port answers from the reserve, and the refusals are
        # counted one per connection.
        assert get(admin, "/healthz").status == 200
        wait_until(lambda: counter(scrape(admin), "connections_refused")
                   == refused, timeout=5, what="refusals counted")
        log = srv.log()
        lines = [ln for ln in log.splitlines()
                 if "connection refused" in ln and "open-file limit" in ln]
        assert lines, log
        assert f"open-file limit {NOFILE}" in lines[0], lines[0]
        # Logged per burst, not per connection.
        assert len(lines) <= 5, log
        if refused > len(lines):
            assert srv.wait_log(r"\.\.\. and \d+ more connections refused at "
                                r"the open-file limit", timeout=5), srv.log()
        # Once descriptors free up, new clients are served again.
        for c in clients[:5]:
            c.close()
        clients = clients[5:]

        def served():
            c = RawClient(port, timeout=3.0)
            try:
                return c.handshake(timeout=3.0).status == 101
            except (PeerClosed, ConnectionResetError, BrokenPipeError):
                return False
            finally:
                c.close()
        wait_until(served, timeout=5, what="a new client served again")
    finally:
        for c in clients:
            c.close()
        srv.stop()
    log = srv.log()
    assert "AddressSanitizer" not in log and "runtime error:" not in log, log
