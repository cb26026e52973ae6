"""Cluster-wide counts and presence (issue 11) on three real nodes: counts
and presence agree on every node after joins, leaves, meta updates and
closes; on_presence reports net joins and leaves; kill -9 of a node removes
its entries with leave events on the others; a restart resynchronises; a
join storm converges in a handful of batched frames.

The nodes run scripts/presence.lua (command-driven, see its header) and are
joined with --cluster-listen/--peer as in test_cluster.py. Every wait is
bounded (wait_until)."""

import base64
import json
import os
import selectors
import signal
import socket
import time

import pytest

from conftest import SCRIPTS, RawClient, Server, wait_until
from test_cluster import COOKIE, MESH_TIMEOUT, REJOIN_TIMEOUT, port_free

SCRIPT = SCRIPTS / "presence.lua"


class Ctl:
    """A command connection to one node."""

    def __init__(self, port):
        self.raw = RawClient.connect(port)

    def cmd(self, text, timeout=10.0):
        self.raw.send_text(text)
        return self.raw.recv_message(timeout)[1].decode("utf-8")

    def json(self, text):
        return json.loads(self.cmd(text))

    def close(self):
        self.raw.close()


class PNode:
    def __init__(self, name, srv, cport):
        self.name, self.srv, self.cport = name, srv, cport
        self.ctl = Ctl(srv.port)

    @property
    def port(self):
        return self.srv.port

    def count(self, room):
        _, local, cluster = self.ctl.cmd(f"count:{room}").split(":")
        return int(local), int(cluster)

    def presence(self, room):
        return [(e["node"], e["name"])
                for e in self.ctl.json(f"presence:{room}")]

    def events(self, room):
        """on_presence calls since the last events(): (calls, joins,
        leaves), joins and leaves as sets of (node, name)."""
        r = self.ctl.json(f"events:{room}")
        as_set = lambda l: {(e["node"], e["name"]) for e in (l or [])}
        return r["calls"], as_set(r["joins"]), as_set(r["leaves"])

    def stats(self):
        return self.ctl.json("stats")


@pytest.fixture
def nodes(server, tmp_path, request):
    """Factory: nodes(3) -> three linked PNodes a, b, c (b and c dial a)."""
    made = []

    def start(name, peers=(), cport=None):
        from test_cluster import ClusterEnv
        cport = cport or free_cluster_port(made)
        args = ["--cluster-listen", f"127.0.0.1:{cport}", "--node", name,
                "--cookie", COOKIE]
        for p in peers:
            args += ["--peer", f"127.0.0.1:{p.cport}"]
        srv = server(script=SCRIPT, args=args)
        node = PNode(name, srv, cport)
        made.append(node)
        return node

    def factory(n=3):
        first = start("a")
        rest = [start(chr(ord("a") + i), peers=[first]) for i in range(1, n)]
        all_nodes = [first] + rest
        # The mesh is up when every node holds the others' full state.
        wait_until(lambda: all(nd.stats()["resyncs"] >= n - 1
                               for nd in all_nodes), MESH_TIMEOUT,
                   what="every node resynchronised with every other")
        return all_nodes

    factory.start = start
    yield factory
    for nd in made:
        try:
            nd.ctl.close()
        except OSError:
            pass


def free_cluster_port(made):
    from conftest import free_port
    used = {n.cport for n in made} | {n.port for n in made}
    while True:
        p = free_port()
        if p not in used:
            return p


def wait_events(nd, room, joins=(), leaves=(), timeout=5.0):
    """Collects nd's on_presence reports for room (they come up to one
    batch after the state changed) until they hold joins and leaves.
    Returns (calls, joins, leaves) collected."""
    acc = [0, set(), set()]

    def step():
        calls, j, l = nd.events(room)
        acc[0] += calls
        acc[1] |= j
        acc[2] |= l
        return acc[1] >= set(joins) and acc[2] >= set(leaves)
    try:
        wait_until(step, timeout)
    except AssertionError:
        raise AssertionError(
            f"waiting for {len(joins)} joins and {len(leaves)} leaves on "
            f"{nd.name}: got {acc[0]} calls, joins {sorted(acc[1])[:5]}, leaves "
            f"{sorted(acc[2])[:5]}")
    return acc[0], acc[1], acc[2]


def agree(nodes, room, count, entries):
    """Every node sees count members cluster-wide and exactly entries."""
    return all(nd.count(room)[1] == count and
               sorted(nd.presence(room)) == sorted(entries) for nd in nodes)


def test_counts_and_presence_agree_after_joins_updates_and_closes(nodes):
    a, b, c = nodes(3)
    ca, cb, cc = Ctl(a.port), Ctl(b.port), Ctl(c.port)
    for ctl, name in ((ca, "ada"), (cb, "bob"), (cc, "cy")):
        assert ctl.cmd("join:lobby") == "joined:lobby"
        assert ctl.cmd(f"track:lobby:{name}") == "tracked:lobby"
    want = [("a", "ada"), ("b", "bob"), ("c", "cy")]
    wait_until(lambda: agree([a, b, c], "lobby", 3, want), 5.0,
               what="3 members and 3 entries on every node")
    for nd in (a, b, c):
        assert nd.count("lobby") == (1, 3)
        calls, joins, leaves = wait_events(nd, "lobby", want)
        assert joins == set(want) and leaves == set(), nd.name
        assert 1 <= calls <= 3  # batched: at most one per node's change

    # A meta update is a leave of the old meta and a join of the new.
    assert cb.cmd("track:lobby:bobby") == "tracked:lobby"
    want = [("a", "ada"), ("b", "bobby"), ("c", "cy")]
    wait_until(lambda: agree([a, b, c], "lobby", 3, want), 5.0)
    for nd in (a, b, c):
        _, joins, leaves = wait_events(nd, "lobby", {("b", "bobby")},
                                       {("b", "bob")})
        assert (joins, leaves) == ({("b", "bobby")}, {("b", "bob")})

    # An untrack leaves the count alone; a leave leaves the presence alone.
    assert cc.cmd("untrack:lobby") == "untracked:true"
    assert cc.cmd("untrack:lobby") == "untracked:false"
    assert ca.cmd("leave:lobby") == "left:lobby"
    want = [("a", "ada"), ("b", "bobby")]
    wait_until(lambda: agree([a, b, c], "lobby", 2, want), 5.0)

    # A close untracks everywhere, with a leave event on the others.
    cb.close()
    want = [("a", "ada")]
    wait_until(lambda: agree([a, b, c], "lobby", 1, want), 5.0)
    # a hears of the leave (it has an entry in lobby), and so does c: its
    # connection untracked itself but is still a member of lobby.
    assert ("b", "bobby") in wait_events(a, "lobby", (), {("b", "bobby")})[2]
    assert ("b", "bobby") in wait_events(c, "lobby", (), {("b", "bobby")})[2]
    ca.close()
    cc.close()
    wait_until(lambda: agree([a, b, c], "lobby", 0, []), 5.0)


def test_meta_over_the_limit_is_refused_and_counted(nodes):
    a, b = nodes(2)
    ctl = Ctl(a.port)
    assert ctl.cmd("track:r:" + "x" * 600).startswith(
        "refused:meta is ") and "--max-presence-meta (512)" in ctl.cmd(
            "track:r:" + "y" * 600)
    assert a.stats()["refused"] == 2
    assert a.presence("r") == [] and b.presence("r") == []
    assert "ws.track of conn" in a.srv.log()


def test_kill9_removes_entries_with_leaves_and_restart_resyncs(nodes):
    a, b, c = nodes(3)
    ctls = {}
    for nd, name in ((a, "ada"), (b, "bob"), (c, "cy")):
        ctls[nd.name] = Ctl(nd.port)
        ctls[nd.name].cmd("join:lobby")
        ctls[nd.name].cmd(f"track:lobby:{name}")
    want = [("a", "ada"), ("b", "bob"), ("c", "cy")]
    wait_until(lambda: agree([a, b, c], "lobby", 3, want), 5.0)
    # The joins are reported (a batch after the state changed) before the
    # kill: a join and a leave within one batch would cancel out.
    for nd in (a, b):
        wait_events(nd, "lobby", want)

    c.srv.signal(signal.SIGKILL)
    c.srv.wait(5)
    c.srv.expect_exit = True
    t0 = time.monotonic()
    want = [("a", "ada"), ("b", "bob")]
    # Within the link's heartbeat timeout (5 s of silence) plus a beat.
    wait_until(lambda: agree([a, b], "lobby", 2, want), 8.0,
               what="c's entries removed")
    for nd in (a, b):
        assert wait_events(nd, "lobby", (), {("c", "cy")})[2] == {
            ("c", "cy")}
        assert nd.stats()["drops"] >= 1
    assert time.monotonic() - t0 < 8.0

    # The restarted c starts empty and learns everyone's state; a and b
    # learn its new entries from its full state.
    wait_until(lambda: port_free(c.cport) and port_free(c.srv.port), 5.0)
    srv = Server(c.srv.args, c.srv.script, c.srv.log_path.with_name(
        "c-restart.log"), c.srv.port)
    srv.start()
    try:
        c2 = PNode("c", srv, c.cport)
        wait_until(lambda: c2.count("lobby") == (0, 2) and
                   sorted(c2.presence("lobby")) == want, REJOIN_TIMEOUT,
                   what="restarted c resynchronised")
        ctl = Ctl(c2.port)
        ctl.cmd("join:lobby")
        ctl.cmd("track:lobby:cy2")
        want3 = want + [("c", "cy2")]
        wait_until(lambda: agree([a, b, c2], "lobby", 3, want3), 5.0)
        for nd in (a, b):
            wait_events(nd, "lobby", {("c", "cy2")})
        ctl.close()
        c2.ctl.close()
    finally:
        srv.stop()


def _storm(port, room, n, prefix):
    """Opens n WebSocket connections to port that join room and track
    themselves (scripts/presence.lua's on_connect), all requests written
    before any answer is read. Returns the sockets (the caller closes)."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /?room={room}&name={prefix}{i} HTTP/1.1\r\n"
                   "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        socks.append(s)
    for s in socks:  # every upgrade answered 101 (read the head only)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, "closed during the upgrade"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return socks


def test_join_storm_converges_in_batched_frames(nodes):
    a, b, c = nodes(3)
    before = {nd.name: nd.stats() for nd in (a, b, c)}
    per_node = 1700
    total = 3 * per_node
    socks = []
    t0 = time.monotonic()
    try:
        for nd in (a, b, c):
            socks += _storm(nd.port, "storm", per_node, nd.name)
        opened = time.monotonic() - t0
        wait_until(lambda: all(nd.count("storm") == (per_node, total)
                               for nd in (a, b, c)), 10.0,
                   what="cluster count converged")
        wait_until(lambda: all(len(nd.presence("storm")) == total
                               for nd in (a, b, c)), 10.0,
                   what="presence converged")
        converged = time.monotonic() - t0
        after = {nd.name: nd.stats() for nd in (a, b, c)}
        frames = sum(after[k]["counts_out"] + after[k]["presence_out"] -
                     before[k]["counts_out"] - before[k]["presence_out"]
                     for k in after)
        # One frame per change would be 2 frames x 2 links per join,
        # 20,400 here; batching sends a few per 50 ms per link.
        print(f"storm: {total} joins opened in {opened:.2f}s, converged "
              f"in {converged:.2f}s, {frames} frames ({frames / total:.4f} "
              f"per join)")
        assert frames < total / 10, frames
        # Every node got on_presence in batches, not once per join. A node
        # hears of the joins from the moment it has members in the room
        # itself: c, stormed last, hears of all of its own.
        for nd in (a, b, c):
            own = {(nd.name, f"{nd.name}{i}") for i in range(per_node)}
            calls, joins, leaves = wait_events(nd, "storm", own)
            assert not leaves and joins <= set(nd.presence("storm"))
            assert calls < total / 20, calls
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: all(nd.count("storm") == (0, 0) and
                           nd.presence("storm") == [] for nd in (a, b, c)),
               10.0, what="storm closed everywhere")
