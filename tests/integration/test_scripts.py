"""The example scripts shipped in scripts/: echo.lua and chat.lua."""

import asyncio

import pytest

from conftest import (OP_BINARY, OP_CONT, OP_TEXT, REPO_ROOT, RawClient,
                      arecv, arun, ws_connect)

ECHO = REPO_ROOT / "scripts" / "echo.lua"
CHAT = REPO_ROOT / "scripts" / "chat.lua"


def need(path):
    if not path.exists():
        pytest.skip(f"{path.relative_to(REPO_ROOT)} does not exist yet")
    return path


@pytest.fixture
def echo_server(server):
    return server(script=need(ECHO))


@pytest.fixture
def chat_server(server):
    return server(script=need(CHAT))


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

def chat_line(name, text):
    return f"{name}: {text}"


def test_chat_room_broadcast_includes_sender(chat_server):
    url = chat_server.url

    async def go():
        async with ws_connect(f"{url}/?room=r1&name=alice") as alice, \
                ws_connect(f"{url}/?room=r1&name=bob") as bob, \
                ws_connect(f"{url}/?room=r2&name=carol") as carol:
            await alice.send("hi all")
            assert await arecv(alice) == chat_line("alice", "hi all")
            assert await arecv(bob) == chat_line("alice", "hi all")
            await bob.send("hey")
            assert await arecv(alice) == chat_line("bob", "hey")
            assert await arecv(bob) == chat_line("bob", "hey")
            await carol.send("anyone?")
            assert await arecv(carol) == chat_line("carol", "anyone?")
            with pytest.raises(asyncio.TimeoutError):
                await arecv(alice, timeout=0.3)
            with pytest.raises(asyncio.TimeoutError):
                await arecv(bob, timeout=0.3)
    arun(go())


def test_chat_default_room_is_lobby(chat_server):
    url = chat_server.url

    async def go():
        async with ws_connect(f"{url}/?name=dora") as dora, \
                ws_connect(f"{url}/?room=lobby&name=eve") as eve:
            await dora.send("in the lobby")
            assert await arecv(eve) == chat_line("dora", "in the lobby")
            assert await arecv(dora) == chat_line("dora", "in the lobby")
    arun(go())
