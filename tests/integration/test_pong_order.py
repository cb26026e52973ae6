"""Pongs go out in arrival order: a ping that arrives in the same read as a
data message is answered before the handler's reply to a later message
(RFC 6455 5.5.2, what every conformance suite checks)."""

from conftest import (OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient,
                      build_frame)


def read_frames(client, n, timeout=5.0):
    return [client.recv_frame(timeout) for _ in range(n)]


def test_ping_between_fragments_is_answered_before_the_echo(cmd_server):
    with RawClient.connect(cmd_server.port) as c:
        # One send: the three frames reach the server in one read.
        c.send(build_frame(OP_TEXT, b"hel", fin=False) +
               build_frame(OP_PING, b"p") +
               build_frame(OP_CONT, b"lo"))
        first, second = read_frames(c, 2)
        assert (first.opcode, first.payload) == (OP_PONG, b"p")
        assert (second.opcode, second.payload) == (OP_TEXT, b"hello")


def test_ping_before_a_whole_message_is_answered_first(cmd_server):
    with RawClient.connect(cmd_server.port) as c:
        c.send(build_frame(OP_PING, b"p") + build_frame(OP_TEXT, b"hello"))
        first, second = read_frames(c, 2)
        assert (first.opcode, first.payload) == (OP_PONG, b"p")
        assert (second.opcode, second.payload) == (OP_TEXT, b"hello")


def test_ping_after_a_message_is_answered_after_its_reply(cmd_server):
    with RawClient.connect(cmd_server.port) as c:
        c.send(build_frame(OP_TEXT, b"hello") + build_frame(OP_PING, b"p") +
               build_frame(OP_TEXT, b"again"))
        frames = read_frames(c, 3)
        assert [(f.opcode, f.payload) for f in frames] == [
            (OP_TEXT, b"hello"), (OP_PONG, b"p"), (OP_TEXT, b"again")]
