"""Plain HTTP on the listen port (on_http), against the real binary with
independent clients: Python's http.client, curl, raw sockets, and
python3-websockets for the room members a publish reaches."""

import http.client
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import (
    CMD_SCRIPT,
    REPO_ROOT,
    SCRIPTS,
    PeerClosed,
    RawClient,
    arecv,
    arun,
    http_request,
    wait_until,
    ws_connect,
)

HTTP_SCRIPT = SCRIPTS / "http.lua"
CHAT = REPO_ROOT / "scripts" / "chat.lua"
CURL = shutil.which("curl")


def stats_of(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/stats")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {k: int(v) for k, v in
            (line.split("=", 1) for line in body.splitlines())}


@pytest.fixture
def http_server(server):
    return server(HTTP_SCRIPT)


def read_all_responses(client, n, timeout=5.0):
    return [client.read_http_response(timeout=timeout) for _ in range(n)]


# ---- methods and bodies ------------------------------------------------------


def test_methods_on_one_keep_alive_connection(http_server):
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=5)
    try:
        seen = []
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            body = None if method == "GET" else f"{method.lower()} body"
            conn.request(method, "/echo?m=1", body=body)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("X-Method") == method
            assert resp.read().decode() == \
                f"{method} /echo?m=1|{body or ''}"
            seen.append(conn.sock)
        conn.request("HEAD", "/echo")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Length") == str(len("HEAD /echo?|"))
        assert resp.read() == b""
        seen.append(conn.sock)
        # Every request went over the same socket: keep-alive.
        assert all(s is seen[0] for s in seen)
    finally:
        conn.close()


def test_content_length_and_chunked_bodies(http_server):
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=5)
    try:
        conn.request("POST", "/echo", body=b"plain body",
                     headers={"Content-Type": "text/plain"})
        assert conn.getresponse().read() == b"POST /echo?|plain body"
        conn.request("POST", "/echo", body=iter([b"chunk one, ", b"two"]),
                     encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        assert conn.getresponse().read() == b"POST /echo?|chunk one, two"
    finally:
        conn.close()


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl(http_server):
    base = f"http://127.0.0.1:{http_server.port}"
    out = subprocess.run(
        [CURL, "-sS", "--max-time", "5", "-X", "PUT", "--data-binary",
         "from curl", f"{base}/echo?a=b"], capture_output=True, timeout=10)
    assert out.stdout == b"PUT /echo?a=b|from curl", out.stderr
    # Several URLs: curl reuses the connection.
    out = subprocess.run(
        [CURL, "-sS", "-v", "--max-time", "5", f"{base}/echo", f"{base}/x"],
        capture_output=True, timeout=10)
    assert out.stdout == b"GET /echo?|no /x"
    assert b"Re-using existing connection" in out.stderr or \
        b"Reusing existing" in out.stderr


def test_expect_100_continue(http_server):
    with RawClient(http_server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\n")
        interim = c.read_http_response(read_body=False)
        assert interim.status == 100
        c.send(b"hello")
        resp = c.read_http_response()
        assert resp.status == 200
        assert resp.body == b"POST /echo?|hello"


# ---- keep-alive, pipelining, closing -----------------------------------------


def test_pipelined_requests_are_answered_in_order(http_server):
    with RawClient(http_server.port) as c:
        c.send(b"GET /echo?n=1 HTTP/1.1\r\nHost: h\r\n\r\n"
               b"POST /echo?n=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
               b"\r\nabc"
               b"POST /echo?n=3 HTTP/1.1\r\nHost: h\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
               b"HEAD /echo?n=4 HTTP/1.1\r\nHost: h\r\n\r\n"
               b"GET /echo?n=5 HTTP/1.1\r\nHost: h\r\n\r\n")
        bodies = []
        for i in range(5):
            resp = c.read_http_response(read_body=False)
            if i != 3:
                c._read_body(resp, 5)
            bodies.append(resp.body)
        assert bodies == [b"GET /echo?n=1|", b"POST /echo?n=2|abc",
                          b"POST /echo?n=3|de", b"", b"GET /echo?n=5|"]
        # Still open for more.
        c.send(b"GET /echo?n=6 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_http_response().body == b"GET /echo?n=6|"


@pytest.mark.parametrize("request_bytes", [
    b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET /echo HTTP/1.0\r\n\r\n",
])
def test_close_after_the_response_when_asked(http_server, request_bytes):
    with RawClient(http_server.port) as c:
        c.send(request_bytes)
        resp = c.read_http_response()
        assert resp.status == 200
        assert resp.headers.get("connection") == "close"
        assert c.wait_eof(3.0)


def test_http_1_0_keep_alive(http_server):
    with RawClient(http_server.port) as c:
        for _ in range(2):
            c.send(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = c.read_http_response()
            assert resp.status == 200
            assert resp.headers.get("connection") == "keep-alive"


def test_idle_keep_alive_connection_is_closed(server):
    srv = server(HTTP_SCRIPT, args=["--keepalive-timeout", "1"])
    with RawClient(srv.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_http_response().status == 200
        start = time.monotonic()
        assert c.wait_eof(4.0)
        assert time.monotonic() - start >= 0.7
    assert stats_of(srv.port)["http_idle_closes"] >= 1


# ---- limits ------------------------------------------------------------------


def test_body_over_max_body_gets_413(server):
    srv = server(HTTP_SCRIPT, args=["--max-body", "100"])
    resp = http_request(srv.port, b"POST /echo HTTP/1.1\r\nHost: h\r\n"
                        b"Content-Length: 101\r\n\r\n")
    assert resp.status == 413
    assert resp.headers.get("connection") == "close"
    assert srv.wait_log(r"http refused 413: Content-Length larger than "
                        r"--max-body")
    chunked = (b"POST /echo HTTP/1.1\r\nHost: h\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + (b"40\r\n" + b"y" * 64 + b"\r\n") * 2)
    resp = http_request(srv.port, chunked)
    assert resp.status == 413
    assert srv.wait_log(r"http refused 413: request body larger than "
                        r"--max-body")
    # Exactly the limit is fine.
    resp = http_request(srv.port, b"POST /echo HTTP/1.1\r\nHost: h\r\n"
                        b"Content-Length: 100\r\n\r\n" + b"z" * 100)
    assert resp.status == 200
    assert stats_of(srv.port)["http_refused"] == 2


def test_oversized_head_gets_431(http_server):
    resp = http_request(http_server.port, b"GET /echo HTTP/1.1\r\nX-Big: "
                        + b"a" * 9000 + b"\r\n\r\n")
    assert resp.status == 431
    # And on a keep-alive connection after a good request.
    with RawClient(http_server.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_http_response().status == 200
        c.send(b"GET /echo HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert c.read_http_response().status == 431
        assert c.wait_eof(3.0)
    assert http_server.wait_log(r"http refused 431")


def test_slow_body_gets_408_after_the_request_timeout(server):
    srv = server(HTTP_SCRIPT, args=["--request-timeout", "1"])
    with RawClient(srv.port) as c:
        start = time.monotonic()
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
               b"\r\nabc")
        resp = c.read_http_response(timeout=5)
        assert resp.status == 408
        assert 0.7 <= time.monotonic() - start < 4
        assert c.wait_eof(3.0)
    assert srv.wait_log(r"http refused 408: request not complete within "
                        r"--request-timeout")


def test_slow_second_request_gets_408(server):
    srv = server(HTTP_SCRIPT, args=["--request-timeout", "1",
                                    "--keepalive-timeout", "30"])
    with RawClient(srv.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_http_response().status == 200
        c.send(b"GET /echo HTTP/1.1\r\nHo")
        assert c.read_http_response(timeout=5).status == 408


def test_slow_first_head_is_dropped_after_the_handshake_timeout(server):
    # Until its head is complete, a request could still be an upgrade: the
    # handshake timeout applies, as before, and the socket just closes.
    srv = server(HTTP_SCRIPT, args=["--handshake-timeout", "1"])
    with RawClient(srv.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHo")
        assert c.wait_eof(4.0)


# ---- handler errors and scripts without on_http ------------------------------


@pytest.mark.parametrize("path,logged", [
    ("/error", r"http\.lua: on_http \(conn \d+\): .*http\.lua:\d+: "
               r"deliberate failure"),
    ("/wrong", r"on_http \(.*http\.lua:\d+\) returned a wrong result: status "
               r"must be an integer from 200 to 599"),
])
def test_handler_error_is_500_logged_and_counted(http_server, path, logged):
    before = stats_of(http_server.port)
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 500
        assert resp.read() == b"internal error\n"
        # The connection carries on.
        conn.request("GET", "/echo")
        assert conn.getresponse().read() == b"GET /echo?|"
    finally:
        conn.close()
    assert http_server.wait_log(logged)
    after = stats_of(http_server.port)
    assert after["http_errors"] == before["http_errors"] + 1
    assert after["handler_errors"] == before["handler_errors"] + 1


def test_script_without_on_http_still_answers_404(cmd_server):
    resp = http_request(cmd_server.port,
                        b"POST /anything HTTP/1.1\r\nHost: h\r\n"
                        b"Content-Length: 3\r\n\r\nabc")
    assert resp.status == 404
    assert resp.body == b"not found\n"
    assert resp.headers.get("connection") == "close"


def test_websocket_upgrade_after_plain_requests(http_server):
    with RawClient(http_server.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.read_http_response().status == 200
        assert c.handshake(path="/?room=up").status == 101
        c.send_text("over the same socket")
        assert c.recv_text() == "over the same socket"


# ---- the publish API (scripts/chat.lua) --------------------------------------


@pytest.fixture
def chat_server(server, monkeypatch):
    monkeypatch.setenv("CHAT_PUBLISH_TOKEN", "t0ken-for-tests")
    return server(CHAT)


def post(port, path, body, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_publish_reaches_websocket_members(chat_server):
    port = chat_server.port

    async def scenario():
        async with ws_connect(f"ws://127.0.0.1:{port}/?room=news&name=ada") \
                as ada, \
                ws_connect(f"ws://127.0.0.1:{port}/?room=news&name=bob") \
                as bob, \
                ws_connect(f"ws://127.0.0.1:{port}/?room=other&name=cat") \
                as cat:
            assert await arecv(ada) == "* bob joined"
            out = subprocess.run(
                [CURL, "-sS", "--max-time", "5", "-H",
                 "Authorization: Bearer t0ken-for-tests", "--data-binary",
                 "deploy finished ✓",
                 f"http://127.0.0.1:{port}/rooms/news/messages"],
                capture_output=True, timeout=10)
            assert out.stdout == b'{"delivered":2}\n', out.stderr
            assert await arecv(ada) == "[api] deploy finished ✓"
            assert await arecv(bob) == "[api] deploy finished ✓"
            # Wrong and missing tokens deliver nothing: the next message
            # the members see is the one after them.
            status, body, resp = post(port, "/rooms/news/messages", "nope",
                                      token="wrong")
            assert status == 401
            assert resp.getheader("WWW-Authenticate") == 'Bearer realm="chat"'
            assert post(port, "/rooms/news/messages", "nope")[0] == 401
            assert post(port, "/rooms/news/messages", b"\xff\xfe",
                        token="t0ken-for-tests")[0] == 400
            status, body, _ = post(port, "/rooms/news/messages", "second",
                                   token="t0ken-for-tests")
            assert (status, body) == (202, b'{"delivered":2}\n')
            assert await arecv(ada) == "[api] second"
            assert await arecv(bob) == "[api] second"
            await cat.send("still here")
            assert await arecv(cat) == "cat: still here"
            # The room list.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/rooms")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Content-Type") == "application/json"
            import json
            assert json.loads(resp.read()) == {"rooms": [
                {"name": "news", "count": 2}, {"name": "other", "count": 1}]}
            conn.close()

    arun(scenario())


def test_publish_is_disabled_without_the_token(server, monkeypatch):
    monkeypatch.delenv("CHAT_PUBLISH_TOKEN", raising=False)
    srv = server(CHAT)
    status, body, _ = post(srv.port, "/rooms/news/messages", "x",
                           token="anything")
    assert status == 403
    assert b"CHAT_PUBLISH_TOKEN" in body


# ---- bad input never disturbs the WebSocket clients --------------------------


def test_bad_http_input_does_not_disturb_a_room(server):
    """Garbage, oversized heads and bodies and slow requests hit the port
    while a WebSocket room delivers a numbered sequence: none is lost, none
    is out of order, and every refusal is answered and logged."""
    srv = server(HTTP_SCRIPT, args=["--max-body", "1000", "--request-timeout",
                                    "1", "--handshake-timeout", "1"])
    port = srv.port
    sender = RawClient.connect(port, path="/?room=seq")
    receiver = RawClient.connect(port, path="/?room=seq")
    stop = threading.Event()
    statuses = []
    errors = []

    def attack(payload, expect):
        while not stop.is_set():
            try:
                c = RawClient(port, timeout=5)
                try:
                    c.send(payload)
                    if expect is None:
                        c.wait_eof(3.0)
                    else:
                        statuses.append(c.read_http_response(timeout=5).status)
                finally:
                    c.close()
            except (PeerClosed, ConnectionError, TimeoutError) as e:
                if expect is not None:
                    errors.append(f"{payload[:20]!r}: {e!r}")

    attacks = [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nX: " + b"h" * 9000 + b"\r\n\r\n", 431),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"400\r\n" + b"b" * 1024 + b"\r\n", 413),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nslow", 408),
        (b"GET /echo HTTP/1.1\r\nHo", None),  # head never completes
        (b"GET /echo HTTP/1.1\r\nContent-Length: zz\r\n\r\n", 400),
    ]
    threads = [threading.Thread(target=attack, args=a, daemon=True)
               for a in attacks]
    for t in threads:
        t.start()
    try:
        n = 400
        for i in range(n):
            sender.send_text(f"seq {i}")
            if i % 50 == 0:
                time.sleep(0.1)  # spread over the slow attacks' timeouts
        want = [f"seq {i}" for i in range(n)]
        assert [receiver.recv_text(timeout=10) for _ in range(n)] == want
        # The sender is in the room too.
        assert [sender.recv_text(timeout=10) for _ in range(n)] == want
        # The slow attacks had time to be refused at least once.
        wait_until(lambda: 408 in statuses, timeout=5,
                   what="a 408 for a slow request")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert {400, 408, 413, 431} <= set(statuses)
    # A first request that is refused before it is known not to be an
    # upgrade (a malformed or oversized head) is logged as the handshake's
    # refusal, as before; a refusal once it is plain HTTP as http's.
    log = srv.log()
    for pattern in (r"upgrade refused 400: invalid HTTP method",
                    r"upgrade refused 400: invalid character in "
                    r"content-length header",
                    r"upgrade refused 431: request head too large",
                    r"http refused 413: Content-Length larger than --max-body",
                    r"http refused 413: request body larger than --max-body",
                    r"http refused 408: request not complete within "
                    r"--request-timeout",
                    r"handshake timed out"):
        assert re.search(pattern, log), pattern
    # The room is still fine, both ways.
    receiver.send_text("after")
    assert sender.recv_text() == "after"
    sender.close()
    receiver.close()
