"""scripts/lobby.lua against the real binary, driven by Python `websockets`
(a strict, independent client): the token check with its 401 and
WWW-Authenticate header, rooms and presence in JSON, a countdown run by
timers when everyone is ready, and its cancellation when a player drops.
On two linked nodes: one roster, one room limit and exactly one countdown
for players on both, and a cancellation that crosses the link.

LOBBY_TICK_MS shortens the countdown's tick to 100 ms, so a whole countdown
takes 0.3 s of real time; every wait is bounded.
"""

import asyncio
import json
import time

import pytest

from conftest import REPO_ROOT, arecv, arun, ws_connect

LOBBY = REPO_ROOT / "scripts" / "lobby.lua"
TOKEN = "integration-secret"
TICK = 0.1


@pytest.fixture
def lobby(server, monkeypatch):
    monkeypatch.setenv("LOBBY_TOKEN", TOKEN)
    monkeypatch.setenv("LOBBY_TICK_MS", str(int(TICK * 1000)))
    return server(script=LOBBY)


def url(srv, name, token=TOKEN):
    return f"{srv.url}/?token={token}&name={name}"


async def recv_json(ws, timeout=5.0):
    return json.loads(await arecv(ws, timeout))


async def recv_until(ws, kind, timeout=5.0):
    """Reads messages until one of type `kind` arrives; returns it and the
    types read before it."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg, seen
        seen.append(msg["type"])


async def send(ws, **msg):
    await ws.send(json.dumps(msg))


def test_wrong_token_is_401_with_www_authenticate(lobby):
    from websockets.exceptions import InvalidStatusCode

    async def go():
        with pytest.raises(InvalidStatusCode) as e:
            async with ws_connect(url(lobby, "ada", token="wrong")):
                pass
        assert e.value.status_code == 401
        assert "Bearer" in e.value.headers["WWW-Authenticate"]
    arun(go())


def test_countdown_runs_when_everyone_is_ready(lobby):
    async def go():
        async with ws_connect(url(lobby, "ada")) as ada, \
                ws_connect(url(lobby, "bob")) as bob:
            w = await recv_json(ada)
            assert w["type"] == "welcome" and w["name"] == "ada"
            await recv_json(bob)
            # One join at a time: the two connections' frames may be read in
            # either order, and ada sees bob's join only if hers came first.
            await send(ada, type="join", room="r1")
            p, _ = await recv_until(ada, "presence")
            assert [x["name"] for x in p["players"]] == ["ada"]
            await send(bob, type="join", room="r1")
            p, _ = await recv_until(ada, "presence")
            assert [x["name"] for x in p["players"]] == ["ada", "bob"]

            await send(bob, type="rooms")
            rooms, _ = await recv_until(bob, "rooms")
            assert rooms["rooms"] == [{"name": "r1", "count": 2}]

            await send(ada, type="ready", ready=True)
            await send(bob, type="ready", ready=True)
            first, _ = await recv_until(ada, "countdown")
            assert first["seconds"] == 3
            started = time.monotonic()
            ticks = []
            while True:
                m = await recv_json(ada)
                ticks.append((m["type"], m.get("seconds"),
                              time.monotonic() - started))
                if m["type"] == "start":
                    break
            assert [t[:2] for t in ticks] == [("countdown", 2),
                                               ("countdown", 1),
                                               ("start", None)]
            # Timers never fire early: each tick is at least one tick after
            # the countdown began (a little slack for the client's clock).
            for i, (_, _, at) in enumerate(ticks):
                assert at >= (i + 1) * TICK - 0.02, ticks
            # The other player saw the same countdown.
            start, seen = await recv_until(bob, "start")
            assert seen[-3:] == ["countdown", "countdown", "countdown"]
            assert all(not p["ready"] for p in start["players"])
    arun(go())


def test_countdown_is_cancelled_when_a_player_drops(lobby):
    async def go():
        ada = await ws_connect(url(lobby, "ada"))
        bob = await ws_connect(url(lobby, "bob"))
        try:
            for ws in (ada, bob):
                await recv_json(ws)
                await send(ws, type="join", room="r1")
            for ws in (ada, bob):
                await send(ws, type="ready", ready=True)
            await recv_until(ada, "countdown")
            # bob's connection just ends (no close handshake).
            bob.transport.abort()
            cancelled, _ = await recv_until(ada, "cancelled")
            assert cancelled["reason"] == "bob left"
            left, _ = await recv_until(ada, "presence")
            assert left["event"] == "leave"
            # No countdown message follows, for three ticks and more.
            with pytest.raises(asyncio.TimeoutError):
                await recv_json(ada, timeout=4 * TICK)
        finally:
            await ada.close()
    arun(go())


def test_bad_json_gets_an_error_and_the_connection_stays(lobby):
    async def go():
        async with ws_connect(url(lobby, "ada")) as ada:
            await recv_json(ada)
            await ada.send("{oops")
            err = await recv_json(ada)
            assert err["type"] == "error"
            await send(ada, type="say", text="hi")
            err = await recv_json(ada)
            assert err == {"type": "error", "error": "join a room first"}
    arun(go())


# --------------------------------------------------------------------------
# Two linked nodes: one roster, one countdown, one room limit
# --------------------------------------------------------------------------

CLUSTER_TICK = 0.3


@pytest.fixture
def lobby2(server, monkeypatch):
    """Two lobby nodes, a and b (b dials a), linked; a room holds 2."""
    from conftest import free_port
    from test_cluster import COOKIE, MESH_TIMEOUT
    monkeypatch.setenv("LOBBY_TOKEN", TOKEN)
    monkeypatch.setenv("LOBBY_TICK_MS", str(int(CLUSTER_TICK * 1000)))
    monkeypatch.setenv("LOBBY_MAX_PLAYERS", "2")
    ca, cb = free_port(), free_port()
    while cb == ca:
        cb = free_port()
    a = server(script=LOBBY, args=["--cluster-listen", f"127.0.0.1:{ca}",
                                   "--node", "a", "--cookie", COOKIE])
    b = server(script=LOBBY, args=["--cluster-listen", f"127.0.0.1:{cb}",
                                   "--node", "b", "--cookie", COOKIE,
                                   "--peer", f"127.0.0.1:{ca}"])
    for srv, other in ((a, "b"), (b, "a")):
        assert srv.wait_log(rf"cluster: link (to|from) node {other} .*up",
                            MESH_TIMEOUT), srv.log()
    return a, b


async def await_roster(ws, names, timeout=5.0):
    """Reads presence messages until one's roster is exactly `names`;
    returns the types of the other messages read on the way."""
    deadline = time.monotonic() + timeout
    other = []
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if msg["type"] != "presence":
            other.append(msg["type"])
        elif [p["name"] for p in msg["players"]] == names:
            return other


async def countdown_of(ws):
    """Reads until "start"; returns the countdown seconds seen, in order,
    and the start message. Presence messages on the way are skipped."""
    seconds = []
    while True:
        msg = await recv_json(ws)
        if msg["type"] == "countdown":
            seconds.append(msg["seconds"])
        elif msg["type"] == "start":
            return seconds, msg
        else:
            assert msg["type"] == "presence", msg


def test_two_nodes_share_one_roster_limit_and_countdown(lobby2):
    a, b = lobby2

    async def go():
        async with ws_connect(url(a, "ada")) as ada, \
                ws_connect(url(b, "bob")) as bob:
            await recv_json(ada)
            await recv_json(bob)
            await send(ada, type="join", room="r1")
            await await_roster(ada, ["ada"])
            await send(bob, type="join", room="r1")
            # Each sees both, whichever node it is on.
            await await_roster(ada, ["ada", "bob"])
            await await_roster(bob, ["ada", "bob"])

            # The room holds 2 on both nodes together.
            async with ws_connect(url(b, "cat")) as cat:
                await recv_json(cat)
                await send(cat, type="join", room="r1")
                err, _ = await recv_until(cat, "error")
                assert err["error"] == "room r1 is full (2 players)"
                await send(cat, type="rooms")
                rooms, _ = await recv_until(cat, "rooms")
                assert rooms["rooms"] == [{"name": "r1", "count": 2}]

            # Ready on both nodes: one countdown, each message once.
            await send(ada, type="ready", ready=True)
            await send(bob, type="ready", ready=True)
            for ws in (ada, bob):
                seconds, start = await countdown_of(ws)
                assert seconds == [3, 2, 1]
                assert [p["ready"] for p in start["players"]] == [False, False]
            # Nothing follows: no second countdown from the other node, and
            # every node's catch-up to the next round shows nothing.
            async def silent(ws):
                with pytest.raises(asyncio.TimeoutError):
                    await recv_json(ws, timeout=3 * CLUSTER_TICK)
            await asyncio.gather(silent(ada), silent(bob))
    arun(go())


def test_leader_dropping_cancels_the_countdown_on_the_other_node(lobby2):
    a, b = lobby2

    async def go():
        ada = await ws_connect(url(a, "ada"))
        bob = await ws_connect(url(b, "bob"))
        try:
            for ws in (ada, bob):
                await recv_json(ws)
                await send(ws, type="join", room="r1")
            await await_roster(ada, ["ada", "bob"])
            await await_roster(bob, ["ada", "bob"])
            for ws in (ada, bob):
                await send(ws, type="ready", ready=True)
            # Node a leads (the smaller name); bob on node b hears its tick.
            first, _ = await recv_until(bob, "countdown")
            assert first["seconds"] == 3
            # ada's connection just ends: node a cancels for node b's bob.
            ada.transport.abort()
            cancelled, seen = await recv_until(bob, "cancelled")
            assert cancelled["reason"] == "ada left"
            assert "start" not in seen
            # Presence is batched and the countdown is a broadcast, so the
            # presence of ada's own ready may still come first (README: "what
            # a player may see"); the leave follows.
            while True:
                left, _ = await recv_until(bob, "presence")
                if left["event"] != "ready":
                    break
            assert left["event"] == "leave"
            assert [p["name"] for p in left["players"]] == ["bob"]
            with pytest.raises(asyncio.TimeoutError):
                await recv_json(bob, timeout=4 * CLUSTER_TICK)
        finally:
            await bob.close()
    arun(go())
