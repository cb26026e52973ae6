"""HTTP upgrade handling: 101 and every refusal status."""

import base64
import time

import pytest

from conftest import (OP_TEXT, PeerClosed, RawClient, accept_key, arecv,
                      arun, build_frame, http_request, new_key,
                      upgrade_request, ws_connect)


def assert_connection_closes(client, timeout=3.0):
    assert client.wait_eof(timeout), \
        "server kept the connection open after an error response"


def refused(port, req, status, timeout=5.0):
    c = RawClient(port)
    try:
        c.send(req)
        resp = c.read_http_response(timeout=timeout)
        assert resp.status == status, \
            f"expected {status}, got {resp.status} {resp.reason} {resp.body!r}"
        assert "sec-websocket-accept" not in resp.headers
        assert_connection_closes(c)
        return resp
    finally:
        c.close()


def test_rfc_example_key_gets_correct_accept(cmd_server):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    c = RawClient(cmd_server.port)
    resp = c.handshake(key=key)
    assert resp.status == 101
    assert resp.headers["sec-websocket-accept"] == \
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert resp.headers["upgrade"].lower() == "websocket"
    assert "upgrade" in resp.headers["connection"].lower()
    # No extension or subprotocol was asked for: none may be chosen.
    assert "sec-websocket-extensions" not in resp.headers
    assert c.cmd("hi") == "hi"
    c.close()


def test_random_keys_get_correct_accept(cmd_server):
    for _ in range(5):
        key = new_key()
        c = RawClient(cmd_server.port)
        resp = c.handshake(key=key)
        assert resp.status == 101
        assert resp.headers["sec-websocket-accept"] == accept_key(key)
        c.close()


def test_header_names_and_tokens_are_case_insensitive(cmd_server):
    key = new_key()
    req = (f"GET /chat HTTP/1.1\r\nhost: 127.0.0.1\r\n"
           f"UPGRADE: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n"
           f"sec-websocket-key: {key}\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n")
    c = RawClient(cmd_server.port)
    c.send(req.encode())
    resp = c.read_http_response(read_body=False)
    assert resp.status == 101, resp
    assert resp.headers["sec-websocket-accept"] == accept_key(key)
    assert c.cmd("ok?") == "ok?"
    c.close()


def test_connection_header_token_list(cmd_server):
    c = RawClient(cmd_server.port)
    resp = c.handshake(connection="keep-alive,Upgrade")
    assert resp.status == 101
    c.close()


def test_permessage_deflate_offer_is_declined(cmd_server):
    c = RawClient(cmd_server.port)
    resp = c.handshake(extra_headers=[
        ("Sec-WebSocket-Extensions",
         "permessage-deflate; client_max_window_bits")])
    assert resp.status == 101
    assert "sec-websocket-extensions" not in resp.headers, resp
    assert c.cmd("plain") == "plain"
    c.close()


@pytest.mark.parametrize("version", [None, "12", "8", "14", "13, 8", ""])
def test_bad_version_gets_426(cmd_server, version):
    req = upgrade_request(key=new_key(), version=version)
    resp = refused(cmd_server.port, req, 426)
    assert resp.headers.get("sec-websocket-version") == "13", resp


@pytest.mark.parametrize("key", [
    None,
    "",
    "abc",
    base64.b64encode(b"x" * 15).decode(),
    base64.b64encode(b"x" * 17).decode(),
    "!!!!!!!!!!!!!!!!!!!!!!==",
], ids=["missing", "empty", "short", "15-bytes", "17-bytes", "not-base64"])
def test_bad_key_gets_400(cmd_server, key):
    req = upgrade_request(key=key)
    refused(cmd_server.port, req, 400)


def test_missing_upgrade_header_gets_400(cmd_server):
    refused(cmd_server.port, upgrade_request(key=new_key(), upgrade=None), 400)


def test_wrong_upgrade_value_gets_400(cmd_server):
    refused(cmd_server.port,
            upgrade_request(key=new_key(), upgrade="h2c"), 400)


def test_missing_connection_header_gets_400(cmd_server):
    refused(cmd_server.port,
            upgrade_request(key=new_key(), connection=None), 400)


@pytest.mark.parametrize("value", ["keep-alive", "upgraded", "close"])
def test_connection_without_upgrade_token_gets_400(cmd_server, value):
    refused(cmd_server.port,
            upgrade_request(key=new_key(), connection=value), 400)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_non_get_upgrade_gets_405(cmd_server, method):
    req = upgrade_request(key=new_key(), method=method)
    refused(cmd_server.port, req, 405)


def test_plain_get_gets_404_promptly(cmd_server):
    t0 = time.monotonic()
    refused(cmd_server.port,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404,
            timeout=2.0)
    assert time.monotonic() - t0 < 2.0


def test_plain_get_other_path_gets_404(cmd_server):
    resp = http_request(cmd_server.port,
                        b"GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n"
                        b"Accept: */*\r\n\r\n")
    assert resp.status == 404


def test_error_response_is_well_formed(cmd_server):
    resp = refused(cmd_server.port,
                   upgrade_request(key=new_key(), version="7"), 426)
    assert "content-length" in resp.headers
    assert int(resp.headers["content-length"]) == len(resp.body)
    assert resp.headers.get("connection", "").lower() == "close"


def test_head_over_8192_bytes_gets_431(cmd_server):
    # A complete head of ~9 KB.
    req = upgrade_request(key=new_key(),
                          extra_headers=[("X-Filler", "a" * 9000)])
    assert len(req) > 8192
    refused(cmd_server.port, req, 431)


def test_unterminated_head_over_8192_bytes_gets_431(cmd_server):
    # 8300 bytes and still no blank line: the server must not wait for more.
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"b" * 8300
    refused(cmd_server.port, head, 431, timeout=3.0)


def test_head_just_under_limit_is_accepted(cmd_server):
    base = upgrade_request(key=new_key(), extra_headers=[("X-Filler", "")])
    filler = 8000 - len(base)
    key = new_key()
    c = RawClient(cmd_server.port)
    resp = c.handshake(key=key, extra_headers=[("X-Filler", "c" * filler)])
    assert resp.status == 101
    assert c.cmd("small") == "small"
    c.close()


def test_head_split_into_tiny_packets(cmd_server):
    key = new_key()
    req = upgrade_request(path="/split", key=key)
    c = RawClient(cmd_server.port)
    for i in range(0, len(req), 7):
        c.send(req[i:i + 7])
        # Pacing, not waiting for anything: a pause between the pieces lets
        # the server read them one by one rather than coalesced into one
        # read. Nothing on our side can observe its read boundaries.
        time.sleep(0.002)
    resp = c.read_http_response(read_body=False)
    assert resp.status == 101
    assert resp.headers["sec-websocket-accept"] == accept_key(key)
    assert c.cmd("after split") == "after split"
    c.close()


def test_frame_in_same_packet_as_head_is_processed(cmd_server):
    c = RawClient(cmd_server.port)
    frame = build_frame(OP_TEXT, b"early bird")
    resp = c.handshake(extra=frame)
    assert resp.status == 101
    assert c.recv_text() == "early bird"
    c.close()


def test_several_frames_in_same_packet_as_head(cmd_server):
    c = RawClient(cmd_server.port)
    extra = b"".join(build_frame(OP_TEXT, f"m{i}".encode())
                     for i in range(5))
    resp = c.handshake(extra=extra)
    assert resp.status == 101
    assert [c.recv_text() for _ in range(5)] == [f"m{i}" for i in range(5)]
    c.close()


def test_silent_client_dropped_after_handshake_timeout(server):
    srv = server(args=["--handshake-timeout", "1"])
    c = RawClient(srv.port)
    t0 = time.monotonic()
    assert c.wait_eof(4.0), "silent client not dropped within 4 s"
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed <= 4.0, elapsed
    c.close()
    # The server still works.
    c2 = RawClient.connect(srv.port)
    assert c2.cmd("still here") == "still here"
    c2.close()


def test_partial_head_dropped_after_handshake_timeout(server):
    srv = server(args=["--handshake-timeout", "1"])
    c = RawClient(srv.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    assert c.wait_eof(4.0), "half-sent head not dropped within 4 s"
    assert time.monotonic() - t0 >= 0.5
    c.close()


def test_handshake_timeout_does_not_affect_upgraded_connections(server):
    srv = server(args=["--handshake-timeout", "1", "--idle-timeout", "0",
                       "--ping-interval", "0"])
    c = RawClient.connect(srv.port)
    # A silent connection opened after c's must be dropped by the handshake
    # timeout (both are judged by the same periodic sweep), so once it has
    # been, c has outlived its own handshake deadline as an upgraded
    # connection.
    ref = RawClient(srv.port)
    try:
        assert ref.wait_eof(10.0), \
            "the silent reference connection was not dropped within 10 s"
    finally:
        ref.close()
    assert c.cmd("alive") == "alive"
    c.close()


def test_many_refused_handshakes_do_not_break_server(cmd_server):
    for i in range(30):
        try:
            http_request(cmd_server.port,
                         b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", timeout=2)
        except PeerClosed:
            pass
    c = RawClient.connect(cmd_server.port)
    assert c.cmd("fine") == "fine"
    c.close()


def test_python_websockets_client_interop(cmd_server):
    async def go():
        async with ws_connect(cmd_server.url + "/interop") as ws:
            await ws.send("text message")
            assert await arecv(ws) == "text message"
            await ws.send(b"\x00\x01\x02binary")
            assert await arecv(ws) == b"\x00\x01\x02binary"
    arun(go())
