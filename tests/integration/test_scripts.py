"""The example scripts shipped in scripts/: echo.lua and chat.lua."""

import asyncio

import pytest

from conftest import (OP_BINARY, OP_CONT, OP_TEXT, REPO_ROOT, RawClient,
                      arecv, arun, ws_connect)

ECHO = REPO_ROOT / "scripts" / "echo.lua"
CHAT = REPO_ROOT / "scripts" / "chat.lua"


def shipped(path):
    """The path of a shipped example script. A missing one fails the test:
    these scripts are part of the product, and a test that skips when its
    subject is gone can never fail."""
    if not path.exists():
        pytest.fail(f"{path.relative_to(REPO_ROOT)} does not exist",
                    pytrace=False)
    return path


@pytest.fixture
def echo_server(server):
    return server(script=shipped(ECHO))


@pytest.fixture
def chat_server(server):
    return server(script=shipped(CHAT))


# -- echo.lua -------------------------------------------------------------------

def test_echo_text_and_binary(echo_server):
    async def go():
        async with ws_connect(echo_server.url) as ws:
            await ws.send("hello")
            got = await arecv(ws)
            assert got == "hello" and isinstance(got, str)
            await ws.send(b"\x00\xffbin")
            got = await arecv(ws)
            assert got == b"\x00\xffbin" and isinstance(got, bytes)
            await ws.send("ünïcödé ✓")
            assert await arecv(ws) == "ünïcödé ✓"
    arun(go())


def test_echo_large_and_many(echo_server):
    async def go():
        async with ws_connect(echo_server.url) as ws:
            big = bytes(range(256)) * 2048  # 512 KiB
            await ws.send(big)
            assert await arecv(ws, timeout=10) == big
            for i in range(100):
                await ws.send(f"m{i}")
            for i in range(100):
                assert await arecv(ws) == f"m{i}"
    arun(go())


def test_echo_fragmented_raw(echo_server):
    c = RawClient.connect(echo_server.port)
    c.send_frame(OP_BINARY, b"ab", fin=False)
    c.send_frame(OP_CONT, b"cd", fin=True)
    assert c.recv_binary() == b"abcd"
    c.send_frame(OP_TEXT, b"fr", fin=False)
    c.send_frame(OP_CONT, b"ag", fin=True)
    assert c.recv_text() == "frag"
    c.close()


def test_echo_many_concurrent_clients(echo_server):
    async def one(i):
        async with ws_connect(echo_server.url) as ws:
            for j in range(20):
                await ws.send(f"{i}-{j}")
                assert await arecv(ws) == f"{i}-{j}"

    async def go():
        await asyncio.gather(*(one(i) for i in range(20)))
    arun(go(), timeout=30)


# -- chat.lua -------------------------------------------------------------------
#
# chat.lua: ?room=ROOM (default "lobby") &name=NAME. A text message goes to the
# whole room, sender included, as "NAME: TEXT". Joins, leaves and renames are
# announced as "* NAME joined" (not to the joiner), "* NAME left",
# "* OLD is now NEW". Commands: /join ROOM, /nick NAME, /who, /rooms.


async def quiet(ws, wait=0.3):
    """Asserts nothing arrives within `wait` seconds."""
    try:
        msg = await asyncio.wait_for(ws.recv(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {msg!r}")


def test_chat_room_broadcast_includes_sender(chat_server):
    url = chat_server.url

    async def go():
        async with ws_connect(f"{url}/?room=r1&name=alice") as alice:
            async with ws_connect(f"{url}/?room=r1&name=bob") as bob, \
                    ws_connect(f"{url}/?room=r2&name=carol") as carol:
                assert await arecv(alice) == "* bob joined"
                await alice.send("hi all")
                assert await arecv(alice) == "alice: hi all"
                assert await arecv(bob) == "alice: hi all"
                await bob.send("hey")
                assert await arecv(alice) == "bob: hey"
                assert await arecv(bob) == "bob: hey"
                await carol.send("anyone?")
                assert await arecv(carol) == "carol: anyone?"
                await quiet(alice)
                await quiet(bob)
            # bob and carol are gone: alice hears that bob left, not carol.
            assert await arecv(alice) == "* bob left"
            await quiet(alice)
    arun(go())


def test_chat_default_room_is_lobby(chat_server):
    url = chat_server.url

    async def go():
        async with ws_connect(f"{url}/?name=dora") as dora, \
                ws_connect(f"{url}/?room=lobby&name=eve") as eve:
            assert await arecv(dora) == "* eve joined"
            await dora.send("in the lobby")
            assert await arecv(eve) == "dora: in the lobby"
            assert await arecv(dora) == "dora: in the lobby"
    arun(go())


def test_chat_commands(chat_server):
    url = chat_server.url

    async def go():
        async with ws_connect(f"{url}/?room=hall&name=ann") as ann, \
                ws_connect(f"{url}/?room=hall&name=ben") as ben:
            assert await arecv(ann) == "* ben joined"
            await ann.send("/who")
            assert await arecv(ann) == "* here: ann, ben"
            await ann.send("/rooms")
            assert await arecv(ann) == "* rooms: hall"
            await ann.send("/nick annie")
            assert await arecv(ann) == "* ann is now annie"
            assert await arecv(ben) == "* ann is now annie"
            await ann.send("renamed")
            assert await arecv(ben) == "annie: renamed"
            assert await arecv(ann) == "annie: renamed"
            await ann.send("/join kitchen")
            assert await arecv(ben) == "* annie left"
            assert await arecv(ann) == "* you are in kitchen"
            await ann.send("/rooms")
            assert await arecv(ann) == "* rooms: kitchen"
            await ben.send("alone?")
            assert await arecv(ben) == "ben: alone?"
            await quiet(ann)
            await ann.send("/frobnicate")
            assert (await arecv(ann)).startswith("! ")
            await ann.send(b"\x00binary")
            assert (await arecv(ann)).startswith("! ")
    arun(go())


def test_chat_refuses_bad_room(chat_server):
    c = RawClient(chat_server.port)
    resp = c.handshake(path="/?room=has%20space&name=x")
    assert resp.status == 400, resp
    c.close()


def test_chat_invalid_utf8_name_or_room_leaves_strict_clients_connected(
        chat_server):
    """?name=%FF once made chat.lua announce "* \\xff joined" as a text
    frame, and every standards-following client in the room failed the
    connection with 1007. Now the upgrade is refused with 400 and a body
    that says why; strict clients (python3-websockets, which closes with
    1007 on the first invalid text frame) stay connected, and the next
    thing they hear is the next real event."""
    url = chat_server.url

    async def go():
        async with ws_connect(f"{url}/?room=r&name=alice") as alice, \
                ws_connect(f"{url}/?room=r&name=bob") as bob:
            assert await arecv(alice) == "* bob joined"
            for query, body in (("room=r&name=%FF", b"name must be valid UTF-8"),
                                ("room=r&name=x%C3", b"name must be valid UTF-8"),
                                ("room=r&name=%ED%A0%80", b"name must be valid UTF-8"),
                                ("room=%FF&name=eve", b"room must be valid UTF-8")):
                c = RawClient(chat_server.port)
                resp = c.handshake(path=f"/?{query}")
                assert resp.status == 400, (query, resp)
                assert resp.body.strip() == body, (query, resp.body)
                c.close()
            async with ws_connect(f"{url}/?room=r&name=carol"):
                assert await arecv(alice) == "* carol joined"
                assert await arecv(bob) == "* carol joined"
            assert await arecv(alice) == "* carol left"
            assert await arecv(bob) == "* carol left"
            await alice.send("still here")
            assert await arecv(bob) == "alice: still here"
            assert await arecv(alice) == "alice: still here"
            assert alice.close_code is None and bob.close_code is None
    arun(go())
