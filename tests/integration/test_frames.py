"""WebSocket framing: data messages, fragmentation, control frames, and every
protocol error the server must fail the connection with."""

import struct
import time

import pytest

from conftest import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG,
                      OP_TEXT, RSV1, RSV2, RSV3, RawClient, build_frame,
                      close_payload, expect_fail, stats)


@pytest.fixture
def client(cmd_server):
    c = RawClient.connect(cmd_server.port)
    yield c
    c.close()


def server_still_serves(srv):
    c = RawClient.connect(srv.port)
    try:
        assert c.cmd("still serving") == "still serving"
    finally:
        c.close()


# -- data messages ----------------------------------------------------------

def test_text_echo(client):
    assert client.cmd("hello") == "hello"


def test_empty_text_message(client):
    client.send_text("")
    assert client.recv_text() == ""


def test_binary_echo_all_byte_values(client):
    data = bytes(range(256)) * 4
    client.send_binary(data)
    assert client.recv_binary() == data


def test_unicode_text_roundtrip(client):
    text = "héllo wörld ✓ 𝄞 日本語"
    assert client.cmd(text) == text


@pytest.mark.parametrize("size", [125, 126, 127, 65535, 65536, 200000])
def test_payload_length_encodings(client, size):
    data = bytes((i * 7) & 0xFF for i in range(size))
    client.send_binary(data)
    assert client.recv_binary(timeout=10) == data


def test_fragmented_text_message(client):
    client.send_frame(OP_TEXT, b"Hel", fin=False)
    client.send_frame(OP_CONT, b"lo, ", fin=False)
    client.send_frame(OP_CONT, b"world", fin=True)
    assert client.recv_text() == "Hello, world"


def test_fragmented_binary_message(client):
    client.send_frame(OP_BINARY, b"\x00\x01", fin=False)
    client.send_frame(OP_CONT, b"", fin=False)
    client.send_frame(OP_CONT, b"\x02\x03", fin=True)
    assert client.recv_binary() == b"\x00\x01\x02\x03"


def test_many_small_fragments(client):
    client.send_frame(OP_TEXT, b"", fin=False)
    for i in range(100):
        client.send_frame(OP_CONT, str(i % 10).encode(), fin=False)
    client.send_frame(OP_CONT, b"!", fin=True)
    assert client.recv_text() == "0123456789" * 10 + "!"


def test_ping_between_fragments_is_answered(client):
    client.send_frame(OP_TEXT, b"frag", fin=False)
    client.send_frame(OP_PING, b"mid")
    client.send_frame(OP_CONT, b"mented", fin=True)
    # The pong and the echo may come in either order.
    got = sorted((f.opcode, f.payload) for f in
                 (client.recv_frame(), client.recv_frame()))
    assert got == [(OP_TEXT, b"fragmented"), (OP_PONG, b"mid")]


def test_two_byte_char_split_across_fragments_is_valid(client):
    e_acute = "é".encode()  # c3 a9
    client.send_frame(OP_TEXT, b"caf" + e_acute[:1], fin=False)
    client.send_frame(OP_CONT, e_acute[1:], fin=True)
    assert client.recv_text() == "café"


def test_four_byte_char_split_over_three_fragments(client):
    clef = "𝄞".encode()  # f0 9d 84 9e
    client.send_frame(OP_TEXT, clef[:1], fin=False)
    client.send_frame(OP_CONT, clef[1:3], fin=False)
    client.send_frame(OP_CONT, clef[3:] + b"x", fin=True)
    assert client.recv_text() == "𝄞x"


def test_frames_split_at_every_byte(client):
    # TCP may cut frames anywhere: header, mask key, mid-character.
    data = build_frame(OP_TEXT, "é✓𝄞".encode()) + \
        build_frame(OP_BINARY, b"\x00" * 300)
    for i in range(len(data)):
        client.send(data[i:i + 1])
        if i % 16 == 0:
            # Pacing, not waiting for anything: without a pause now and then
            # the bytes pile up and the server reads them in a few big
            # chunks. Nothing on our side can observe its read boundaries.
            time.sleep(0.001)
    assert client.recv_text() == "é✓𝄞"
    assert client.recv_binary() == b"\x00" * 300


def test_many_messages_arrive_in_order(client):
    for i in range(200):
        client.send_text(f"n{i}")
    for i in range(200):
        assert client.recv_text() == f"n{i}"


# -- control frames ---------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"abc", bytes(range(125))])
def test_ping_answered_with_same_payload(client, payload):
    client.send_frame(OP_PING, payload)
    f = client.recv_frame()
    assert f.opcode == OP_PONG and f.fin and not f.masked
    assert f.payload == payload


def test_unsolicited_pong_is_ignored(client):
    client.send_frame(OP_PONG, b"whatever")
    assert client.cmd("after pong") == "after pong"


def test_client_close_with_code_and_reason(client):
    client.send_close(4000, b"bye")
    f = client.recv_frame()
    assert f.opcode == OP_CLOSE
    code, _ = f.close_info()
    # The server echoes the code (RFC 6455 5.5.1); 1000 is tolerated.
    assert code in (4000, 1000), code
    assert client.wait_eof(3.0), "server did not close TCP after close"


def test_client_close_without_payload(client):
    client.send_close()
    f = client.recv_frame()
    assert f.opcode == OP_CLOSE
    code, _ = f.close_info()
    assert code in (None, 1000), code
    assert client.wait_eof(3.0)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 3000, 4999])
def test_valid_close_codes_accepted(client, code):
    client.send_close(code, b"")
    f = client.recv_frame()
    assert f.opcode == OP_CLOSE
    got, _ = f.close_info()
    assert got in (code, 1000), got


def test_server_ignores_data_after_close(cmd_server):
    c = RawClient.connect(cmd_server.port)
    c.send(build_frame(OP_CLOSE, close_payload(1000)) +
           build_frame(OP_TEXT, b"after close"))
    f = c.recv_frame()
    assert f.opcode == OP_CLOSE
    # Nothing but EOF may follow.
    try:
        extra = c.recv_frame(timeout=2)
        pytest.fail(f"server sent a frame after its close: {extra!r}")
    except Exception as e:  # PeerClosed expected
        assert type(e).__name__ == "PeerClosed", repr(e)
    c.close()


# -- protocol errors: 1002 --------------------------------------------------

def test_unmasked_client_frame_gets_1002(cmd_server, client):
    c = RawClient.connect(cmd_server.port)
    before = stats(c)
    c.close()
    client.send_frame(OP_TEXT, b"no mask", mask=False)
    expect_fail(client, 1002)
    c = RawClient.connect(cmd_server.port)
    after = stats(c)
    c.close()
    assert after.get("protocol_errors", 0) >= \
        before.get("protocol_errors", 0) + 1, (before, after)


def test_control_frame_over_125_bytes_gets_1002(client):
    client.send_frame(OP_PING, b"p" * 126)
    expect_fail(client, 1002)


def test_close_frame_over_125_bytes_gets_1002(client):
    client.send_frame(OP_CLOSE, close_payload(1000, b"r" * 124))
    expect_fail(client, 1002)


def test_fragmented_ping_gets_1002(client):
    client.send_frame(OP_PING, b"half", fin=False)
    expect_fail(client, 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7,
                                    0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode_gets_1002(client, opcode):
    client.send_frame(opcode, b"x")
    expect_fail(client, 1002)


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3],
                         ids=["rsv1", "rsv2", "rsv3", "all"])
def test_rsv_bits_get_1002(client, rsv):
    client.send_frame(OP_TEXT, b"x", rsv=rsv)
    expect_fail(client, 1002)


def test_rsv_bit_on_ping_gets_1002(client):
    client.send_frame(OP_PING, b"x", rsv=RSV1)
    expect_fail(client, 1002)


def test_unexpected_continuation_gets_1002(client):
    client.send_frame(OP_CONT, b"orphan", fin=True)
    expect_fail(client, 1002)


def test_unexpected_continuation_nonfinal_gets_1002(client):
    client.send_frame(OP_CONT, b"orphan", fin=False)
    expect_fail(client, 1002)


def test_new_data_frame_inside_fragmented_message_gets_1002(client):
    client.send_frame(OP_TEXT, b"first", fin=False)
    client.send_frame(OP_TEXT, b"second", fin=True)
    expect_fail(client, 1002)


def test_continuation_after_complete_message_gets_1002(client):
    client.send_frame(OP_TEXT, b"whole", fin=True)
    assert client.recv_text() == "whole"
    client.send_frame(OP_CONT, b"tail", fin=True)
    expect_fail(client, 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016,
                                  1100, 2000, 2999, 5000, 65535])
def test_invalid_close_code_gets_1002(client, code):
    client.send_close(code, b"")
    expect_fail(client, 1002)


def test_close_payload_of_one_byte_gets_1002(client):
    client.send_frame(OP_CLOSE, b"\x03")
    expect_fail(client, 1002)


def test_close_reason_invalid_utf8_is_rejected(client):
    client.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff\xfe")
    code, _ = client.expect_close()
    assert code in (1007, 1002), code


def test_protocol_error_does_not_affect_other_connections(cmd_server):
    good = RawClient.connect(cmd_server.port)
    bad = RawClient.connect(cmd_server.port)
    bad.send_frame(OP_TEXT, b"x", mask=False)
    expect_fail(bad, 1002)
    assert good.cmd("unaffected") == "unaffected"
    good.close()
    bad.close()


# -- invalid UTF-8: 1007 ----------------------------------------------------

@pytest.mark.parametrize("data", [
    b"\xff",
    b"abc\xc3\x28",
    b"\xc0\xaf",                 # overlong "/"
    b"\xe0\x80\xaf",             # overlong, 3 bytes
    b"\xed\xa0\x80",             # UTF-16 surrogate
    b"\xf4\x90\x80\x80",         # > U+10FFFF
    b"\xf8\x88\x80\x80\x80",     # 5-byte form
    b"ok\xe2\x82",               # truncated at end of message
    b"\x80",                     # lone continuation byte
], ids=["ff", "bad-cont", "overlong2", "overlong3", "surrogate",
        "too-big", "5byte", "truncated", "lone-cont"])
def test_invalid_utf8_text_gets_1007(client, data):
    client.send_frame(OP_TEXT, data)
    expect_fail(client, 1007)


def test_invalid_utf8_across_fragments_gets_1007(client):
    client.send_frame(OP_TEXT, b"ab\xc3", fin=False)
    client.send_frame(OP_CONT, b"\x28cd", fin=True)
    expect_fail(client, 1007)


def test_truncated_char_at_end_of_fragmented_message_gets_1007(client):
    client.send_frame(OP_TEXT, b"abc", fin=False)
    client.send_frame(OP_CONT, b"\xe2\x82", fin=False)
    client.send_frame(OP_CONT, b"", fin=True)
    expect_fail(client, 1007)


def test_invalid_utf8_in_binary_is_fine(client):
    client.send_binary(b"\xff\xc0\xaf")
    assert client.recv_binary() == b"\xff\xc0\xaf"


# -- message size: 1009 -----------------------------------------------------

@pytest.fixture
def small_server(server):
    return server(args=["--max-message", "1024"])


def test_message_at_limit_is_accepted(small_server):
    c = RawClient.connect(small_server.port)
    text = "a" * 1024
    assert c.cmd(text) == text
    data = b"\x01" * 1024
    c.send_binary(data)
    assert c.recv_binary() == data
    c.close()


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_message_over_limit_gets_1009(small_server, opcode):
    c = RawClient.connect(small_server.port)
    c.send_frame(opcode, b"a" * 1025)
    expect_fail(c, 1009)
    c.close()


def test_oversized_frame_refused_at_header(small_server):
    c = RawClient.connect(small_server.port)
    # Announce 1 MiB and send only the header (with its mask key).
    c.send(build_frame(OP_BINARY, b"", length=1 << 20))
    t0 = time.monotonic()
    expect_fail(c, 1009, timeout=3)
    assert time.monotonic() - t0 < 3
    c.close()


def test_huge_announced_length_refused_at_header(small_server):
    c = RawClient.connect(small_server.port)
    c.send(build_frame(OP_TEXT, b"", length=(1 << 63) - 1))
    expect_fail(c, 1009, timeout=3)
    c.close()


def test_fragmented_message_over_limit_gets_1009(small_server):
    c = RawClient.connect(small_server.port)
    c.send_frame(OP_TEXT, b"a" * 600, fin=False)
    c.send_frame(OP_CONT, b"b" * 600, fin=True)
    expect_fail(c, 1009)
    c.close()


def test_fragmented_message_over_limit_refused_before_final(small_server):
    c = RawClient.connect(small_server.port)
    c.send_frame(OP_BINARY, b"a" * 1000, fin=False)
    c.send(build_frame(OP_CONT, b"", fin=False, length=1000))
    expect_fail(c, 1009, timeout=3)
    c.close()


def test_fragmented_message_at_limit_is_accepted(small_server):
    c = RawClient.connect(small_server.port)
    c.send_frame(OP_TEXT, b"a" * 512, fin=False)
    c.send_frame(OP_CONT, b"b" * 512, fin=True)
    assert c.recv_text() == "a" * 512 + "b" * 512
    c.close()


def test_default_max_message_is_1_mib(cmd_server):
    c = RawClient.connect(cmd_server.port)
    # cmd.lua answers a binary message starting with "LEN" with its length
    # (echoing 1 MiB back could itself hit the 1 MiB backpressure limit).
    data = b"LEN" + b"z" * ((1 << 20) - 3)
    c.send_binary(data)
    assert c.recv_text(timeout=15) == f"len:{1 << 20}"
    c.send(build_frame(OP_BINARY, b"", length=(1 << 20) + 1))
    expect_fail(c, 1009, timeout=3)
    c.close()
