"""JSON, the room directory, room state and clean text at the Lua boundary,
against the real binary running tests/integration/scripts/text.lua.

The strict client is Debian's python3-websockets: it fails the connection
with 1007 on the first text frame that is not UTF-8, so a strict client that
is still open and reads the next expected message proves that no invalid
text frame reached it."""

import json
import signal

from conftest import (SCRIPTS, RawClient, arecv, arun, free_port, ws_connect,
                      wait_until)

TEXT_SCRIPT = SCRIPTS / "text.lua"
COOKIE = "secret"

NOT_TEXT = ("bad argument #2 to 'broadcast' (text is not valid UTF-8; send "
            "bytes as binary)")


def line_of(marker):
    for i, line in enumerate(TEXT_SCRIPT.read_text().splitlines(), 1):
        if marker in line:
            return i
    raise AssertionError(f"{marker} not in {TEXT_SCRIPT}")


def call(client, **msg):
    """Sends one JSON request to text.lua over a RawClient; returns the
    decoded answer."""
    client.send_text(json.dumps(msg))
    return json.loads(client.recv_text())


def text_server(server, args=()):
    return server(script=TEXT_SCRIPT, args=args)


# -- ws.json --------------------------------------------------------------------

def test_json_round_trips_through_a_strict_client(server):
    srv = text_server(server)
    value = {"a": [1, 2.5, -3, True, False, None], "é😀": {"nested": ["x"]},
             "s": "line\nbreak \"quoted\" \\ / \u0000 \u2028"}

    async def go():
        async with ws_connect(srv.url) as ws:
            await ws.send(json.dumps({"op": "echo", "value": value}))
            got = await arecv(ws)
            assert isinstance(got, str)
            assert json.loads(got) == {"value": value}
    arun(go())


def test_json_bad_input_is_answered_and_the_connection_stays(server):
    srv = text_server(server)
    c = RawClient.connect(srv.port)
    cases = {
        "{": "Expected object key string but found T_END at character 2",
        '{"op":1e999}': "a number is too large for a double",
        "[" + "9" * 400 + "]": "a number is too large for a double",
        "NaN": "Expected value but found invalid token at character 1",
        "[" * 100000: "Found too many nested data structures (1001) at "
                      "character 1001",
        '"\\ud800"': "Expected value but found invalid unicode escape code "
                     "at character 2",
    }
    for text, why in cases.items():
        c.send_text(text)
        assert json.loads(c.recv_text()) == {"error": "json.decode: " + why}, \
            text[:40]
    assert call(c, op="echo", value=[1]) == {"value": [1]}
    stats = call(c, op="stats")["stats"]
    assert stats["handler_errors"] == 0
    c.close()


# -- ws.room_list ----------------------------------------------------------------

def test_room_list_counts_each_room_sorted(server):
    srv = text_server(server)
    clients = [RawClient.connect(srv.port, path=p) for p in (
        "/?room=beta", "/?room=alpha", "/?room=beta", "/?room=%C3%A9t%C3%A9",
        "/?room=Zed")]
    c = clients[0]
    assert call(c, op="list") == {"rooms": [
        {"name": "Zed", "count": 1}, {"name": "alpha", "count": 1},
        {"name": "beta", "count": 2}, {"name": "été", "count": 1}]}
    clients[1].close()
    assert call(c, op="leave", room="beta") == {"left": True}

    def listed():
        return call(c, op="list").get("rooms")
    wait_until(lambda: listed() == [
        {"name": "Zed", "count": 1}, {"name": "beta", "count": 1},
        {"name": "été", "count": 1}])
    for x in clients[2:]:
        x.close()
    wait_until(lambda: "rooms" not in call(c, op="list"))
    c.close()


# -- ws.room_state ---------------------------------------------------------------

def test_room_state_survives_sighup_and_goes_with_the_last_member(server,
                                                                   tmp_path):
    script = tmp_path / "text.lua"
    source = TEXT_SCRIPT.read_text()
    script.write_text(source)
    srv = server(script=script, args=("--no-reload",))
    a = RawClient.connect(srv.port, path="/?room=r")
    b = RawClient.connect(srv.port, path="/?room=r")
    assert call(a, op="get", room="nowhere", key="k") == {
        "value": None, "err": "empty room"}
    assert call(a, op="set", room="nowhere", key="k", value=1) == {
        "ok": False, "err": "empty room"}
    assert call(a, op="set", room="r", key="topic", value="lua") == {"ok": True}
    assert call(b, op="get", room="r", key="topic") == {"value": "lua",
                                                        "err": None}

    script.write_text(source.replace('local VERSION = "v1"',
                                     'local VERSION = "v2"'))
    srv.proc.send_signal(signal.SIGHUP)
    assert srv.wait_log(r"now running version 2 ")
    assert call(b, op="version") == {"version": "v2"}
    assert call(b, op="get", room="r", key="topic") == {"value": "lua",
                                                        "err": None}

    a.close()
    assert call(b, op="get", room="r", key="topic")["value"] == "lua"
    assert call(b, op="leave", room="r") == {"left": True}
    assert call(b, op="get", room="r", key="topic") == {
        "value": None, "err": "empty room"}
    assert call(b, op="join", room="r") == {"joined": True}
    assert call(b, op="get", room="r", key="topic") == {"value": None,
                                                        "err": None}
    b.close()


# -- clean text at the Lua boundary ----------------------------------------------

def test_bytes_a_script_sends_as_text_never_reach_strict_clients(server):
    """A script that tries to broadcast bytes as text gets an error instead
    of a frame every standards-following client would fail on (1007); the
    strict client stays, and the same bytes sent as binary reach it."""
    srv = text_server(server)

    async def go():
        async with ws_connect(f"{srv.url}/?room=r") as strict:
            raw = RawClient.connect(srv.port, path="/?room=r")
            raw.send_binary(b"\xff\xfe name")
            answer = json.loads(raw.recv_text())
            assert list(answer) == ["refused"]
            assert answer["refused"].endswith("text.lua:%d: %s" % (
                line_of("ws.broadcast(room, \"raw: \""), NOT_TEXT)), answer
            got = await arecv(strict)
            assert got == b"\xff\xfe name"
            assert raw.recv_binary() == b"\xff\xfe name"
            ctl = RawClient.connect(srv.port)
            assert call(ctl, op="say", room="r", text="still here") == {
                "sent": 2}
            got = await arecv(strict)
            assert json.loads(got)["text"] == "still here"
            assert strict.close_code is None
            stats = call(ctl, op="stats")["stats"]
            assert stats["lua_invalid_utf8"] == 1
            assert stats["invalid_utf8"] == 0
            assert stats["handler_errors"] == 0
            raw.close()
            ctl.close()
    arun(go())


def test_a_room_name_that_is_not_utf8_refuses_the_upgrade(server):
    """text.lua joins ?room as given: ws.join raises, so on_connect fails
    and the upgrade is refused with 500; nobody hears of it."""
    srv = text_server(server)

    async def go():
        async with ws_connect(f"{srv.url}/?room=r") as strict:
            bad = RawClient(srv.port)
            resp = bad.handshake(path="/?room=%FF%FE")
            assert resp.status == 500, resp
            bad.close()
            assert srv.wait_log(r"room name is not valid UTF-8")
            raw = RawClient.connect(srv.port, path="/?room=r")
            assert call(raw, op="list") == {"rooms": [{"name": "r",
                                                       "count": 2}]}
            raw.send_text(json.dumps({"op": "say", "room": "r",
                                      "text": "ok"}))
            assert json.loads(await arecv(strict))["text"] == "ok"
            raw.close()
    arun(go())


def test_cluster_link_survives_a_script_naming_a_non_utf8_room(server):
    """Before the check, ws.join took any bytes as a room name, the node
    announced its interest in the room to its peers, and every peer dropped
    the link on that frame (bad UTF-8). Now the join raises where the script
    made it, the upgrade is refused with 500, and the link carries on."""
    ca, cb = free_port(), free_port()
    a = text_server(server, ("--node", "a", "--cookie", COOKIE,
                             "--cluster-listen", f"127.0.0.1:{ca}"))
    b = text_server(server, ("--node", "b", "--cookie", COOKIE,
                             "--cluster-listen", f"127.0.0.1:{cb}",
                             "--peer", f"127.0.0.1:{ca}"))
    ctl_a = RawClient.connect(a.port)
    ctl_b = RawClient.connect(b.port)
    wait_until(lambda: call(ctl_a, op="peers").get("peers") == ["b"],
               timeout=10)
    wait_until(lambda: call(ctl_b, op="peers").get("peers") == ["a"],
               timeout=10)

    bad = RawClient(a.port)
    assert bad.handshake(path="/?room=%FF").status == 500
    bad.close()

    # A fence: a broadcast from a that reaches b's member travelled the
    # link after anything a announced before it.
    sub = RawClient.connect(b.port, path="/?room=r")
    speaker = RawClient.connect(a.port)

    def delivered():
        assert call(speaker, op="say", room="r", text="across") == {"sent": 0}
        try:
            return json.loads(sub.recv_text(timeout=0.3))["text"] == "across"
        except TimeoutError:
            return False
    wait_until(delivered, timeout=10)

    stats_a = call(ctl_a, op="stats")["stats"]
    stats_b = call(ctl_b, op="stats")["stats"]
    assert stats_b["cluster_frames_malformed"] == 0
    assert stats_a["cluster_frames_malformed"] == 0
    assert stats_a["cluster_links_dropped"] == 0
    assert stats_b["cluster_links_dropped"] == 0
    assert stats_a["handler_errors"] == 1
    assert stats_a["lua_invalid_utf8"] == 1
    for c in (sub, speaker, ctl_a, ctl_b):
        c.close()
