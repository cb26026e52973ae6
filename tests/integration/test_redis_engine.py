"""The Redis engine (issue 12): three moonroom nodes on one redis-server
that the tests start themselves (redisutil.py) on a free loopback port.

  * broadcast and broadcast_except, text and binary, small and large, reach
    every member on every node exactly once, in order, and the origin node
    does not deliver its own message a second time when Redis echoes it;
  * interest: a node subscribes to PREFIX:room:NAME while it has members in
    the room (PUBSUB NUMSUB goes 0, 1, 2 and back down) and a node without
    members receives nothing for the room;
  * presence and cluster-wide counts agree on every node after joins,
    leaves, meta updates and closes, with on_presence events;
  * kill -9 of a node: its presence expires on the others (PREFIX:node:NAME
    has a TTL);
  * Redis killed and restarted under traffic: local delivery goes on, the
    cross-node messages meanwhile are dropped and counted (engine_dropped),
    the nodes reconnect (engine_reconnects), resubscribe, re-publish their
    presence and deliver again; nothing crashes and no message is
    delivered twice;
  * the password: wrong is a clear error at startup, right works (flag,
    environment, URL); --engine with --peer is a usage error (exit 2);
  * the engine counters are in ws.stats() and /metrics.

The nodes run scripts/engine.lua (cluster.lua's commands plus presence).
Every wait is bounded (wait_until); nothing sleeps for a fixed time to wait
for something it can observe."""

import collections
import json
import struct
import subprocess
import signal
import threading
import time
import uuid

import pytest

from conftest import (OP_BINARY, OP_TEXT, SCRIPTS, RawClient, free_port,
                      run_bin, wait_until)
from redisutil import redis_server  # noqa: F401 (a fixture)
from test_cluster import Client, big_binary, big_text, short

SCRIPT = SCRIPTS / "engine.lua"

# How long the tests give the engine to (re)connect, subscribe after a join
# and spread presence; generous for the ASan build on a busy machine: only a
# broken build waits this long.
CONNECT_TIMEOUT = 15.0
PROPAGATION = 10.0
# A dead node's presence must be gone within its key's TTL plus this much.
EXPIRY_SLACK = 10.0


class Member(Client):
    """test_cluster.Client on a path of our choosing."""

    def __init__(self, node, path="/"):
        self.node = node
        self.raw = RawClient.connect(node.port, path=path)
        self.inbox = collections.deque()


class RNode:
    """One moonroom node on the Redis engine, with a control connection
    (in no room) for commands."""

    def __init__(self, name, srv, prefix):
        self.name, self.srv, self.prefix = name, srv, prefix
        self._ctl = None
        self.clients = []

    @property
    def port(self):
        return self.srv.port

    @property
    def ctl(self):
        if self._ctl is None:
            self._ctl = Client(self)
            self.clients.append(self._ctl)
        return self._ctl

    def client(self, room=None, name=None):
        """A member connection; joins room on connect (tracked as name)."""
        path = "/"
        if room:
            path = f"/?room={room}" + (f"&name={name}" if name else "")
        m = Member(self, path)
        self.clients.append(m)
        return m

    def engine(self):
        """The engine_* counters of ws.stats()."""
        return json.loads(self.ctl.cmd("engine"))

    def ccount(self, room):
        _, local, cluster = self.ctl.cmd(f"ccount:{room}").split(":")
        return int(local), int(cluster)

    def presence(self, room):
        return sorted((e["node"], e["name"])
                      for e in json.loads(self.ctl.cmd(f"presence:{room}")))

    def events(self, room):
        r = json.loads(self.ctl.cmd(f"events:{room}"))
        as_set = lambda l: {(e["node"], e["name"]) for e in (l or [])}
        return r["calls"], as_set(r["joins"]), as_set(r["leaves"])

    def stats(self):
        out = {}
        for part in self.ctl.cmd("stats").split(","):
            k, _, v = part.partition("=")
            try:
                out[k] = int(float(v))
            except ValueError:
                out[k] = v
        return out

    def kill9(self):
        self.srv.signal(signal.SIGKILL)
        self.srv.wait(5)
        self._ctl = None

    def __repr__(self):
        return f"RNode({self.name}, ws={self.port})"


def engine_args(rs, name, prefix, password=None, extra=()):
    args = ["--engine", rs.url, "--node", name, "--redis-prefix", prefix]
    if password is not None:
        args += ["--redis-password", password]
    return args + list(extra)


def stop_nodes(nodes, grace=5.0):
    """Closes the nodes' clients, then SIGTERMs every node at once: a node
    whose clients are gone stops without waiting out the close grace, so
    teardown takes well under a second instead of 3 s a node."""
    for nd in nodes:
        for c in nd.clients:
            c.close()
    running = [nd.srv for nd in nodes if nd.srv.alive()]
    for srv in running:
        srv.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for srv in running:
        try:
            status = srv.proc.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            continue  # the server fixture kills it and says so
        srv.expect_exit = True
        assert status == 0, f"{srv.url} exited {status} on SIGTERM"


@pytest.fixture
def fleet(server, redis_server):  # noqa: F811 (the fixture, imported)
    """Factory: fleet(n=3) -> (redis, [nodes a, b, c]) on one new
    redis-server, each node connected to it (engine_connected == 1).

    Every test uses its own key prefix, which also checks --redis-prefix."""
    state = {}

    def start(name, rs, prefix, extra=()):
        srv = server(script=SCRIPT, args=engine_args(
            rs, name, prefix, password=rs.password, extra=extra),
            ready_timeout=CONNECT_TIMEOUT)
        return RNode(name, srv, prefix)

    def factory(n=3, password=None, extra=()):
        rs = redis_server(password=password)
        prefix = "t" + uuid.uuid4().hex[:8]
        nodes = [start_tracked(chr(ord("a") + i), rs, prefix, extra)
                 for i in range(n)]
        for nd in nodes:
            wait_until(lambda: nd.engine().get("engine_connected") == 1,
                       CONNECT_TIMEOUT,
                       what=lambda: f"{nd} connected to Redis: {nd.engine()}")
        state["prefix"] = prefix
        return rs, nodes

    def start_tracked(name, rs, prefix, extra=()):
        nd = start(name, rs, prefix, extra)
        made.append(nd)
        return nd

    made = []
    factory.start = start_tracked
    yield factory
    stop_nodes(made)


def channel(node_or_prefix, room):
    prefix = getattr(node_or_prefix, "prefix", node_or_prefix)
    return f"{prefix}:room:{room}"


def wait_numsub(rs, prefix, room, n):
    wait_until(lambda: rs.numsub(channel(prefix, room)) == n, PROPAGATION,
               what=lambda: f"PUBSUB NUMSUB {channel(prefix, room)} == {n} "
                            f"(is {rs.numsub(channel(prefix, room))})")


def expect_exactly(clients, expected, timeout=PROPAGATION):
    """Every client receives exactly `expected` (a list of (opcode, bytes)),
    in order, and nothing else before the last of them."""
    for c in clients:
        got = c.recv_n(len(expected), timeout)
        assert got == expected, (
            f"client on {c.node.name} got "
            f"{[(op, short(d)) for op, d in got]}, expected "
            f"{[(op, short(d)) for op, d in expected]}")


def fence(sender, room, clients, tag):
    """Broadcasts "M|fence-TAG" from `sender`'s node and waits until every
    client has it, taking it from their inboxes. Because Redis delivers a
    channel's messages to a subscriber in publish order, and the fence is
    published after the fence node received everything before it, a
    duplicate of an earlier message would arrive before the fence."""
    msg = f"M|fence-{tag}"
    assert sender.ctl.cmd(f"bcast:{room}:{msg}").startswith("sent:")
    for c in clients:
        op, data = c.recv(PROPAGATION)
        assert (op, data) == (OP_TEXT, msg.encode()), (
            f"client on {c.node.name}: expected the fence {msg}, got "
            f"{short(data)!r} (a duplicate or a stray message)")


# ---------------------------------------------------------------------------
# Broadcast
# ---------------------------------------------------------------------------


def test_broadcast_reaches_every_member_once_text_binary_and_large(fleet):
    rs, nodes = fleet(3)
    room = "hall"
    members = [nd.client(room) for nd in nodes for _ in range(2)]
    wait_numsub(rs, nodes[0].prefix, room, 3)

    for i, origin in enumerate(nodes):
        # Text, binary (not UTF-8), a text message over 64 KiB and a binary
        # one of 300 KiB, each once from this origin, in this order.
        assert origin.ctl.cmd(f"bcast:{room}:M|hello from {origin.name}") \
            == "sent:2"
        assert origin.ctl.cmd(f"bigbin:{room}:300") == "sent:2"
        assert origin.ctl.cmd(f"big:{room}:70000") == "sent:2"
        assert origin.ctl.cmd(f"bigbin:{room}:307200") == "sent:2"
        expected = [(OP_TEXT, f"M|hello from {origin.name}".encode()),
                    (OP_BINARY, big_binary(300)),
                    (OP_TEXT, big_text(70000)),
                    (OP_BINARY, big_binary(307200))]
        expect_exactly(members, expected)
        # Nothing more: in particular the origin's members do not get
        # Redis's copy of what their node published.
        fence(nodes[(i + 1) % 3], room, members, f"{i}")

    st = [nd.engine() for nd in nodes]
    for nd, s in zip(nodes, st):
        assert s["engine_published"] >= 5, (nd, s)
        assert s["engine_dropped"] == 0, (nd, s)


def test_broadcast_except_skips_the_sender_only(fleet):
    rs, nodes = fleet(3)
    a, b, c = nodes
    room = "except"
    sender = a.client(room)
    others = [a.client(room), b.client(room), b.client(room), c.client(room)]
    wait_numsub(rs, a.prefix, room, 3)

    assert sender.cmd(f"bcastx:{room}:M|not to me") == "sent:1"
    expect_exactly(others, [(OP_TEXT, b"M|not to me")])
    # The sender gets only the fence: neither its own message locally nor
    # Redis's echo of it.
    fence(b, room, others + [sender], "x")

    # broadcast_except from a node with one member (the sender): no local
    # delivery, every other node gets it.
    lone = c.client(room)
    assert lone.cmd(f"bcastx:{room}:M|from c") == "sent:1"
    expect_exactly([sender] + others, [(OP_TEXT, b"M|from c")])
    fence(a, room, [sender, lone] + others, "y")


def test_many_broadcasts_from_every_node_arrive_in_order_once(fleet):
    """Three origins at once, 200 messages each: every member gets all 600,
    each origin's in the order it sent them, none twice."""
    rs, nodes = fleet(3)
    room = "burst"
    members = [nd.client(room) for nd in nodes]
    wait_numsub(rs, nodes[0].prefix, room, 3)
    n = 200

    def pump(nd):
        ctl = Client(nd)
        for k in range(n):
            ctl.send(f"bcast:{room}:M|{nd.name}|{k}")
        for _ in range(n):
            assert ctl.reply(PROPAGATION).startswith("sent:")
        ctl.close()

    threads = [threading.Thread(target=pump, args=(nd,)) for nd in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for m in members:
        got = [d.decode() for _, d in m.recv_n(3 * n, 30)]
        for nd in nodes:
            mine = [g for g in got if g.startswith(f"M|{nd.name}|")]
            assert mine == [f"M|{nd.name}|{k}" for k in range(n)], (
                f"member on {m.node.name}: from {nd.name} got {len(mine)} "
                f"messages, first out of order: "
                f"{next((x for x, k in zip(mine, range(n)) if x != f'M|{nd.name}|{k}'), None)}")
    fence(nodes[0], room, members, "end")


# ---------------------------------------------------------------------------
# Interest
# ---------------------------------------------------------------------------


def test_interest_subscribes_while_a_node_has_members(fleet):
    rs, nodes = fleet(3)
    a, b, c = nodes
    room = "interest"
    ch = channel(a, room)
    assert rs.numsub(ch) == 0

    ma = a.client(room)
    wait_numsub(rs, a.prefix, room, 1)
    ma2 = a.client(room)          # a second member on a: still one
    mb = b.client(room)
    wait_numsub(rs, a.prefix, room, 2)
    assert rs.numsub(ch) == 2
    assert rs.channels(f"{a.prefix}:room:*") == [ch]
    # engine_subscriptions counts room channels (not PREFIX:presence).
    assert a.engine()["engine_subscriptions"] == 1
    assert c.engine()["engine_subscriptions"] == 0

    # c has no member in the room: it does not receive the room's messages.
    # mc is in another room, which a broadcasts to after: Redis delivers
    # what one connection publishes in order, so once mc has that, c would
    # have had the room's messages before it.
    mc = c.client("elsewhere")
    wait_numsub(rs, a.prefix, "elsewhere", 1)
    before = c.engine()["engine_received"]
    for k in range(20):
        assert a.ctl.cmd(f"bcast:{room}:M|{k}") == "sent:2"
    expect_exactly([ma, ma2, mb],
                   [(OP_TEXT, f"M|{k}".encode()) for k in range(20)])
    assert a.ctl.cmd("bcast:elsewhere:M|marker") == "sent:0"
    assert mc.recv(PROPAGATION) == (OP_TEXT, b"M|marker")
    assert c.engine()["engine_received"] - before == 1, \
        "a node without members received the room's messages"

    # A broadcast from c (no members there) still reaches a and b.
    assert c.ctl.cmd(f"bcast:{room}:M|from c") == "sent:0"
    expect_exactly([ma, ma2, mb], [(OP_TEXT, b"M|from c")])

    # Leaving and closing unsubscribe, the last member of a node first.
    mb.leave(room)
    wait_numsub(rs, a.prefix, room, 1)
    ma.close()
    assert rs.numsub(ch) == 1     # ma2 is still there
    ma2.raw.abort()
    wait_numsub(rs, a.prefix, room, 0)
    wait_until(lambda: a.engine()["engine_subscriptions"] == 0, PROPAGATION)
    assert rs.channels(f"{a.prefix}:room:*") == [channel(a, "elsewhere")]
    # And nobody gets what is published to the room now.
    assert b.ctl.cmd(f"bcast:{room}:M|nobody") == "sent:0"
    assert mb.cmd(f"join:{room}") == f"joined:{room}"
    wait_numsub(rs, a.prefix, room, 1)
    fence(b, room, [mb], "after")


# ---------------------------------------------------------------------------
# Presence and counts
# ---------------------------------------------------------------------------


def agree(nodes, room, count, entries):
    return all(nd.ccount(room)[1] == count and
               nd.presence(room) == sorted(entries) for nd in nodes)


def wait_agree(nodes, room, count, entries, timeout=PROPAGATION):
    wait_until(lambda: agree(nodes, room, count, entries), timeout,
               what=lambda: "every node to show %d members and %s; they show %s"
               % (count, sorted(entries),
                  [(nd.name, nd.ccount(room), nd.presence(room))
                   for nd in nodes]))


def wait_events(nd, room, joins=(), leaves=(), timeout=PROPAGATION):
    acc = [0, set(), set()]

    def step():
        calls, j, l = nd.events(room)
        acc[0] += calls
        acc[1] |= j
        acc[2] |= l
        return acc[1] >= set(joins) and acc[2] >= set(leaves)
    wait_until(step, timeout, what=lambda: f"on_presence on {nd.name}: "
               f"joins {sorted(joins)}, leaves {sorted(leaves)}; got {acc}")
    return acc


def test_presence_and_counts_agree_after_joins_updates_leaves_closes(fleet):
    rs, nodes = fleet(3)
    a, b, c = nodes
    room = "lobby"
    ma = a.client(room, "ada")
    mb = b.client(room, "bob")
    mc = c.client(room, "cy")
    mc2 = c.client(room)          # a member that is not tracked
    entries = [("a", "ada"), ("b", "bob"), ("c", "cy")]
    wait_agree(nodes, room, 4, entries)
    assert [nd.ccount(room)[0] for nd in nodes] == [1, 1, 2]
    for nd in nodes:
        wait_events(nd, room, joins=entries)

    # A meta update is a leave and a join of the same entry elsewhere.
    assert mb.cmd(f"track:{room}:bobby") == f"tracked:{room}"
    entries = [("a", "ada"), ("b", "bobby"), ("c", "cy")]
    wait_agree(nodes, room, 4, entries)
    wait_events(a, room, joins=[("b", "bobby")])

    # untrack: the member still counts, the entry is gone.
    assert ma.cmd(f"untrack:{room}") == "untracked:true"
    entries = [("b", "bobby"), ("c", "cy")]
    wait_agree(nodes, room, 4, entries)
    wait_events(c, room, leaves=[("a", "ada")])

    # leave: no longer counted, still present (joining and tracking are
    # separate, as with the mesh).
    mc.leave(room)
    wait_agree(nodes, room, 3, entries)

    # close (RST, no close frame): neither counted nor present.
    mb.raw.abort()
    entries = [("c", "cy")]
    wait_agree(nodes, room, 2, entries)
    wait_events(a, room, leaves=[("b", "bobby")])
    mc.close()
    wait_agree(nodes, room, 2, [])
    wait_events(a, room, leaves=[("c", "cy")])
    mc2.close()
    ma.close()
    wait_agree(nodes, room, 0, [])


def test_a_node_started_later_sees_the_presence_already_there(fleet):
    rs, nodes = fleet(2)
    a, b = nodes
    room = "late"
    keep = [a.client(room, "ada"), b.client(room, "bob")]
    wait_agree(nodes, room, 2, [("a", "ada"), ("b", "bob")])
    c = fleet.start("c", rs, a.prefix)
    wait_until(lambda: c.engine().get("engine_connected") == 1,
               CONNECT_TIMEOUT)
    wait_agree([a, b, c], room, 2, [("a", "ada"), ("b", "bob")])
    assert keep


def test_a_node_that_connects_has_the_others_state_within_2s(fleet):
    """A new node (or one back after a Redis restart) says HELLO, every
    node answers with its full state at once, and it reads the node keys:
    it should see the fleet's counts and presence within milliseconds, not
    at the next refresh."""
    rs, (a, b) = fleet(2)
    room = "hello"
    keep = [a.client(room, "ada"), b.client(room, "bob")]
    wait_agree([a, b], room, 2, [("a", "ada"), ("b", "bob")])
    c = fleet.start("c", rs, a.prefix)
    wait_until(lambda: c.engine().get("engine_connected") == 1,
               CONNECT_TIMEOUT)
    wait_agree([c], room, 2, [("a", "ada"), ("b", "bob")], timeout=2.0)
    assert keep


def node_key(nd):
    return f"{nd.prefix}:node:{nd.name}"


def test_kill9_of_a_node_expires_its_presence(fleet):
    rs, nodes = fleet(3)
    a, b, c = nodes
    room = "doomed"
    keep = [a.client(room, "ada"), b.client(room, "bob"),
            c.client(room, "cy"), c.client(room, "cyd")]
    entries = [("a", "ada"), ("b", "bob"), ("c", "cy"), ("c", "cyd")]
    wait_agree(nodes, room, 4, entries)
    # Every node announces itself in a key that expires.
    ttl = rs.cmd("PTTL", node_key(c))
    assert ttl > 0, f"{node_key(c)} has no TTL (PTTL {ttl}); keys " \
        f"{rs.cmd('KEYS', a.prefix + ':*')}"
    for nd in (a, b):
        wait_events(nd, room, joins=[("c", "cy"), ("c", "cyd")])

    t0 = time.monotonic()
    c.kill9()
    limit = ttl / 1000.0 + EXPIRY_SLACK
    wait_agree([a, b], room, 2, [("a", "ada"), ("b", "bob")], timeout=limit)
    took = time.monotonic() - t0
    for nd in (a, b):
        wait_events(nd, room, leaves=[("c", "cy"), ("c", "cyd")])
    wait_until(lambda: rs.cmd("EXISTS", node_key(c)) == 0, limit)
    # The living nodes keep their keys alive.
    assert rs.cmd("PTTL", node_key(a)) > 0
    assert rs.cmd("PTTL", node_key(b)) > 0
    print(f"presence of the killed node gone after {took:.1f} s "
          f"(TTL {ttl / 1000.0:.1f} s)")
    # And the two left still talk to each other.
    assert a.ctl.cmd(f"bcast:{room}:M|still here") == "sent:1"
    assert keep[1].recv(PROPAGATION) == (OP_TEXT, b"M|still here")


# ---------------------------------------------------------------------------
# Failure: Redis killed and restarted
# ---------------------------------------------------------------------------


def test_redis_killed_and_restarted_under_traffic(fleet):
    rs, nodes = fleet(3)
    a, b, c = nodes
    room = "storm"
    ma = a.client(room, "ada")
    mb = b.client(room, "bob")
    mc = c.client(room, "cy")
    wait_agree(nodes, room, 3, [("a", "ada"), ("b", "bob"), ("c", "cy")])
    wait_numsub(rs, a.prefix, room, 3)
    before = {nd.name: nd.engine() for nd in nodes}

    # Traffic: a's control connection broadcasts M|t|k as fast as a answers,
    # until stopped; a's own member must get every one of them.
    stop = threading.Event()
    sent = []
    errors = []

    def pump():
        try:
            ctl = Client(a)
            k = 0
            while not stop.is_set():
                r = ctl.cmd(f"bcast:{room}:M|t|{k}", PROPAGATION)
                assert r == "sent:1", r
                sent.append(k)
                k += 1
                time.sleep(0.002)
            ctl.close()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=pump)
    t.start()
    try:
        wait_until(lambda: len(sent) >= 50 or errors, PROPAGATION)
        rs.kill9()
        for nd in nodes:
            wait_until(lambda: nd.engine()["engine_connected"] == 0,
                       CONNECT_TIMEOUT,
                       what=lambda: f"{nd} to notice Redis is gone: "
                                    f"{nd.engine()}")
        # Redis is down: a's local delivery goes on, the cross-node copies
        # are dropped and counted.
        n_down = len(sent)
        wait_until(lambda: len(sent) >= n_down + 100 or errors, PROPAGATION)
        wait_until(lambda: a.engine()["engine_dropped"] >
                   before["a"]["engine_dropped"], PROPAGATION,
                   what=lambda: f"a to count drops: {a.engine()}")
        # The local ones from b and c too, and nobody crashed.
        assert b.ctl.cmd(f"bcast:{room}:M|b-down") == "sent:1"
        assert c.ctl.cmd(f"bcast:{room}:M|c-down") == "sent:1"
        for nd in nodes:
            assert nd.srv.alive(), f"{nd} died while Redis was down"
        rs.start()
        for nd in nodes:
            wait_until(lambda: nd.engine()["engine_connected"] == 1,
                       CONNECT_TIMEOUT,
                       what=lambda: f"{nd} to reconnect: {nd.engine()}")
        # Every node resubscribed (the new Redis knows nothing).
        wait_numsub(rs, a.prefix, room, 3)
        n_up = len(sent)
        wait_until(lambda: len(sent) >= n_up + 50 or errors, PROPAGATION)
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    last = sent[-1]

    # Every node re-published its presence: its key is back in the new
    # Redis, and every node sees every entry.
    for nd in nodes:
        wait_until(lambda: rs.cmd("EXISTS", node_key(nd)) == 1, PROPAGATION,
                   what=lambda: f"{node_key(nd)} in the restarted Redis: "
                                f"{rs.cmd('KEYS', a.prefix + ':*')}")
    wait_agree(nodes, room, 3, [("a", "ada"), ("b", "bob"), ("c", "cy")])
    after = {nd.name: nd.engine() for nd in nodes}
    for nd in nodes:
        s0, s1 = before[nd.name], after[nd.name]
        assert s1["engine_reconnects"] > s0["engine_reconnects"], (nd, s1)
        assert s1["engine_subscriptions"] == 1, (nd, s1)
    assert after["a"]["engine_dropped"] > before["a"]["engine_dropped"]

    # a's member got every message a sent, once and in order.
    def drain_until(member, final):
        got = []
        deadline = time.monotonic() + 30
        while True:
            op, d = member.recv(max(0.01, deadline - time.monotonic()))
            got.append(d.decode())
            if d == final:
                return got

    assert a.ctl.cmd(f"bcast:{room}:M|final") == "sent:1"
    got_a = drain_until(ma, b"M|final")
    assert [g for g in got_a if g.startswith("M|t|")] == \
        [f"M|t|{k}" for k in range(last + 1)], "a's local delivery lost or " \
        "repeated messages while Redis was away"
    # b and c got a subsequence (at most once), in order, and the messages
    # sent after the reconnect; never one twice.
    for m, own in ((mb, "M|b-down"), (mc, "M|c-down")):
        got = drain_until(m, b"M|final")
        assert own in got, f"{m.node.name} lost its local delivery"
        ks = [int(g.split("|")[2]) for g in got if g.startswith("M|t|")]
        assert ks == sorted(set(ks)), \
            f"{m.node.name}: duplicates or disorder around the outage: {ks}"
        assert len(ks) < last + 1, \
            f"{m.node.name} got every message though Redis was down"
        missing = sorted(set(range(n_up, last + 1)) - set(ks))
        assert not missing, f"{m.node.name} missed messages sent after " \
            f"every node had resubscribed: {missing[:10]}"
    # Nothing after the final message (no late duplicates).
    fence(b, room, [ma, mb, mc], "end")
    for nd in nodes:
        assert nd.srv.alive()


def test_a_node_started_while_redis_is_down_connects_when_it_comes(
        fleet, server, redis_server):  # noqa: F811
    rs = redis_server(start=False)
    prefix = "t" + uuid.uuid4().hex[:8]
    nd = RNode("a", server(script=SCRIPT, args=engine_args(rs, "a", prefix),
                           ready_timeout=CONNECT_TIMEOUT), prefix)
    m = nd.client("early", "ada")
    assert nd.engine()["engine_connected"] == 0
    # Local delivery works without Redis.
    assert nd.ctl.cmd("bcast:early:M|local") == "sent:1"
    assert m.recv(PROPAGATION) == (OP_TEXT, b"M|local")
    rs.start()
    wait_until(lambda: nd.engine()["engine_connected"] == 1, CONNECT_TIMEOUT,
               what=lambda: f"{nd} to connect once Redis is up: "
                            f"{nd.engine()}")
    wait_numsub(rs, prefix, "early", 1)
    other = fleet.start("b", rs, prefix)
    wait_until(lambda: other.engine().get("engine_connected") == 1,
               CONNECT_TIMEOUT)
    wait_agree([nd, other], "early", 1, [("a", "ada")])


# ---------------------------------------------------------------------------
# Startup: password, usage
# ---------------------------------------------------------------------------


def start_fails(args, timeout=20):
    """Runs the binary expecting it to exit by itself; returns the
    CompletedProcess."""
    p = run_bin(["--listen", f"127.0.0.1:{free_port()}", *args, SCRIPT],
                timeout=timeout)
    return p


def test_wrong_password_is_a_clear_error_at_startup(redis_server):  # noqa
    rs = redis_server(password="s3cret")
    p = start_fails(["--engine", rs.url, "--node", "a",
                     "--redis-password", "wrong"])
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, (p.returncode, err)
    lines = [l for l in err.splitlines()
             if "redis" in l.lower() and
             any(w in l.lower() for w in ("password", "auth"))]
    assert len(lines) == 1, f"expected one line about the password: {err}"
    assert "s3cret" not in err and "wrong" not in lines[0].split("redis")[0]
    # No password at all, against a server that wants one: the same.
    p = start_fails(["--engine", rs.url, "--node", "a"])
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, (p.returncode, err)
    assert any("auth" in l.lower() or "password" in l.lower()
               for l in err.splitlines()), err


@pytest.mark.parametrize("how", ["flag", "env", "url"])
def test_right_password_works(server, redis_server, how, monkeypatch):  # noqa
    rs = redis_server(password="s3cret")
    prefix = "t" + uuid.uuid4().hex[:8]
    args = ["--node", "a", "--redis-prefix", prefix]
    if how == "flag":
        args += ["--engine", rs.url, "--redis-password", "s3cret"]
    elif how == "env":
        monkeypatch.setenv("MOONROOM_REDIS_PASSWORD", "s3cret")
        args += ["--engine", rs.url]
    else:
        args += ["--engine", f"redis://:s3cret@127.0.0.1:{rs.port}/0"]
    nd = RNode("a", server(script=SCRIPT, args=args,
                           ready_timeout=CONNECT_TIMEOUT), prefix)
    wait_until(lambda: nd.engine()["engine_connected"] == 1, CONNECT_TIMEOUT)
    m = nd.client("pw")
    wait_numsub(rs, prefix, "pw", 1)
    assert "s3cret" not in nd.srv.log(), "the password is in the log"
    assert m


def test_engine_with_mesh_options_is_a_usage_error(redis_server):  # noqa
    rs = redis_server(start=False)
    for extra in (["--peer", "127.0.0.1:9"],
                  ["--cluster-listen", f"127.0.0.1:{free_port()}",
                   "--cookie", "x"]):
        p = start_fails(["--engine", rs.url, *extra])
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode == 2, (extra, p.returncode, err)
        assert "--engine" in err, err
        assert len(err.strip().splitlines()) == 1, err
    for url in ("http://127.0.0.1:6379", "redis://", "redis://host:notaport",
                "redis://127.0.0.1:6379/x"):
        p = start_fails(["--engine", url])
        assert p.returncode == 2, (url, p.returncode, p.stderr)


# ---------------------------------------------------------------------------
# Counters and the channel layout
# ---------------------------------------------------------------------------


ENGINE_KEYS = ("engine_connected", "engine_reconnects", "engine_subscriptions",
               "engine_published", "engine_received", "engine_dropped")


def test_counters_in_stats_and_metrics(fleet):
    port = free_port()
    rs, (a, b) = fleet(2)
    room = "metrics"
    mb = b.client(room)
    wait_numsub(rs, a.prefix, room, 1)
    for k in range(5):
        assert a.ctl.cmd(f"bcast:{room}:M|{k}") == "sent:0"
    expect_exactly([mb], [(OP_TEXT, f"M|{k}".encode()) for k in range(5)])
    sa, sb = a.engine(), b.engine()
    for k in ENGINE_KEYS:
        assert k in sa and k in sb, (k, sa)
    assert sa["engine_published"] >= 5 and sb["engine_received"] >= 5
    assert sb["engine_subscriptions"] == 1 and sa["engine_subscriptions"] == 0

    c = fleet.start("c", rs, a.prefix,
                    extra=["--admin-listen", f"127.0.0.1:{port}"])
    wait_until(lambda: c.engine().get("engine_connected") == 1,
               CONNECT_TIMEOUT)
    from test_admin import get
    resp = get(port, "/metrics")
    assert resp.status == 200
    text = resp.body.decode()
    for k in ENGINE_KEYS:
        assert f"moonroom_{k}" in text, f"/metrics lacks moonroom_{k}"


def test_default_prefix_and_channel_layout(server, redis_server):  # noqa
    rs = redis_server()
    srv = server(script=SCRIPT, args=["--engine", rs.url, "--node", "solo"],
                 ready_timeout=CONNECT_TIMEOUT)
    nd = RNode("solo", srv, "moonroom")
    wait_until(lambda: nd.engine()["engine_connected"] == 1, CONNECT_TIMEOUT)
    m = nd.client("lobby", "ada")
    wait_until(lambda: "moonroom:room:lobby" in rs.channels("moonroom:*"),
               PROPAGATION, what=lambda: f"channels {rs.channels()}")
    assert rs.cmd("PTTL", "moonroom:node:solo") > 0
    assert m


# ---------------------------------------------------------------------------
# What else may arrive on a room's channel
# ---------------------------------------------------------------------------


def room_envelope(origin, room, msg, binary=False, instance=0x1234):
    """A ROOM envelope as core/redis_proto.h defines it: 'M', version 1,
    kind ROOM, the origin, the instance, then one wire.h ROOM_TEXT or
    ROOM_BINARY frame with its u32 length."""
    origin, room = origin.encode(), room.encode()
    body = bytes([0x1F if binary else 0x1E]) + \
        struct.pack("!H", len(room)) + room + struct.pack("!I", len(msg)) + msg
    return (b"M\x01\x01" + bytes([len(origin)]) + origin +
            struct.pack("!Q", instance) + struct.pack("!I", len(body)) + body)


def test_other_publishers_and_junk_on_a_room_channel(fleet):
    """Anything that can PUBLISH to Redis can reach a room, so a node reads
    what comes on a room's channel as carefully as a cluster link: a
    well-formed envelope from a process that is no node is delivered (under
    this node's own name too, from another instance: a node drops only its
    own instance's copies), and junk is dropped, counted in
    engine_malformed, without harm: a room's channel carries that room's
    broadcasts only."""
    rs, (a,) = fleet(1)
    room = "open"
    m = a.client(room)
    wait_numsub(rs, a.prefix, room, 1)
    ch = channel(a, room)

    assert rs.cmd("PUBLISH", ch, room_envelope("backend", room, b"M|hi")) == 1
    assert m.recv(PROPAGATION) == (OP_TEXT, b"M|hi")
    assert rs.cmd("PUBLISH", ch, room_envelope("backend", room, b"\x00\xff",
                                               binary=True)) == 1
    assert m.recv(PROPAGATION) == (OP_BINARY, b"\x00\xff")
    assert rs.cmd("PUBLISH", ch, room_envelope("a", room, b"M|twin")) == 1
    assert m.recv(PROPAGATION) == (OP_TEXT, b"M|twin")

    before = a.engine()
    junk = [b"", b"hello", b"M\x01\x01", b"M\x02\x01\x01x" + bytes(8),
            room_envelope("x", room, b"\xff\xfe not UTF-8"),  # as text
            room_envelope("x", room, b"M|cut")[:-2],
            room_envelope("x", room, b"M|tail") + b"extra",
            room_envelope("", room, b"M|no origin"),
            room_envelope("x", "other", b"M|another room's"),
            b"M\x01\x03\x01x" + bytes(8),  # a heartbeat on a room channel
            bytes(range(256)) * 4]
    for j in junk:
        assert rs.cmd("PUBLISH", ch, j) == 1
    # The node is alive, its member got none of it, and it still delivers.
    assert rs.cmd("PUBLISH", ch, room_envelope("backend", room, b"M|after")) \
        == 1
    assert m.recv(PROPAGATION) == (OP_TEXT, b"M|after"), "junk was delivered"
    after = a.engine()
    assert after["engine_malformed"] - before["engine_malformed"] == \
        len(junk), (before, after)
    assert a.srv.alive()
    # A publisher that is no node is not taken for a peer.
    assert "node backend is up" not in a.srv.log(), a.srv.log()
