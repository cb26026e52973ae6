"""Handshake control from on_connect: the offered subprotocols
(req.protocols), the one on_connect selects, headers it adds to the 101 and
to a refusal, and the results it may not return (each a handler error, 500).

The independent client is Python's websockets, which checks the selected
subprotocol itself; RawClient shows the exact bytes."""

import pytest

from conftest import (OP_TEXT, SCRIPTS, RawClient, arecv, arun, ws_connect)

SCRIPT = SCRIPTS / "protocols.lua"


@pytest.fixture
def proto_server(server):
    return server(script=SCRIPT)


def test_websockets_client_negotiates_a_subprotocol(proto_server):
    async def go():
        async with ws_connect(proto_server.url + "/last",
                              subprotocols=["chat", "graphql-ws"]) as ws:
            assert ws.subprotocol == "graphql-ws"
            assert ws.response_headers["X-Server"] == "moonroom"
            assert ws.response_headers.get_all("Set-Cookie") == \
                ["a=1; HttpOnly", "b=2"]
            # What on_connect sent follows the 101.
            assert await arecv(ws) == "hello graphql-ws"
            await ws.send("protocols")
            assert await arecv(ws) == "chat,graphql-ws"
            await ws.send("echo")
            assert await arecv(ws) == "echo"
    arun(go())


def test_websockets_client_offering_subprotocols_gets_none(proto_server):
    async def go():
        async with ws_connect(proto_server.url + "/none",
                              subprotocols=["chat"]) as ws:
            assert ws.subprotocol is None
            assert await arecv(ws) == "hello nil"
    arun(go())


def test_websockets_client_sees_the_refusal_and_its_headers(proto_server):
    from websockets.exceptions import InvalidStatusCode

    async def go():
        with pytest.raises(InvalidStatusCode) as e:
            async with ws_connect(proto_server.url + "/refuse",
                                  subprotocols=["chat"]):
                pass
        assert e.value.status_code == 401
        assert e.value.headers["WWW-Authenticate"] == "Bearer"
    arun(go())


def test_exact_101_and_frames_after_it(proto_server):
    c = RawClient(proto_server.port)
    resp = c.handshake(path="/pick?p=superchat", extra_headers=[
        ("Sec-WebSocket-Protocol", "chat"),
        ("X-Other", "1"),
        ("sec-websocket-protocol", " superchat ,, v2.chat")])
    assert resp.status == 101, resp
    assert resp.headers["sec-websocket-protocol"] == "superchat"
    lines = resp.raw.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    assert lines[4:] == ["Sec-WebSocket-Protocol: superchat",
                         "Set-Cookie: a=1; HttpOnly", "Set-Cookie: b=2",
                         "X-Server: moonroom"]
    f = c.recv_frame()
    assert (f.opcode, f.payload) == (OP_TEXT, b"hello superchat")
    assert c.cmd("protocols") == "chat,superchat,v2.chat"
    c.close()


def test_refusal_carries_its_headers(proto_server):
    c = RawClient(proto_server.port)
    resp = c.handshake(path="/refuse")
    assert resp.status == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert resp.body == b"token required\n"
    assert "sec-websocket-accept" not in resp.headers
    assert c.wait_eof(3.0)
    c.close()


def expect_handler_error(srv, path, logged, extra_headers=()):
    c = RawClient(srv.port)
    resp = c.handshake(path=path, extra_headers=extra_headers)
    assert resp.status == 500, resp
    assert resp.body == b"internal error\n"
    assert "set-cookie" not in resp.headers and "x-evil" not in resp.headers
    c.close()
    assert srv.wait_log(logged), srv.log()


def test_wrong_results_are_handler_errors(proto_server):
    srv = proto_server
    expect_handler_error(
        srv, "/pick?p=graphql-ws",
        r"protocols\.lua: on_connect \(conn \d+\): on_connect "
        r"\(.*protocols\.lua:\d+\) returned a wrong result: selected "
        r"protocol 'graphql-ws', which the client did not offer "
        r"\(it offered 'chat', 'v2'\)",
        extra_headers=[("Sec-WebSocket-Protocol", "chat, v2")])
    expect_handler_error(srv, "/pick?p=chat",
                         r"'chat', which the client did not offer "
                         r"\(it offered none\)")
    expect_handler_error(srv, "/inject",
                         r"response header 'X-Evil' is not allowed: the "
                         r"value contains CR or LF")
    expect_handler_error(srv, "/status?s=302",
                         r"refusal status must be an integer from 400 to "
                         r"599, got 302")
    expect_handler_error(srv, "/status?s=abc",
                         r"refusal status must be an integer from 400 to "
                         r"599, got 'abc'")
    # The server serves on.
    c = RawClient.connect(srv.port, path="/none")
    assert c.recv_frame().payload == b"hello nil"
    assert c.cmd("still here") == "still here"
    c.close()
