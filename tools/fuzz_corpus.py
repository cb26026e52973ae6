#!/usr/bin/env python3
"""Writes the fuzz seed corpora, tests/fuzz/corpus/<target>/, from the
inputs below (the seed tables the targets started from, plus one seed for
each message kind and each refusal the parsers know). The files are
committed; run this again after changing the inputs here:

    python3 tools/fuzz_corpus.py

Both the seeded ctest runs (tests/fuzz/driver.c) and libFuzzer read the
directories as they are."""

import shutil
import struct
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fuzz" / "corpus"

KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


def req(extra=b"", path=b"/chat?room=a&name=b", version=b"13"):
    return (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: keep-alive, Upgrade\r\n" + KEY +
            b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n")


HTTP = {
    "upgrade": req(),
    "extra-headers": req(b"X-A: 1\r\nX-B:  two  \r\n"),
    "subprotocols": req(b"Sec-WebSocket-Protocol: a, b,,c\r\n"),
    "plain-get": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "post-upgrade": b"POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    "origin-cookie": req(b"Origin: http://example.com\r\n"
                         b"Cookie: a=1; b=2\r\n"),
    "extensions": req(b"Sec-WebSocket-Extensions: permessage-deflate; "
                      b"client_max_window_bits\r\n"),
    "version-8": req(version=b"8"),
    "no-key": (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    "http10": req().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "percent-path": req(path=b"/r%20oom?q=%E2%82%AC&x"),
    "post-body": (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5"
                  b"\r\nContent-Type: text/plain\r\n\r\nhello"),
    "chunked": (b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                b"chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    "partial-head": b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: webso",
}


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def s16(b):
    return struct.pack(">H", len(b)) + b


# A presence meta {name = "ada", ready = true, score = 1.5}.
META = (struct.pack(">H", 3) + b"\x04name\x03" + s16(b"ada") +
        b"\x05ready\x01" + b"\x05score\x02" + struct.pack(">d", 1.5))

WIRE = {
    "room-text": frame(b"\x1e" + s16(b"room") + struct.pack(">I", 5) +
                       b"hello"),
    "room-binary": frame(b"\x1f" + s16(b"room") + struct.pack(">I", 3) +
                         b"\x00\xff\x80"),
    "peers": frame(b"\x10\x00\x01" + s16(b"n1") + s16(b"127.0.0.1:7001")),
    "peers-two": frame(b"\x10\x00\x02" + s16(b"n1") + s16(b"127.0.0.1:7001") +
                       s16(b"n2") + s16(b"[::1]:7002")),
    "interest-add": frame(b"\x11\x01" + s16(b"room")),
    "interest-remove": frame(b"\x11\x00" + s16(b"room")),
    "interest-all": frame(b"\x12" + struct.pack(">I", 2) + s16(b"a") +
                          s16(b"lobby")),
    "ping": frame(b"\x13" + struct.pack(">Q", 1)),
    "pong": frame(b"\x14" + struct.pack(">Q", 1)),
    "hello": frame(b"\x01\x01" + s16(b"node-a") + s16(b"127.0.0.1:7001") +
                   bytes(range(32))),
    "challenge": frame(b"\x02" + bytes(32)),
    "auth": frame(b"\x03" + bytes(range(32, 64))),
    "two-frames": frame(b"\x13" + struct.pack(">Q", 7)) +
    frame(b"\x11\x01" + s16(b"r")),
    # COUNTS (0x20) and PRESENCE (0x21): [u8 flags][u32 count] entries;
    # flags 1 = SYNC_FIRST, 2 = SYNC_LAST. A PRESENCE entry is [u8 op]
    # [u16 room][u64 id][u32 meta_len][meta]; meta is [u16 n] n * ([u8
    # key_len][key][u8 type][value]), types 0 false, 1 true, 2 number
    # (u64 bits), 3 string ([u16 len][text]), keys in increasing order.
    "counts": frame(b"\x20\x00" + struct.pack(">I", 2) + s16(b"lobby") +
                    struct.pack(">I", 3) + s16(b"g\xc3\xa9") +
                    struct.pack(">I", 0)),
    "counts-full-empty": frame(b"\x20\x03" + struct.pack(">I", 0)),
    "presence-join-leave": frame(
        b"\x21\x00" + struct.pack(">I", 2) +
        b"\x01" + s16(b"lobby") + struct.pack(">Q", 7) +
        struct.pack(">I", len(META)) + META +
        b"\x00" + s16(b"lobby") + struct.pack(">Q", 8) + struct.pack(">I", 0)),
    "presence-full": frame(
        b"\x21\x01" + struct.pack(">I", 1) + b"\x01" + s16(b"r") +
        struct.pack(">Q", 1) + struct.pack(">I", 2) + b"\x00\x00") +
    frame(b"\x21\x02" + struct.pack(">I", 0)),
    "presence-bad-meta-order": frame(
        b"\x21\x00" + struct.pack(">I", 1) + b"\x01" + s16(b"r") +
        struct.pack(">Q", 1) + struct.pack(">I", 8) +
        b"\x00\x02\x01b\x01\x01a\x00"),
}


def envelope(kind, origin=b"a", instance=1, body=b""):
    """The Redis engine's envelope (core/redis_proto.h)."""
    return (b"M\x01" + bytes([kind, len(origin)]) + origin +
            struct.pack(">Q", instance) + body)


REDIS = {
    "room-text": envelope(1, body=WIRE["room-text"]),
    "room-binary": envelope(1, b"node-b", 7, WIRE["room-binary"]),
    "state-full": envelope(2, body=WIRE["counts-full-empty"] +
                           WIRE["presence-full"]),
    "state-batch": envelope(2, body=WIRE["counts"] +
                            WIRE["presence-join-leave"]),
    "heartbeat": envelope(3),
    "hello": envelope(4, b"n\xc3\xa9"),
    "bye": envelope(5),
    "room-two-frames": envelope(1, body=WIRE["room-text"] * 2),
    "state-foreign-tag": envelope(2, body=WIRE["ping"]),
    "origin-not-utf8": envelope(3, b"\xff"),
}


def masked(opcode_byte, payload, fin=True):
    """A client frame with mask key 0 (payload unchanged)."""
    b0 = (0x80 if fin else 0) | opcode_byte
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\x00\x00\x00\x00" + payload


FRAMES = {
    "text": masked(0x1, b"hi"),
    "ping-then-empty-text": masked(0x9, b"abc") + masked(0x1, b""),
    "fragmented-with-ping": masked(0x1, b"a", fin=False) + masked(0x9, b"") +
    masked(0x0, b"b"),
    "close-1000": masked(0x8, b"\x03\xe8"),
    "binary": masked(0x2, b"\x00\x01\x02\xff"),
    "utf8-text": masked(0x1, "h\u00e9llo \u20ac \U0001f600".encode()),
    "text-126": masked(0x1, b"x" * 200),
    "pong": masked(0xA, b"p"),
    "close-reason": masked(0x8, b"\x03\xe9going away"),
    "echo-commands": masked(0x1, b"join lobby") + masked(0x1, b"say hi"),
    "three-fragments": masked(0x1, b"ab", fin=False) +
    masked(0x0, b"cd", fin=False) + masked(0x0, b"ef"),
    "binary-fragmented": masked(0x2, b"\x01", fin=False) +
    masked(0x0, b"\x02"),
}


def deflated(data, bits=15, finish=False):
    """A permessage-deflate payload as a client makes it: raw deflate, a
    sync flush with its 00 00 ff ff tail stripped (or a final block)."""
    z = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = z.compress(data) + z.flush(zlib.Z_FINISH if finish
                                      else zlib.Z_SYNC_FLUSH)
    return out if finish else out[:-4]


def two_flushes(a, b):
    """One message deflated in two sync-flushed pieces."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = z.compress(a) + z.flush(zlib.Z_SYNC_FLUSH)
    return (out + z.compress(b) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


# fuzz_inflate: a mode byte (even: straight to the inflater; odd: as a
# compressed message on a connection, 1 text, 3 binary), then the payload.
CHAT = b'{"type":"message","room":"lobby","from":"ada","text":"hello"}'
INFLATE = {
    "hello": b"\x00" + deflated(b"hello"),
    "hello-on-conn": b"\x01" + deflated(b"hello"),
    "empty": b"\x00" + deflated(b""),
    "final-block": b"\x02" + deflated(b"hello", finish=True),
    "stored-block": b"\x00\x00\x05\x00\xfa\xffhello",
    "chat-json": b"\x00" + deflated(CHAT * 8),
    "chat-json-on-conn": b"\x01" + deflated(CHAT * 8),
    "binary-on-conn": b"\x03" + deflated(bytes(range(256)) * 2),
    "window-9": b"\x04" + deflated(CHAT * 30, bits=9),
    "bomb": b"\x00" + deflated(b"\x00" * 100000),
    "bomb-on-conn": b"\x03" + deflated(b"\x00" * 100000),
    "two-flushes": b"\x00" + two_flushes(b"hello ", b"world"),
    "not-utf8-on-conn": b"\x01" + deflated(b"ok \xc3\x28"),
}


def main():
    for target, seeds in (("http", HTTP), ("wire", WIRE),
                          ("frames", FRAMES), ("inflate", INFLATE),
                          ("redis", REDIS)):
        d = ROOT / target
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for i, (name, data) in enumerate(seeds.items()):
            (d / f"{i:02d}-{name}").write_bytes(data)
        print(f"{d}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
