"""The admin server on --admin-listen: /metrics scraped and parsed with
Debian's python3-prometheus-client, /healthz, /readyz (after start, during
the shutdown grace, before and after the first cluster link), errors and
limits, and that it is off by default.

Every request goes over loopback with a plain socket (RawClient), which
checks the exact status line, headers and body."""

import os
import signal
import socket
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from conftest import (CMD_SCRIPT, PeerClosed, RawClient, free_port, join,
                      require_bin, wait_until)

COOKIE = "admin-test-cookie"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# ws.stats() keys that are levels, not running totals: gauges in /metrics.
GAUGE_STATS = {"connections_open", "rooms", "timers", "engine_connected",
               "engine_subscriptions"}


def admin_server(server, args=()):
    """Starts the command handler with an admin port; returns (srv, port)."""
    port = free_port()
    srv = server(args=["--admin-listen", f"127.0.0.1:{port}", *args])
    return srv, port


def get(port, path, method="GET", headers=(), timeout=5.0):
    """One request on a new connection (closed after the response)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers,
             "Connection: close"]
    c = RawClient(port, timeout=timeout)
    try:
        c.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return c.read_http_response(timeout=timeout,
                                    read_body=method != "HEAD")
    finally:
        c.close()


def scrape(port):
    """GETs /metrics and parses it with the reference parser; returns
    {family name: family}."""
    resp = get(port, "/metrics")
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == METRICS_TYPE
    text = resp.body.decode("utf-8")
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, family, sample=None, labels=None):
    f = fams[family]
    sample = sample or family
    for s in f.samples:
        if s.name == sample and (labels is None or s.labels == labels):
            return s.value
    raise AssertionError(f"no sample {sample} {labels} in {f}")


def counter(fams, name):
    """A ws.stats() counter NAME as exported: family NAME, type counter,
    one sample moonroom_NAME_total."""
    f = fams[f"moonroom_{name}"]
    assert f.type == "counter", f
    assert f.documentation, f"no HELP for {name}"
    return value(fams, f"moonroom_{name}", f"moonroom_{name}_total")


def gauge(fams, name, labels=None):
    f = fams[name]
    assert f.type == "gauge", f
    assert f.documentation, f"no HELP for {name}"
    return value(fams, name, name, labels)


def listening_ports(pid):
    """TCP ports a process listens on, from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


# -- off by default -----------------------------------------------------------

def test_admin_is_off_by_default(server):
    srv = server()
    assert listening_ports(srv.pid()) == {srv.port}
    assert "admin listening" not in srv.log()


def test_admin_listens_on_its_own_port(server):
    srv, port = admin_server(server)
    assert listening_ports(srv.pid()) == {srv.port, port}
    assert srv.wait_log(r"admin listening on 127\.0\.0\.1:%d" % port)


def test_admin_port_in_use_exits_1(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        p = subprocess.run(
            [str(require_bin()), "--listen", f"127.0.0.1:{free_port()}",
             "--admin-listen", f"127.0.0.1:{busy.getsockname()[1]}",
             "--no-reload", str(CMD_SCRIPT)],
            capture_output=True, timeout=10, text=True)
    finally:
        busy.close()
    assert p.returncode == 1, p
    assert "--admin-listen" in p.stderr and "in use" in p.stderr, p.stderr


# -- /metrics -------------------------------------------------------------------

def frame_len(payload_len):
    """Bytes of an unmasked server frame with this payload."""
    return payload_len + (2 if payload_len < 126 else 4 if payload_len < 65536
                          else 10)


def test_metrics_match_ws_stats_after_traffic(server):
    srv, port = admin_server(server)
    a = RawClient.connect(srv.port)
    b = RawClient.connect(srv.port)
    join(a, "red")
    join(b, "red")
    join(b, "blue")
    a.send_text("bcast:red:hello")
    assert sorted([a.recv_text(), a.recv_text()]) == ["hello", "sent:2"]
    assert b.recv_text() == "hello"
    assert a.cmd("echo me") == "echo me"
    # A refused upgrade (a plain GET on the WebSocket port) and a handler
    # error, so that refusal counters are not all zero.
    r = RawClient(srv.port)
    r.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.read_http_response().status == 404
    r.close()
    c = RawClient.connect(srv.port)
    c.send_text("error")
    assert c.expect_close()[0] == 1011
    c.close()
    assert get(port, "/healthz").status == 200
    wait_until(lambda: scrape(port)["moonroom_connections_open"]
               .samples[0].value == 2)

    before = scrape(port)
    reply = a.cmd("stats")
    st = {}
    for part in reply.split(","):
        k, _, v = part.partition("=")
        st[k] = int(float(v))
    after = scrape(port)

    # Every ws.stats() key is exported, with the right type and value.
    moving = {"messages_in", "bytes_in", "messages_out", "bytes_out",
              "admin_requests"}
    for key, v in st.items():
        if key == "lua_kb":
            got = gauge(after, "moonroom_lua_memory_bytes")
            assert abs(got / 1024 - v) < 256, (got, v)
        elif key in GAUGE_STATS:
            assert gauge(before, f"moonroom_{key}") == v, key
            assert gauge(after, f"moonroom_{key}") == v, key
        elif key in moving:
            assert counter(before, key) <= v <= counter(after, key), key
        else:
            assert counter(before, key) == v == counter(after, key), key
    # What the stats command itself moved, exactly.
    assert st["messages_in"] == counter(before, "messages_in") + 1
    assert counter(after, "messages_in") == st["messages_in"]
    assert counter(after, "messages_out") == st["messages_out"] + 1
    assert counter(after, "bytes_in") == st["bytes_in"]
    assert counter(after, "bytes_out") == \
        st["bytes_out"] + frame_len(len(reply.encode()))
    assert counter(after, "admin_requests") == \
        counter(before, "admin_requests") + 1
    # Values the traffic above makes known.
    assert st["connections_open"] == 2
    assert st["rooms"] == 2
    assert st["handshakes_refused"] == 1
    assert st["handler_errors"] == 1
    # bcast, and cmd.lua's two on_close reports for the handler-error client.
    assert st["broadcasts"] == 3
    # a, b, the refused GET, the erroring client, and the fixture's probe
    # that waited for the port to accept.
    assert st["connections_accepted"] == 5
    # Gauges outside ws.stats().
    assert gauge(after, "moonroom_output_queued_bytes") == 0
    assert gauge(after, "moonroom_ready") == 1
    assert gauge(after, "moonroom_admin_connections") == 1
    for state in ("connecting", "handshake", "up"):
        assert gauge(after, "moonroom_cluster_links", {"state": state}) == 0
    assert 0 <= gauge(after, "moonroom_uptime_seconds") < 120
    assert abs(gauge(after, "moonroom_start_time_seconds") -
               (time.time() - gauge(after, "moonroom_uptime_seconds"))) < 5
    # Nothing is exported twice and every family has help text.
    assert all(f.documentation for f in after.values())
    a.close()
    b.close()


def test_metrics_gauges_follow_rooms_and_connections(server):
    srv, port = admin_server(server)
    clients = [RawClient.connect(srv.port) for _ in range(3)]
    for i, c in enumerate(clients):
        join(c, f"room{i % 2}")
    fams = scrape(port)
    assert gauge(fams, "moonroom_connections_open") == 3
    assert gauge(fams, "moonroom_rooms") == 2
    clients[1].send_close(1000)
    clients[1].expect_close()
    wait_until(lambda: gauge(scrape(port), "moonroom_connections_open") == 2)
    assert gauge(scrape(port), "moonroom_rooms") == 1
    for c in clients:
        c.close()


def test_metrics_queued_bytes_of_a_client_that_does_not_read(server):
    srv, port = admin_server(server, ["--max-backpressure", "16777216"])
    deaf = RawClient.connect(srv.port, rcvbuf=4096)
    join(deaf, "slow")
    talker = RawClient.connect(srv.port)
    big = "x" * 60000

    def queued():
        assert talker.cmd(f"bcast:slow:{big}") == "sent:1"
        return gauge(scrape(port), "moonroom_output_queued_bytes") > 0

    wait_until(queued, timeout=10,
               what="bytes queued for a client that does not read")
    talker.close()
    deaf.close()


def test_metrics_head_has_no_body(server):
    srv, port = admin_server(server)
    c = RawClient(port)
    c.send(b"HEAD /metrics HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
    head = c.read_http_response(read_body=False)
    assert head.status == 200
    assert head.headers["content-type"] == METRICS_TYPE
    assert int(head.headers["content-length"]) > 1000
    # The next bytes are the second response, not a body.
    nxt = c.read_http_response()
    assert nxt.status == 200 and nxt.body == b"ok\n"
    c.close()


# -- /healthz and /readyz -------------------------------------------------------

def test_healthz_and_readyz_after_start(server):
    srv, port = admin_server(server)
    h = get(port, "/healthz")
    assert (h.status, h.body) == (200, b"ok\n")
    assert h.headers["content-type"] == "text/plain; charset=utf-8"
    assert h.headers["cache-control"] == "no-store"
    r = get(port, "/readyz")
    assert (r.status, r.body) == (200, b"ready\n")
    # The query string does not matter.
    assert get(port, "/readyz?verbose").status == 200


def test_readyz_503_during_shutdown_grace_then_process_exits(server):
    srv, port = admin_server(server)
    deaf = RawClient.connect(srv.port)  # never answers the close frame
    probe = RawClient(port)
    probe.send(b"GET /readyz HTTP/1.1\r\n\r\n")
    assert probe.read_http_response().status == 200
    srv.signal(signal.SIGTERM)
    # The same keep-alive connection sees readiness drop while the deaf
    # client holds the grace period open; liveness stays 200.
    statuses = []

    def not_ready():
        probe.send(b"GET /readyz HTTP/1.1\r\n\r\n")
        r = probe.read_http_response()
        statuses.append(r.status)
        return r if r.status == 503 else None

    r = wait_until(not_ready, timeout=2)
    assert r.body == b"not ready: shutting down\n"
    probe.send(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert probe.read_http_response().status == 200
    probe.send(b"GET /metrics HTTP/1.1\r\n\r\n")
    body = probe.read_http_response().body.decode()
    assert "\nmoonroom_ready 0\n" in body
    assert srv.alive(), "the grace period should still be running"
    # A busy admin connection does not keep the process alive: it ends when
    # the grace does, and the admin connection is closed with it.
    closed = False
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        try:
            probe.send(b"GET /readyz HTTP/1.1\r\n\r\n")
            assert probe.read_http_response(timeout=2).status == 503
        except (PeerClosed, OSError):
            closed = True
            break
    assert closed, "the admin connection outlived the shutdown"
    assert srv.wait(5) == 0, srv.log()
    probe.close()
    deaf.close()


def test_readyz_waits_for_the_first_cluster_link(server):
    cport = free_port()
    b, bport = admin_server(server, ["--peer", f"127.0.0.1:{cport}",
                                     "--cookie", COOKIE, "--node", "b"])
    r = get(bport, "/readyz")
    assert r.status == 503, r
    assert r.body == b"not ready: no cluster link is up yet (--peer)\n"
    assert gauge(scrape(bport), "moonroom_ready") == 0
    assert gauge(scrape(bport), "moonroom_cluster_links", {"state": "up"}) == 0
    a, aport = admin_server(server, ["--cluster-listen", f"127.0.0.1:{cport}",
                                     "--cookie", COOKIE, "--node", "a"])
    # A node without --peer is ready at once.
    assert get(aport, "/readyz").status == 200
    wait_until(lambda: get(bport, "/readyz").status == 200, timeout=15,
               what="b ready once its link to a is up")
    for port in (aport, bport):
        fams = scrape(port)
        assert gauge(fams, "moonroom_cluster_links", {"state": "up"}) == 1
        assert gauge(fams, "moonroom_cluster_links",
                     {"state": "handshake"}) == 0
        assert counter(fams, "cluster_links_up") >= 1


# -- errors and limits ----------------------------------------------------------

def test_not_found_and_method_not_allowed(server):
    srv, port = admin_server(server)
    r = get(port, "/")
    assert (r.status, r.body) == (404, b"Not Found\n")
    assert get(port, "/metrics/extra").status == 404
    r = get(port, "/metrics", method="POST", headers=["Content-Length: 0"])
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert get(port, "/healthz", method="DELETE").status == 405


def test_garbage_and_oversized_heads_are_refused_and_counted(server):
    srv, port = admin_server(server)
    c = RawClient(port)
    c.send(b"\x16\x03\x01garbage\r\n\r\n")
    r = c.read_http_response()
    assert r.status == 400 and r.headers["connection"] == "close"
    assert c.wait_eof(3)
    c.close()
    c = RawClient(port)
    c.send(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    r = c.read_http_response()
    assert r.status == 431
    assert c.wait_eof(3)
    c.close()
    assert srv.wait_log(r"admin 127\.0\.0\.1: refused 431")
    assert counter(scrape(port), "admin_bad_requests") == 2


def test_keep_alive_and_pipelining(server):
    srv, port = admin_server(server)
    c = RawClient(port)
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n")
    r = c.read_http_response()
    assert r.status == 200 and r.headers["connection"] == "keep-alive"
    # Three requests in one write are answered in order.
    c.send(b"GET /readyz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"
           b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    got = [c.read_http_response() for _ in range(3)]
    assert [g.status for g in got] == [200, 404, 200]
    assert got[2].headers["connection"] == "close"
    assert c.wait_eof(3)
    c.close()
    # HTTP/1.0 without keep-alive is closed after one response.
    c = RawClient(port)
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert c.read_http_response().status == 200
    assert c.wait_eof(3)
    c.close()


def test_a_request_that_never_completes_times_out(server):
    srv, port = admin_server(server)
    c = RawClient(port)
    c.send(b"GET /metr")
    t0 = time.monotonic()
    assert c.wait_eof(10), "a partial request was never timed out"
    assert 4 <= time.monotonic() - t0 < 9
    c.close()
    assert srv.wait_log(r"admin 127\.0\.0\.1: closed: no whole request")
    assert counter(scrape(port), "admin_timeouts") == 1


def test_connections_over_the_limit_are_refused_and_counted(server):
    srv, port = admin_server(server)
    # The server accepts connections in the order they were made, so the
    # 64 held ones are in before the 65th; the last one answers.
    held = [RawClient(port) for _ in range(64)]
    held[-1].send(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert held[-1].read_http_response().status == 200
    assert "admin connection refused" not in srv.log()
    extra = RawClient(port)
    assert extra.wait_eof(3), "the 65th admin connection was not refused"
    extra.close()
    assert srv.wait_log(r"admin connection refused: 64 admin connections")
    for h in held:
        h.close()

    # Until the server has seen the 64 closes, a scrape can itself be over
    # the limit: refused and counted like the 65th. Count those too.
    scrapes_refused = [0]

    def refused():
        try:
            return counter(scrape(port), "admin_connections_refused") == \
                1 + scrapes_refused[0]
        except (PeerClosed, OSError):
            scrapes_refused[0] += 1
            return False

    wait_until(refused, timeout=5)
