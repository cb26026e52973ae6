"""Rooms: join/leave, broadcast, broadcast_except, members, rooms, count,
and room cleanup when connections close."""

import time

import pytest

from conftest import (OP_BINARY, OP_TEXT, RawClient, conn_id, join,
                      observer, wait_closed_report)


@pytest.fixture
def clients(cmd_server):
    made = []

    def make(n=1):
        out = [RawClient.connect(cmd_server.port) for _ in range(n)]
        made.extend(out)
        return out if n > 1 else out[0]

    yield make
    for c in made:
        c.close()


def assert_nothing_arrives(client, wait=0.3):
    """No data message may arrive within `wait` seconds."""
    try:
        op, data = client.recv_message(timeout=wait)
    except TimeoutError:
        return
    pytest.fail(f"unexpected message: {op} {data!r}")


def test_broadcast_reaches_every_member_once(clients):
    a, b, c = clients(3)
    for x in (a, b, c):
        join(x, "r")
    outsider = clients(1)
    assert a.cmd("bcast:r:hello room") == "hello room"  # a is a member too
    assert a.recv_text() == "sent:3"
    assert b.recv_text() == "hello room"
    assert c.recv_text() == "hello room"
    for x in (a, b, c, outsider):
        assert_nothing_arrives(x, 0.2)


def test_broadcast_from_non_member(clients):
    a, b = clients(2)
    join(a, "r")
    assert b.cmd("bcast:r:from outside") == "sent:1"
    assert a.recv_text() == "from outside"


def test_broadcast_to_unknown_room_returns_0(clients):
    a = clients(1)
    assert a.cmd("bcast:nobody-here:x") == "sent:0"
    assert a.cmd("count:nobody-here") == "0"


def test_binary_broadcast(clients):
    a, b = clients(2)
    join(b, "bin")
    assert a.cmd("bcastb:bin:\x01raw") == "sent:1"
    op, data = b.recv_message()
    assert op == OP_BINARY and data == b"\x01raw"


def test_text_broadcast_is_text(clients):
    a, b = clients(2)
    join(b, "txt")
    assert a.cmd("bcast:txt:words") == "sent:1"
    op, data = b.recv_message()
    assert op == OP_TEXT and data == b"words"


def test_broadcast_except_skips_sender(clients):
    a, b, c = clients(3)
    for x in (a, b, c):
        join(x, "ex")
    assert a.cmd("bcastx:ex:not for a") == "sent:2"
    assert b.recv_text() == "not for a"
    assert c.recv_text() == "not for a"
    assert_nothing_arrives(a, 0.3)


def test_broadcast_except_non_member_excluded_conn(clients):
    a, b = clients(2)
    join(b, "ex2")
    # a is not a member: everyone in the room gets it.
    assert a.cmd("bcastx:ex2:all of you") == "sent:1"
    assert b.recv_text() == "all of you"


def test_broadcast_order_and_exactly_once(clients):
    members = clients(3)
    for m in members:
        join(m, "seq")
    pub = clients(1)
    n = 300
    for i in range(n):
        pub.send_text(f"bcast:seq:{i}")
    for i in range(n):
        assert pub.recv_text() == "sent:3"
    for m in members:
        got = [m.recv_text() for _ in range(n)]
        assert got == [str(i) for i in range(n)]
        assert_nothing_arrives(m, 0.2)


def test_two_publishers_each_in_order(clients):
    m = clients(1)
    join(m, "two")
    p1, p2 = clients(2)
    for i in range(100):
        p1.send_text(f"bcast:two:p1-{i}")
        p2.send_text(f"bcast:two:p2-{i}")
    for p in (p1, p2):
        for _ in range(100):
            assert p.recv_text() == "sent:1"
    got = [m.recv_text() for _ in range(200)]
    assert [g for g in got if g.startswith("p1-")] == \
        [f"p1-{i}" for i in range(100)]
    assert [g for g in got if g.startswith("p2-")] == \
        [f"p2-{i}" for i in range(100)]


def test_join_is_idempotent(clients):
    a, b = clients(2)
    ida = conn_id(a)
    join(a, "idem")
    join(a, "idem")
    join(a, "idem")
    assert b.cmd("count:idem") == "1"
    assert b.cmd("members:idem") == str(ida)
    assert a.cmd("rooms") == "idem"
    assert b.cmd("bcast:idem:once") == "sent:1"
    assert a.recv_text() == "once"
    assert_nothing_arrives(a, 0.3)


def test_leave_removes_and_deletes_empty_room(clients):
    a, b = clients(2)
    join(a, "tmp")
    join(b, "tmp")
    assert a.cmd("count:tmp") == "2"
    assert a.cmd("leave:tmp") == "left:tmp"
    assert a.cmd("count:tmp") == "1"
    assert a.cmd("rooms") == ""
    assert a.cmd("bcast:tmp:after a left") == "sent:1"
    assert b.recv_text() == "after a left"
    assert_nothing_arrives(a, 0.2)
    assert b.cmd("leave:tmp") == "left:tmp"
    assert a.cmd("count:tmp") == "0"
    assert a.cmd("members:tmp") == ""
    assert a.cmd("bcast:tmp:nobody") == "sent:0"


def test_leave_room_not_joined_is_harmless(clients):
    a, b = clients(2)
    join(b, "other")
    assert a.cmd("leave:other") == "left:other"
    assert a.cmd("leave:never-existed") == "left:never-existed"
    assert a.cmd("count:other") == "1"
    assert a.cmd("count:never-existed") == "0"


def test_rejoin_after_leave(clients):
    a = clients(1)
    join(a, "again")
    assert a.cmd("leave:again") == "left:again"
    join(a, "again")
    assert a.cmd("count:again") == "1"
    assert a.cmd("bcast:again:back") == "back"
    assert a.recv_text() == "sent:1"


def test_rooms_lists_all_joined(clients):
    a = clients(1)
    for r in ("zeta", "alpha", "mid", "alpha"):
        join(a, r)
    assert a.cmd("rooms") == "alpha,mid,zeta"
    a.cmd("leave:mid")
    assert a.cmd("rooms") == "alpha,zeta"


def test_members_lists_ids(clients):
    a, b, c = clients(3)
    ids = sorted(conn_id(x) for x in (a, b, c))
    assert len(set(ids)) == 3, "conn.id must be unique"
    for x in (a, b, c):
        join(x, "m")
    assert a.cmd("members:m") == ",".join(map(str, ids))
    assert a.cmd("count:m") == "3"


def test_room_names_are_exact(clients):
    a, b = clients(2)
    join(a, "Room")
    join(b, "room")
    assert a.cmd("count:Room") == "1"
    assert a.cmd("count:room") == "1"
    assert a.cmd("count:room ") == "0"
    assert b.cmd("bcast:Room:upper") == "sent:1"
    assert a.recv_text() == "upper"
    assert_nothing_arrives(b, 0.2)


def test_unicode_and_long_room_names(clients):
    a, b = clients(2)
    name = "salle-é-✓-" + "x" * 200
    join(a, name)
    assert b.cmd(f"count:{name}") == "1"
    assert b.cmd(f"bcast:{name}:hi") == "sent:1"
    assert a.recv_text() == "hi"


def test_closed_connection_removed_before_on_close(cmd_server, clients):
    obs = observer(cmd_server.port)
    a, b = clients(2)
    ida = conn_id(a)
    join(a, "r1")
    join(a, "r2")
    join(b, "r1")
    a.send_close(1000, b"done")
    a.expect_close()
    code, reason, still = wait_closed_report(obs, ida)
    assert (code, reason) == (1000, "done")
    assert still == "", f"on_close still saw it in rooms: {still!r}"
    assert b.cmd("count:r1") == "1"
    assert b.cmd("count:r2") == "0"
    assert b.cmd("members:r1") == str(conn_id(b))
    assert b.cmd("bcast:r1:x") == "x"
    assert b.recv_text() == "sent:1"
    obs.close()


def test_tcp_drop_gives_1006_and_cleans_rooms(cmd_server, clients):
    obs = observer(cmd_server.port)
    a, b = clients(2)
    ida = conn_id(a)
    join(a, "drop")
    join(b, "drop")
    a.abort()
    code, _, still = wait_closed_report(obs, ida)
    assert code == 1006
    assert still == ""
    assert b.cmd("count:drop") == "1"
    # on_close runs exactly once.
    assert_nothing_arrives(obs, 0.5)
    obs.close()


def test_tcp_fin_without_close_frame_gives_1006(cmd_server, clients):
    obs = observer(cmd_server.port)
    a = clients(1)
    ida = conn_id(a)
    a.close()
    code, _, _ = wait_closed_report(obs, ida)
    assert code == 1006
    obs.close()


def test_many_members_and_rooms_cleanup(cmd_server):
    obs = observer(cmd_server.port)
    cs = [RawClient.connect(cmd_server.port) for _ in range(20)]
    try:
        ids = [conn_id(c) for c in cs]
        for c in cs:
            join(c, "big")
        assert cs[0].cmd("count:big") == "20"
        for c in cs[10:]:
            c.abort()
        seen = set()
        deadline = time.monotonic() + 5
        while len(seen) < 10 and time.monotonic() < deadline:
            msg = obs.recv_text(timeout=max(0.01, deadline - time.monotonic()))
            if msg.startswith("closed:"):
                seen.add(int(msg.split(":")[1]))
        assert seen == set(ids[10:])
        assert cs[0].cmd("count:big") == "10"
        assert cs[0].cmd("bcast:big:left") == "left"
        assert cs[0].recv_text() == "sent:10"
        for c in cs[1:10]:
            assert c.recv_text() == "left"
    finally:
        for c in cs:
            c.close()
        obs.close()


def test_two_hundred_members(cmd_server):
    cs = []
    try:
        for _ in range(200):
            c = RawClient.connect(cmd_server.port)
            c.send_text("join:crowd")
            cs.append(c)
        for c in cs:
            assert c.recv_text() == "joined:crowd"
        assert cs[0].cmd("count:crowd") == "200"
        cs[0].send_text("bcastx:crowd:to the crowd")
        assert cs[0].recv_text() == "sent:199"
        for c in cs[1:]:
            assert c.recv_text() == "to the crowd"
    finally:
        for c in cs:
            c.close()
