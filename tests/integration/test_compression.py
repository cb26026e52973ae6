"""permessage-deflate (RFC 7692): negotiation with Python `websockets` (every
parameter combination its client can offer) and with a raw client, every
size class round-tripped, fragmented compressed messages, a ping between
their fragments, broadcasts to a mixed room, and each refusal: RSV1 without
negotiation (1002), corrupt data (1007), a bomb over --max-message (1009).
"""

import asyncio
import itertools
import os
import zlib

import pytest
import websockets
from websockets.extensions.permessage_deflate import \
    ClientPerMessageDeflateFactory

from conftest import (OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1,
                      RawClient, build_frame, expect_fail, run_bin, stats,
                      CMD_SCRIPT, free_port)

ON = ("--compression", "on")
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"
ANSWER = ("permessage-deflate; server_no_context_takeover; "
          "client_no_context_takeover")


def deflate(data, bits=15, finish=False):
    """What a client sends: raw deflate, sync flush, the tail stripped."""
    z = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = z.compress(data) + z.flush(zlib.Z_FINISH if finish
                                      else zlib.Z_SYNC_FLUSH)
    if not finish:
        assert out.endswith(b"\x00\x00\xff\xff")
        out = out[:-4]
    return out


def inflate(payload, bits=15):
    """What a client does with a server's compressed message."""
    return zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff")


def chat(n):
    """n bytes of chat-like JSON text."""
    unit = '{"type":"message","room":"lobby","from":"ada","text":"hello"}'
    return (unit * (n // len(unit) + 1))[:n]


def raw(srv, offer=BROWSER_OFFER):
    headers = [("Sec-WebSocket-Extensions", offer)] if offer else []
    return RawClient.connect(srv.port, extra_headers=headers)


def recv_data(c, timeout=5.0):
    """One data message as (rsv of its first frame, opcode, payload)."""
    first, parts = None, []
    while True:
        f = c.recv_frame(timeout)
        if f.opcode in (OP_PING, OP_PONG):
            continue
        if first is None:
            first = f
        parts.append(f.payload)
        if f.fin:
            return first.rsv, first.opcode, b"".join(parts)


def recv_plain(c, timeout=5.0):
    """Reads a message, inflating it when it came compressed."""
    rsv, op, payload = recv_data(c, timeout)
    return op, inflate(payload) if rsv & RSV1 else payload


# -- negotiation ------------------------------------------------------------

@pytest.mark.parametrize("offer, answer", [
    (BROWSER_OFFER, ANSWER),
    ("permessage-deflate", ANSWER),
    ("permessage-deflate; server_max_window_bits=12; client_max_window_bits",
     ANSWER + "; server_max_window_bits=12"),
    ("x-unknown, permessage-deflate; foo, permessage-deflate; "
     "server_max_window_bits=\"10\"", ANSWER + "; server_max_window_bits=10"),
])
def test_raw_offers_are_answered(server, offer, answer):
    srv = server(args=ON)
    with raw(srv, offer) as c:
        assert c.response.headers["sec-websocket-extensions"] == answer
        assert c.cmd("still plain below the threshold") == \
            "still plain below the threshold"


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; client_no_context_takeover; "
    "client_no_context_takeover",
    "permessage-deflate; unknown_param",
    "permessage-deflate; server_max_window_bits",
    "x-webkit-deflate-frame",
])
def test_offers_that_cannot_be_honoured_are_declined(server, offer):
    srv = server(args=ON)
    with raw(srv, offer) as c:
        assert "sec-websocket-extensions" not in c.response.headers
        # RSV1 is then a protocol error.
        c.send_frame(OP_TEXT, deflate(b"hello"), rsv=RSV1)
        expect_fail(c, 1002)
    if offer.startswith("permessage-deflate"):
        srv.wait_log(r"permessage-deflate offer declined")


def test_compression_off_answers_no_extension(server):
    srv = server()  # the default is off
    with raw(srv) as c:
        assert "sec-websocket-extensions" not in c.response.headers
        c.send_frame(OP_TEXT, b"x" * 300)
        rsv, op, payload = recv_data(c)
        assert (rsv, payload) == (0, b"x" * 300)
    srv2 = server(args=("--compression", "off"))
    with raw(srv2) as c:
        assert "sec-websocket-extensions" not in c.response.headers


def test_rsv1_without_negotiation_is_1002(server):
    srv = server(args=ON)
    with raw(srv, offer=None) as c:
        c.send_frame(OP_TEXT, deflate(b"hello"), rsv=RSV1)
        expect_fail(c, 1002)


@pytest.mark.parametrize("args", [
    ["--compression", "yes"],
    ["--compression", ""],
    ["--compression-level", "0"],
    ["--compression-level", "10"],
    ["--compression-window", "8"],
    ["--compression-window", "16"],
    ["--compression-threshold", "-1"],
    ["--compression-threshold", "big"],
], ids=lambda a: " ".join(a))
def test_bad_compression_options_exit_2(args):
    r = run_bin(["--listen", f"127.0.0.1:{free_port()}", *args, CMD_SCRIPT])
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        f"moonroom: {args[0]}: expected"), err


# -- Python websockets: its default offer and every parameter combination --

SIZES = [0, 10, 127, 128, 129, 1000, 65536, 1 << 20]


def message(n, binary):
    if binary:
        return (bytes(range(256)) * (n // 256 + 1))[:n]
    return chat(n)


async def roundtrip(port, factory=None, sizes=SIZES):
    kw = {"max_size": None}
    if factory is not None:
        kw.update(compression=None, extensions=[factory])
    async with websockets.connect(f"ws://127.0.0.1:{port}/", **kw) as ws:
        ext = ws.response_headers.get("Sec-WebSocket-Extensions")
        for n in sizes:
            for binary in (False, True):
                m = message(n, binary)
                await ws.send(m)
                got = await asyncio.wait_for(ws.recv(), 10)
                assert got == m, (n, binary, len(got))
        return ext, ws.extensions


def test_websockets_default_offer_round_trips_every_size(server):
    srv = server(args=ON)
    ext, extensions = asyncio.run(roundtrip(srv.port))
    assert ext.startswith(ANSWER), ext
    assert len(extensions) == 1 and extensions[0].name == "permessage-deflate"
    with RawClient.connect(srv.port) as c:
        s = stats(c)
    assert s["compression_negotiated"] >= 1
    # Sizes at or above the threshold came and went compressed.
    assert s["compressed_messages_in"] >= 10
    # (bytes(range(256)) of 128 or 129 bytes does not shrink: sent plain)
    assert s["compressed_messages_out"] >= 6
    assert s["compressed_bytes_saved"] > 0


def factories():
    """Every parameter combination Python websockets' client can offer."""
    for snct, cnct in itertools.product((False, True), repeat=2):
        yield dict(server_no_context_takeover=snct,
                   client_no_context_takeover=cnct)
    for bits in range(9, 16):
        yield dict(server_max_window_bits=bits)
    for bits in (True, 9, 12, 15):
        yield dict(client_max_window_bits=bits)
    yield dict(server_no_context_takeover=True,
               client_no_context_takeover=True, server_max_window_bits=9,
               client_max_window_bits=9)


@pytest.mark.parametrize("params", list(factories()),
                         ids=lambda p: ",".join(f"{k}={v}"
                                                for k, v in p.items()))
def test_websockets_parameter_combinations(server, params):
    srv = server(args=ON)
    ext, extensions = asyncio.run(roundtrip(
        srv.port, ClientPerMessageDeflateFactory(**params),
        sizes=[10, 200, 70000]))
    assert ext.startswith(ANSWER), ext
    if "server_max_window_bits" in params:
        assert ext.endswith(
            f"server_max_window_bits={params['server_max_window_bits']}")
    else:
        assert "server_max_window_bits" not in ext


def test_server_window_is_honoured(server):
    """--compression-window 10: a message with repeats 2000 bytes apart
    inflates with a 2^10 window, which it would not if the server used a
    larger one."""
    srv = server(args=(*ON, "--compression-window", "10"))
    block = os.urandom(1000).hex().encode()  # 2000 bytes, incompressible-ish
    with raw(srv, "permessage-deflate; server_max_window_bits=12") as c:
        assert c.response.headers["sec-websocket-extensions"].endswith(
            "server_max_window_bits=10")
        c.send_frame(OP_BINARY, block * 4)
        rsv, op, payload = recv_data(c)
        assert rsv & RSV1
        assert inflate(payload, bits=10) == block * 4
    # Without the client asking, the window is still 10 (and not named).
    with raw(srv) as c:
        assert "server_max_window_bits" not in \
            c.response.headers["sec-websocket-extensions"]
        c.send_frame(OP_BINARY, block * 4)
        rsv, op, payload = recv_data(c)
        assert inflate(payload, bits=10) == block * 4


# -- the raw client: frames on the wire -------------------------------------

def test_threshold_decides_rsv1_per_message(server):
    srv = server(args=(*ON, "--compression-threshold", "200"))
    with raw(srv) as c:
        c.send_text(chat(199))
        rsv, op, payload = recv_data(c)
        assert rsv == 0 and payload == chat(199).encode()
        c.send_text(chat(200))
        rsv, op, payload = recv_data(c)
        assert rsv & RSV1 and op == OP_TEXT
        assert len(payload) < 200 and inflate(payload) == chat(200).encode()


def test_fragmented_compressed_message(server):
    srv = server(args=ON)
    text = chat(5000).encode()
    z = deflate(text)
    with raw(srv) as c:
        third = len(z) // 3
        # RSV1 on the first frame only (RFC 7692 6.1).
        c.send(build_frame(OP_TEXT, z[:third], fin=False, rsv=RSV1) +
               build_frame(OP_CONT, z[third:2 * third], fin=False) +
               build_frame(OP_CONT, z[2 * third:]))
        assert recv_plain(c) == (OP_TEXT, text)
        # A final block (BFINAL) instead of a sync flush is read too.
        c.send_frame(OP_BINARY, deflate(text, finish=True), rsv=RSV1)
        assert recv_plain(c) == (OP_BINARY, text)
        # An empty compressed message.
        c.send_frame(OP_TEXT, deflate(b""), rsv=RSV1)
        assert recv_plain(c) == (OP_TEXT, b"")


def test_ping_between_fragments_of_a_compressed_message(server):
    srv = server(args=ON)
    text = chat(3000).encode()
    z = deflate(text)
    with raw(srv) as c:
        c.send(build_frame(OP_TEXT, z[:10], fin=False, rsv=RSV1) +
               build_frame(OP_PING, b"p") +
               build_frame(OP_CONT, z[10:]))
        first = c.recv_frame()
        assert (first.opcode, first.payload) == (OP_PONG, b"p")
        second = c.recv_frame()
        assert second.opcode == OP_TEXT and second.rsv & RSV1
        assert inflate(second.payload) == text


def test_rsv1_on_a_continuation_frame_is_1002(server):
    srv = server(args=ON)
    z = deflate(chat(1000).encode())
    with raw(srv) as c:
        c.send(build_frame(OP_TEXT, z[:5], fin=False, rsv=RSV1) +
               build_frame(OP_CONT, z[5:], rsv=RSV1))
        expect_fail(c, 1002)


def test_corrupt_deflate_is_1007(server):
    srv = server(args=ON)
    with raw(srv) as c:
        c.send_frame(OP_TEXT, b"\xff\xff\xff\xff", rsv=RSV1)
        expect_fail(c, 1007)
    with raw(srv) as c:
        # Cut in the middle of a block.
        z = deflate(os.urandom(3000).hex().encode())
        c.send_frame(OP_BINARY, z[:len(z) // 2], rsv=RSV1)
        expect_fail(c, 1007)
    srv.wait_log(r"closed 1007: corrupt compressed data")
    with RawClient.connect(srv.port) as c:
        assert stats(c)["inflate_errors"] == 2


def test_invalid_utf8_inside_compressed_text_is_1007(server):
    srv = server(args=ON)
    with raw(srv) as c:
        c.send_frame(OP_TEXT, deflate(b"ok \xc3\x28 not utf-8"), rsv=RSV1)
        expect_fail(c, 1007)
    # As binary the same bytes are fine.
    with raw(srv) as c:
        c.send_frame(OP_BINARY, deflate(b"ok \xc3\x28 binary"), rsv=RSV1)
        assert recv_plain(c) == (OP_BINARY, b"ok \xc3\x28 binary")


def test_bomb_over_max_message_is_1009(server):
    srv = server(args=(*ON, "--max-message", "65536"))
    z = deflate(b"\0" * (16 << 20))  # 16 MiB of zeros, ~16 KiB compressed
    assert len(z) < 65536
    peak_before = srv.rss_kb("VmHWM")
    with raw(srv) as c:
        c.send_frame(OP_BINARY, z, rsv=RSV1)
        expect_fail(c, 1009)
    srv.wait_log(r"closed 1009: message larger than --max-message")
    # Inflation stopped at the limit: the 16 MiB were never allocated. The
    # peak, not the current RSS: a buffer inflated whole and freed after
    # would be gone from VmRSS by now.
    assert srv.rss_kb("VmHWM") - peak_before < 8 * 1024
    # Exactly the limit, inflated, is still fine.
    with raw(srv) as c:
        c.send_frame(OP_BINARY, deflate(b"\0" * 65536), rsv=RSV1)
        assert recv_plain(c) == (OP_BINARY, b"\0" * 65536)


def test_broadcast_to_a_mixed_room_is_compressed_once(server):
    srv = server(args=ON)
    text = chat(4000)
    with raw(srv) as z1, raw(srv) as z2, raw(srv, offer=None) as plain:
        for c in (z1, z2, plain):
            assert c.cmd("join:mix") == "joined:mix"
        before = stats(plain)
        z1.send_text(f"bcast:mix:{text}")
        got = {}
        for name, c in (("z1", z1), ("z2", z2), ("plain", plain)):
            rsv, op, payload = recv_data(c)
            got[name] = (rsv, op, payload)
        assert recv_plain(z1) == (OP_TEXT, b"sent:3")
        after = stats(plain)
    for name in ("z1", "z2"):
        rsv, op, payload = got[name]
        assert rsv & RSV1 and op == OP_TEXT
        assert inflate(payload) == text.encode()
    assert got["z1"][2] == got["z2"][2]  # the very same compressed frame
    assert got["plain"] == (0, OP_TEXT, text.encode())
    # One deflate for the whole room; two compressed deliveries.
    assert after["messages_deflated"] - before["messages_deflated"] == 1
    assert after["compressed_messages_out"] - \
        before["compressed_messages_out"] == 2


def test_websockets_client_in_a_mixed_room(server):
    """A compressing `websockets` client and a plain raw one get the same
    broadcast."""
    srv = server(args=ON)
    text = chat(2000)

    async def run():
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/") as ws:
            await ws.send("join:room")
            assert await ws.recv() == "joined:room"
            with raw(srv, offer=None) as plain:
                assert plain.cmd("join:room") == "joined:room"
                plain.send_text(f"bcast:room:{text}")
                assert await asyncio.wait_for(ws.recv(), 5) == text
                rsv, op, payload = recv_data(plain)
                assert (rsv, payload) == (0, text.encode())
    asyncio.run(run())
