"""The cluster: node links (--cluster-listen, --peer, --node, --cookie),
full mesh from one seed, reconnection, cookie authentication, interest
routing of room broadcasts, exactly-once delivery, and robustness of the
cluster port against garbage.

Every test runs real moonroom processes on 127.0.0.1 with the
command-driven handler scripts/cluster.lua and WebSocket clients (RawClient)
on each node. Messages the tests broadcast start with "M|" (or are binary),
which is how a Client tells them from command replies.

Timing promises from the contract, on loopback:
  * the mesh forms within 5 s of start;
  * a join is effective cluster-wide within 1 s;
  * a restarted node is back in the mesh within 15 s.
"""

import collections
import hashlib
import hmac
import os
import random
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (fill_buffer, sanitized_build, OP_BINARY, OP_TEXT, SCRIPTS, PeerClosed, RawClient,
                      Server, ServerStartError, free_port, poll, require_bin,
                      wait_until)

CLUSTER_SCRIPT = SCRIPTS / "cluster.lua"
COOKIE = "secret"

MESH_TIMEOUT = 5.0       # mesh forms within 5 s of start
JOIN_PROPAGATION = 1.0   # a join is effective cluster-wide within 1 s
REJOIN_TIMEOUT = 15.0    # a restarted node is back within 15 s
# How long the tests wait for routing to follow a join or a leave before
# they give up; how long it took is held to JOIN_PROPAGATION separately.
ROUTING_TIMEOUT = 10.0
MAX_MESSAGE = 1 << 20    # the --max-message default

# Cluster wire format (core/wire.h), for the tests that speak it directly.
TAG_HELLO, TAG_CHALLENGE, TAG_AUTH = 0x01, 0x02, 0x03
TAG_PEERS, TAG_INTEREST, TAG_INTEREST_ALL = 0x10, 0x11, 0x12
TAG_PING, TAG_PONG = 0x13, 0x14
TAG_ROOM_TEXT, TAG_ROOM_BINARY = 0x1E, 0x1F
WIRE_VERSION = 1
LABEL_DIALER = b"moonroom-dialer"
LABEL_ACCEPTOR = b"moonroom-acceptor"

ALPHA = "abcdefghijklmnopqrstuvwxyz0123456789"


def big_text(n):
    """The text message cluster.lua's big:ROOM:N broadcasts."""
    body = ALPHA * (n // len(ALPHA) + 1)
    return ("M|big|" + body)[:n].encode("ascii")


def big_binary(n):
    """The binary message cluster.lua's bigbin:ROOM:N broadcasts."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def short(data, n=80):
    return data if len(data) <= n else data[:n] + b"...(%d bytes)" % len(data)


# --------------------------------------------------------------------------
# WebSocket client that separates command replies from room deliveries
# --------------------------------------------------------------------------


class Client:
    """A RawClient on one node. Replies to commands are text that does not
    start with "M|"; everything else (the tests' broadcasts) is a delivery
    and waits in .inbox until recv() takes it."""

    def __init__(self, node):
        self.node = node
        self.raw = RawClient.connect(node.port)
        self.inbox = collections.deque()  # (opcode, bytes)

    @staticmethod
    def is_delivery(op, data):
        return op == OP_BINARY or data.startswith(b"M|")

    def send(self, text):
        self.raw.send_text(text)

    def reply(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            op, data = self.raw.recv_message(
                max(0.01, deadline - time.monotonic()))
            if self.is_delivery(op, data):
                self.inbox.append((op, data))
                continue
            return data.decode("utf-8")

    def cmd(self, text, timeout=5.0):
        self.send(text)
        return self.reply(timeout)

    def join(self, room):
        assert self.cmd(f"join:{room}") == f"joined:{room}"

    def leave(self, room):
        assert self.cmd(f"leave:{room}") == f"left:{room}"

    def recv(self, timeout=5.0):
        """The next delivery: (opcode, bytes). Raises TimeoutError."""
        if self.inbox:
            return self.inbox.popleft()
        deadline = time.monotonic() + timeout
        while True:
            op, data = self.raw.recv_message(
                max(0.01, deadline - time.monotonic()))
            if self.is_delivery(op, data):
                return op, data
            pytest.fail(f"unexpected reply on {self.node.name}: {data!r}")

    def recv_text(self, timeout=5.0):
        op, data = self.recv(timeout)
        assert op == OP_TEXT, f"expected text, got binary {short(data)!r}"
        return data.decode("utf-8")

    def recv_n(self, n, timeout=10.0):
        """Exactly n deliveries (fails naming what did arrive otherwise)."""
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            try:
                got.append(self.recv(max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                pytest.fail(
                    f"client on {self.node.name}: expected {n} messages "
                    f"within {timeout}s, got {len(got)}; last ones: "
                    f"{[short(d) for _, d in got[-5:]]}")
        return got

    def assert_quiet(self, wait=0.5, what="nothing"):
        try:
            op, data = self.recv(wait)
        except TimeoutError:
            return
        pytest.fail(f"client on {self.node.name} expected {what}, got "
                    f"{'binary' if op == OP_BINARY else 'text'} "
                    f"{short(data)!r}")

    def id(self):
        return int(self.cmd("id"))

    def close(self):
        self.raw.close()


# --------------------------------------------------------------------------
# Nodes and the cluster fixture
# --------------------------------------------------------------------------


class Node:
    def __init__(self, env, name, cport, srv):
        self.env = env
        self.name = name
        self.cport = cport
        self.srv = srv
        self._ctl = None

    @property
    def port(self):
        return self.srv.port

    @property
    def caddr(self):
        return f"127.0.0.1:{self.cport}"

    @property
    def ctl(self):
        """A control connection (not in any room) for node/peers/stats."""
        if self._ctl is None:
            self._ctl = self.env.client(self)
        return self._ctl

    def drop_ctl(self):
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None

    def peers_raw(self):
        return self.ctl.cmd("peers")

    def peers(self):
        r = self.peers_raw()
        return r.split(",") if r else []

    def node_name(self):
        return self.ctl.cmd("node")

    def stats(self):
        out = {}
        for part in self.ctl.cmd("stats").split(","):
            if part:
                k, _, v = part.partition("=")
                try:
                    out[k] = int(float(v))
                except ValueError:
                    out[k] = v
        return out

    def stat(self, key):
        s = self.stats()
        assert key in s, f"ws.stats() on {self.name} has no {key}: {s}"
        return s[key]

    def log(self):
        return self.srv.log()

    def alive(self):
        return self.srv.alive()

    def __repr__(self):
        return f"Node({self.name}, ws={self.port}, cluster={self.cport})"


class ClusterEnv:
    def __init__(self, request, server, tmp_path):
        self.request = request
        self.server = server
        self.tmp_path = Path(tmp_path)
        self.clients = []
        self.used_ports = set()
        self.restarts = 0

    def cluster_port(self):
        while True:
            p = free_port()
            if p not in self.used_ports:
                self.used_ports.add(p)
                return p

    def node(self, name, peers=(), cookie=COOKIE, cport=None, extra=(),
             set_name=True):
        """Starts a node. peers: Nodes or "HOST:PORT" strings to dial."""
        cport = cport or self.cluster_port()
        self.used_ports.add(cport)
        args = ["--cluster-listen", f"127.0.0.1:{cport}"]
        for p in peers:
            args += ["--peer", p.caddr if isinstance(p, Node) else p]
        if set_name:
            args += ["--node", name]
        if cookie is not None:
            args += ["--cookie", cookie]
        args += list(extra)
        srv = self.server(script=CLUSTER_SCRIPT, args=args)
        self.used_ports.add(srv.port)
        return Node(self, name, cport, srv)

    def client(self, node):
        c = Client(node)
        self.clients.append(c)
        return c

    def kill(self, node):
        node.drop_ctl()
        node.srv.signal(signal.SIGKILL)
        node.srv.wait(5)

    def restart(self, node, ready_timeout=5.0):
        """Starts the node again with the same arguments and ports. The new
        process is handed to the server fixture, which reaps it."""
        old = node.srv
        last = None
        for _ in range(10):
            self.restarts += 1
            log_path = self.tmp_path / f"{node.name}-restart{self.restarts}.log"
            srv = Server(old.args, old.script, log_path, old.port)
            self.request.node._moonroom_servers.append(srv)
            try:
                srv.start(ready_timeout=ready_timeout)
            except ServerStartError as e:
                srv.expect_exit = True
                srv.stop()
                last = e
                if re.search(r"in use|EADDRINUSE", srv.log(), re.I):
                    # Retry once both ports can be bound again (or after
                    # 3 s: something else may hold one for good).
                    poll(lambda: port_free(old.port) and
                         port_free(node.cport), 3.0)
                    continue
                raise
            node.srv = srv
            node._ctl = None
            return node
        raise last

    def close(self):
        for c in self.clients:
            c.close()
        self.stop_all()

    def stop_all(self, grace=3.0):
        """SIGTERMs every node still running at once and SIGKILLs what is
        left after grace, so teardown costs at most grace seconds in all.
        (test_sigterm_stops_a_clustered_node checks the orderly exit.)
        A node that died on its own is left alone for the server fixture
        to report."""
        running = [s for s in getattr(self.request.node, "_moonroom_servers",
                                      []) if s.alive()]
        for s in running:
            s.expect_exit = True
            try:
                s.proc.send_signal(signal.SIGCONT)
                s.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for s in running:
            try:
                s.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(timeout=5)


@pytest.fixture
def cluster(request, server, tmp_path):
    env = ClusterEnv(request, server, tmp_path)
    yield env
    env.close()


def port_free(port):
    """True when 127.0.0.1:port can be bound (as a listener would)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_mesh(nodes, timeout=MESH_TIMEOUT, start=None):
    """Waits until every node's ws.peers() is exactly the sorted names of
    all the others. Returns the seconds it took (from start, if given)."""
    start = time.monotonic() if start is None else start
    want = {n.name: ",".join(sorted(o.name for o in nodes if o is not n))
            for n in nodes}
    seen = {}

    def formed():
        seen.update({n.name: n.peers_raw() for n in nodes})
        return seen == want

    wait_until(formed, max(0.0, start + timeout - time.monotonic()),
               interval=0.05,
               what=lambda: f"the mesh to form within {timeout}s: "
               f"ws.peers() gave {seen}, expected {want}")
    return time.monotonic() - start


def probe_text(node, k):
    return f"M|probe|{node.name}|{k}"


def await_routing(room, pubs, members, since):
    """Waits until each node in `pubs` routes broadcasts to `room` to just
    the other nodes that have members among `members`, i.e. until the
    interest that joins, leaves or disconnects changed has propagated; and
    holds that to the contract: from `since` (when the change was made) it
    took less than JOIN_PROPAGATION.

    Each node's control connection broadcasts probes into the room with
    cluster.lua's probe command, which says how many peer links each one
    was queued on, until one is forwarded to as many peers as should have
    it. A probe not forwarded so is the node not knowing yet; the last such
    one must have been sent less than JOIN_PROPAGATION after `since`.

    Then every member reads past the last probe of every node in `pubs`
    (which reached them all), so that the tests' own messages come next;
    probes count in the nodes' stats, so take baselines afterwards."""
    last = {}
    for node in pubs:
        want = len({m.node.name for m in members} - {node.name})
        forwarded = []
        stale_at = [None]

        def routed():
            sent_at = time.monotonic()
            k = len(forwarded) + 1
            reply = node.ctl.cmd(f"probe:{room}:{probe_text(node, k)}")
            m = re.fullmatch(r"sent:\d+,forwarded:(\d+)", reply)
            assert m, f"probe on {node.name}: {reply!r}"
            forwarded.append(int(m.group(1)))
            if forwarded[-1] == want:
                return True
            stale_at[0] = sent_at
            return False

        wait_until(routed, ROUTING_TIMEOUT,
                   what=lambda: f"{node.name} to forward broadcasts to room "
                   f"{room!r} to {want} peer(s); the last probes went to "
                   f"{forwarded[-5:]}")
        if stale_at[0] is not None:
            late = stale_at[0] - since
            assert late < JOIN_PROPAGATION, \
                f"{node.name} still forwarded broadcasts to room {room!r} " \
                f"to {forwarded[-2]} peer(s), not {want}, {late:.2f}s after " \
                f"the change (promised: within {JOIN_PROPAGATION}s)"
        last[node.name] = probe_text(node, len(forwarded)).encode()
    for m in members:
        skip_past(m, set(last.values()), "the last probes")


def skip_past(client, marks, what, timeout=10.0):
    """Reads `client`'s deliveries until every message in `marks` (bytes)
    has come; probes (and the marks) are dropped, any other delivery is
    kept for the test, in order."""
    deadline = time.monotonic() + timeout
    missing = set(marks)
    kept = []
    while missing:
        try:
            op, data = client.recv(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            pytest.fail(f"client on {client.node.name}: {what} did not "
                        f"arrive within {timeout}s: missing "
                        f"{sorted(missing)}")
        if data in missing:
            missing.discard(data)
        elif not data.startswith(b"M|probe|"):
            kept.append((op, data))
    client.inbox.extendleft(reversed(kept))


def fence(room, pubs, receivers, tag):
    """Each client in `pubs` broadcasts "M|fence|TAG|i" to `room`, and every
    client in `receivers` reads up to all of them (other deliveries are
    kept for the test). A link carries frames in order and a node handles
    them in order, so once a receiver has a publisher's fence, its node has
    handled everything the publisher's node sent it before: a positive way
    to know that nothing more of that is coming."""
    marks = set()
    for i, p in enumerate(pubs):
        text = f"M|fence|{tag}|{i}"
        assert p.cmd(f"bcast:{room}:{text}").startswith("sent:")
        marks.add(text.encode())
    for r in receivers:
        skip_past(r, marks, f"the fences {tag!r}")


def mesh3(cluster, names=("n1", "n2", "n3")):
    """Three nodes: n1 is the seed, n2 dials n1, n3 dials n1 and n2."""
    n1 = cluster.node(names[0])
    n2 = cluster.node(names[1], peers=[n1])
    n3 = cluster.node(names[2], peers=[n1, n2])
    nodes = [n1, n2, n3]
    wait_mesh(nodes)
    return nodes


def stat_sum(node, *keys):
    s = node.stats()
    for k in keys:
        assert k in s, f"ws.stats() on {node.name} has no {k}: {s}"
    return sum(s[k] for k in keys)


# --------------------------------------------------------------------------
# A hand-driven cluster peer (core/wire.h), for the protocol-level tests
# --------------------------------------------------------------------------


def wire_frame(tag, body=b""):
    return struct.pack("!I", 1 + len(body)) + bytes([tag]) + body


def s16(b):
    if isinstance(b, str):
        b = b.encode("utf-8")
    return struct.pack("!H", len(b)) + b


def auth_mac(cookie, label, nonce_d, nonce_a, from_name, to_name):
    def lp(b):
        if isinstance(b, str):
            b = b.encode("utf-8")
        return struct.pack("!I", len(b)) + b
    msg = lp(label) + nonce_d + nonce_a + lp(from_name) + lp(to_name)
    return hmac.new(cookie.encode(), msg, hashlib.sha256).digest()


def hello_frame(name, addr, nonce, version=WIRE_VERSION):
    return wire_frame(TAG_HELLO, bytes([version]) + s16(name) + s16(addr)
                      + nonce)


def room_frame(room, msg, binary=False):
    if isinstance(msg, str):
        msg = msg.encode("utf-8")
    return wire_frame(TAG_ROOM_BINARY if binary else TAG_ROOM_TEXT,
                      s16(room) + struct.pack("!I", len(msg)) + msg)


def interest_frame(room, add=True):
    return wire_frame(TAG_INTEREST, bytes([1 if add else 0]) + s16(room))


def parse_hello(body):
    version = body[0]
    i = 1
    (n,) = struct.unpack_from("!H", body, i)
    name = body[i + 2:i + 2 + n].decode()
    i += 2 + n
    (n,) = struct.unpack_from("!H", body, i)
    addr = body[i + 2:i + 2 + n].decode()
    i += 2 + n
    nonce = body[i:i + 32]
    assert len(nonce) == 32 and i + 32 == len(body), f"bad HELLO {body!r}"
    return version, name, addr, nonce


def parse_room(body):
    (n,) = struct.unpack_from("!H", body, 0)
    room = body[2:2 + n].decode()
    (m,) = struct.unpack_from("!I", body, 2 + n)
    msg = body[6 + n:]
    assert len(msg) == m, f"bad room frame {body!r}"
    return room, msg


class FakePeer:
    """A TCP connection to a node's cluster port that speaks the wire
    format by hand. PINGs are answered while reading."""

    def __init__(self, node, timeout=5.0):
        self.node = node
        self.sock = socket.create_connection(("127.0.0.1", node.cport),
                                             timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.answer_pings = True
        self.pongs = []

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        fill_buffer(self.sock, self.buf, deadline, "a cluster frame")

    def _next_frame(self, deadline):
        """(tag, body) of the next frame of any kind; answers PINGs and
        records PONGs' tokens in .pongs."""
        while len(self.buf) < 4:
            self._fill(deadline)
        (n,) = struct.unpack_from("!I", self.buf, 0)
        assert 1 <= n <= 64 << 20, f"node sent a frame of length {n}"
        while len(self.buf) < 4 + n:
            self._fill(deadline)
        tag, body = self.buf[4], bytes(self.buf[5:4 + n])
        del self.buf[:4 + n]
        if tag == TAG_PING and self.answer_pings:
            self.send(wire_frame(TAG_PONG, body))
        if tag == TAG_PONG:
            self.pongs.append(body)
        return tag, body

    def recv_frame(self, timeout=5.0):
        """(tag, body) of the next frame other than PING/PONG."""
        deadline = time.monotonic() + timeout
        while True:
            tag, body = self._next_frame(deadline)
            if tag not in (TAG_PING, TAG_PONG):
                return tag, body

    def wait_pong(self, token, timeout=5.0):
        """Reads until a PONG with `token` has come; returns the other
        frames (not PING/PONG) read meanwhile."""
        deadline = time.monotonic() + timeout
        out = []
        while token not in self.pongs:
            try:
                tag, body = self._next_frame(deadline)
            except TimeoutError:
                raise AssertionError(f"no PONG {token.hex()} within "
                                     f"{timeout}s; pongs {self.pongs}")
            if tag not in (TAG_PING, TAG_PONG):
                out.append((tag, body))
        return out

    def sync(self, timeout=10.0):
        """Sends a PING and reads until its PONG; returns the frames read
        meanwhile. The node handles a link's frames in order and queues its
        own on the link in order, so by then it has handled everything we
        sent before, and everything it had queued for us has come."""
        token = os.urandom(8)
        self.send(wire_frame(TAG_PING, token))
        return self.wait_pong(token, timeout)

    def recv_until(self, tag, timeout=5.0):
        """Skips frames until one with tag; returns its body."""
        deadline = time.monotonic() + timeout
        while True:
            t, body = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if t == tag:
                return body

    def wait_eof(self, timeout=3.0):
        """Discards input until the node closes the link. True on EOF/RST."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
                self.buf.clear()
        except PeerClosed:
            return True
        except TimeoutError:
            return False

    def handshake(self, cookie, name, addr):
        """Dials as name; returns the node's (name, addr). Verifies the
        node's proof (mac_a) before sending ours, as a real dialer does."""
        nonce_d = os.urandom(32)
        self.send(hello_frame(name, addr, nonce_d))
        tag, body = self.recv_frame()
        assert tag == TAG_HELLO, f"expected HELLO, got tag {tag:#x} {body!r}"
        version, name_a, addr_a, nonce_a = parse_hello(body)
        assert version == WIRE_VERSION
        tag, body = self.recv_frame()
        assert tag == TAG_CHALLENGE, f"expected CHALLENGE, got tag {tag:#x}"
        want = auth_mac(cookie, LABEL_ACCEPTOR, nonce_d, nonce_a, name_a, name)
        assert body == want, "node's CHALLENGE proof does not verify"
        self.send(wire_frame(TAG_AUTH, auth_mac(
            cookie, LABEL_DIALER, nonce_d, nonce_a, name, name_a)))
        return name_a, addr_a

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def unused_addr():
    """A loopback address nothing listens on (a bound, non-listening
    socket would be better, but a just-freed port is fine for a dial that
    is expected to fail)."""
    return f"127.0.0.1:{free_port()}"


# --------------------------------------------------------------------------
# 1. Exactly-once delivery, per-publisher order
# --------------------------------------------------------------------------


def test_exactly_once_delivery_on_every_node(cluster):
    nodes = mesh3(cluster)
    subs = {n.name: [cluster.client(n), cluster.client(n)] for n in nodes}
    bystanders = {n.name: cluster.client(n) for n in nodes}
    pubs = {n.name: cluster.client(n) for n in nodes}
    for n in nodes:
        for s in subs[n.name]:
            s.join("all")
        bystanders[n.name].join("other")
    await_routing("all", nodes, [s for ss in subs.values() for s in ss],
                  since=time.monotonic())
    before = {n.name: n.stat("cluster_broadcasts_in") for n in nodes}

    count = 50
    for k in range(count):
        for n in nodes:
            pubs[n.name].send(f"bcast:all:M|{n.name}|{k}")
    for n in nodes:
        for k in range(count):
            assert pubs[n.name].reply() == "sent:2", \
                f"broadcast {k} on {n.name}: expected 2 local members"

    total = count * len(nodes)
    for n in nodes:
        for i, s in enumerate(subs[n.name]):
            got = s.recv_n(total, timeout=10)
            texts = [d.decode() for op, d in got]
            assert all(op == OP_TEXT for op, _ in got)
            dupes = [t for t, c in collections.Counter(texts).items() if c > 1]
            assert not dupes, f"subscriber {i} on {n.name} got duplicates: " \
                f"{dupes[:5]}"
            for pub in nodes:
                seq = [int(t.split("|")[2]) for t in texts
                       if t.split("|")[1] == pub.name]
                assert seq == list(range(count)), \
                    f"subscriber {i} on {n.name}: messages from {pub.name} " \
                    f"missing or out of order: {seq}"
    for n in nodes:
        for s in subs[n.name]:
            s.assert_quiet(0.3, "no extra copies")
        bystanders[n.name].assert_quiet(0.05, "nothing for room 'other'")
        for p in pubs.values():
            p.assert_quiet(0.01, "nothing (publishers are not members)")
    # Each node got the other two nodes' 50 broadcasts, each exactly once.
    for n in nodes:
        got = n.stat("cluster_broadcasts_in") - before[n.name]
        assert got == count * (len(nodes) - 1), \
            f"{n.name}: cluster_broadcasts_in grew by {got}, expected " \
            f"{count * (len(nodes) - 1)} (one per remote broadcast)"
    for n in nodes:
        assert n.alive()


# --------------------------------------------------------------------------
# 2. broadcast_except across nodes
# --------------------------------------------------------------------------


def test_broadcast_except_across_nodes(cluster):
    n1, n2, n3 = mesh3(cluster)
    # The first room members on n1 and n2 are opened in the same order, so
    # they tend to get equal connection ids: a forwarded "except" that
    # carried the sender's id would then wrongly skip the member on n2.
    sender = cluster.client(n1)
    r2 = cluster.client(n2)
    local = cluster.client(n1)
    r3 = cluster.client(n3)
    for c in (sender, local, r2, r3):
        c.join("ex")
    joined = time.monotonic()
    ids = (sender.id(), r2.id())
    print(f"connection ids: sender on n1 {ids[0]}, member on n2 {ids[1]}")
    await_routing("ex", [n1, n3], [sender, local, r2, r3], since=joined)

    assert sender.cmd("bcastx:ex:M|not-to-sender") == "sent:1", \
        "broadcast_except counts local recipients other than the sender"
    for c in (local, r2, r3):
        assert c.recv_text() == "M|not-to-sender", \
            f"member on {c.node.name} (sender id, r2 id = {ids})"
    sender.assert_quiet(0.4, "no copy of its own broadcast_except")
    for c in (local, r2, r3):
        c.assert_quiet(0.05, "exactly one copy")

    # From another node the same room still reaches the excluded sender.
    assert r3.cmd("bcastx:ex:M|from-n3") == "sent:0"
    for c in (sender, local, r2):
        assert c.recv_text() == "M|from-n3"
    r3.assert_quiet(0.3, "no copy of its own broadcast_except")


# --------------------------------------------------------------------------
# 3. Full mesh from a single seed
# --------------------------------------------------------------------------


def test_mesh_from_single_seed(cluster):
    # A starts first and dials B before B is up (retry with backoff).
    b_port = cluster.cluster_port()
    t0 = time.monotonic()
    a = cluster.node("A", peers=[f"127.0.0.1:{b_port}"])
    b = cluster.node("B", cport=b_port)
    c = cluster.node("C", peers=[b])
    took = wait_mesh([a, b, c], start=t0)
    assert a.peers() == ["B", "C"] and c.peers() == ["A", "B"]
    for n in (a, b, c):
        assert n.node_name() == n.name
        s = n.stats()
        assert s["cluster_links_up"] >= 1, s
    # Nothing flaps: the mesh is still complete a moment later. A bounded
    # negative wait (a flap is something not happening): redials back off
    # from 0.1 s, doubling, so 0.5 s spans the first few of them.
    time.sleep(0.5)
    wait_mesh([a, b, c], timeout=0.1)
    print(f"mesh of 3 from one seed formed in {took:.2f}s")

    # A-C is a real link: a broadcast from A reaches C.
    ca = cluster.client(a)
    cc = cluster.client(c)
    cc.join("seed")
    await_routing("seed", [a], [cc], since=time.monotonic())
    assert ca.cmd("bcast:seed:M|a-to-c") == "sent:0"
    assert cc.recv_text() == "M|a-to-c"


def test_default_node_names_are_unique(cluster):
    n1 = cluster.node("x", set_name=False)
    n2 = cluster.node("y", peers=[n1], set_name=False)
    name1, name2 = n1.node_name(), n2.node_name()
    assert name1 and name2 and name1 != name2, (name1, name2)
    wait_until(lambda: n1.peers() == [name2] and n2.peers() == [name1],
               MESH_TIMEOUT, what=lambda: f"the link between {name1} and "
               f"{name2}; peers: {n1.peers()} / {n2.peers()}")


# --------------------------------------------------------------------------
# 4. A node killed and restarted rejoins
# --------------------------------------------------------------------------


def test_killed_node_restarts_and_rejoins(cluster):
    n1, n2, n3 = mesh3(cluster)  # n1 is the seed nobody else names later
    c2, c3 = cluster.client(n2), cluster.client(n3)
    p2 = cluster.client(n2)
    c2.join("r")
    c3.join("r")
    await_routing("r", [n2], [c2, c3], since=time.monotonic())

    cluster.kill(n1)

    # The others keep serving: local delivery, new clients, and the n2-n3
    # link they learned through n1.
    assert p2.cmd("bcast:r:M|during") == "sent:1"
    assert c2.recv_text() == "M|during"
    assert c3.recv_text() == "M|during"
    fresh = cluster.client(n3)
    assert fresh.cmd("echo-me") == "echo-me"
    wait_until(lambda: n2.peers() == ["n3"] and n3.peers() == ["n2"], 5.0,
               what=lambda: f"dead n1 to go from the peers: n2 "
               f"{n2.peers()}, n3 {n3.peers()}")

    t0 = time.monotonic()
    cluster.restart(n1)
    took = wait_mesh([n1, n2, n3], timeout=REJOIN_TIMEOUT, start=t0)
    print(f"restarted seed back in the mesh after {took:.2f}s")

    c1 = cluster.client(n1)
    c1.join("r")
    await_routing("r", [n2, n1], [c1, c2, c3], since=time.monotonic())
    assert p2.cmd("bcast:r:M|to-restarted") == "sent:1"
    for c in (c1, c2, c3):
        assert c.recv_text() == "M|to-restarted"
    assert c1.cmd("bcast:r:M|from-restarted") == "sent:1"
    for c in (c1, c2, c3):
        assert c.recv_text() == "M|from-restarted"
    for c in (c1, c2, c3):
        c.assert_quiet(0.3, "exactly one copy")
    for n in (n2, n3):
        assert n.alive()


# --------------------------------------------------------------------------
# 5. Wrong cookie: refused, isolated, says why
# --------------------------------------------------------------------------


COOKIE_LOG = r"(?i)cookie|authenticat"


def test_wrong_cookie_is_refused_and_isolated(cluster):
    bad_port = cluster.cluster_port()
    g1 = cluster.node("g1")
    # g2 dials both g1 and the bad node; the bad node dials g1. Both
    # directions of a failed handshake are exercised.
    g2 = cluster.node("g2", peers=[g1, f"127.0.0.1:{bad_port}"])
    bad = cluster.node("bad", peers=[g1], cookie="not-the-secret",
                       cport=bad_port)
    wait_mesh([g1, g2])

    m = bad.srv.wait_log(COOKIE_LOG, timeout=5.0)
    assert m, "the node with the wrong cookie does not say why it is " \
        f"refused (no log line with 'cookie' or 'authentication'):\n" \
        f"{bad.log()}"
    wait_until(lambda: g2.stat("cluster_links_refused") > 0, 5.0,
               what=lambda: "g2, which dialed the bad node (wrong proof), "
               f"to count it in cluster_links_refused: {g2.stats()}")
    good_refused = g1.stat("cluster_links_refused") + \
        g2.stat("cluster_links_refused")
    assert good_refused > 0

    # Isolated, still running, still serving its own clients.
    member_bad = cluster.client(bad)
    member_bad.join("secret-room")
    member_g2 = cluster.client(g2)
    member_g2.join("secret-room")
    await_routing("secret-room", [g1], [member_g2], since=time.monotonic())
    pub = cluster.client(g1)
    # The bad node keeps redialing g1 and g2 keeps redialing it (with
    # backoff); isolation must hold at every look until at least one more
    # of those handshakes has been refused.
    refused_before = bad.stat("cluster_links_refused")

    def isolated_through_another_refusal():
        assert bad.peers() == [], f"bad node has links: {bad.peers()}"
        assert g1.peers() == ["g2"] and g2.peers() == ["g1"], \
            (g1.peers(), g2.peers())
        return bad.stat("cluster_links_refused") > refused_before

    wait_until(isolated_through_another_refusal, 10.0, interval=0.1,
               what="another refused handshake with the bad node")
    assert bad.peers() == [], f"bad node has links: {bad.peers()}"
    assert pub.cmd("bcast:secret-room:M|for-good-nodes") == "sent:0"
    assert member_g2.recv_text() == "M|for-good-nodes"
    member_bad.assert_quiet(0.7, "no message from the good nodes")
    assert bad.stat("cluster_broadcasts_in") == 0
    assert bad.alive()
    assert member_bad.cmd("bcast:secret-room:M|local") == "sent:1"
    assert member_bad.recv_text() == "M|local"
    member_g2.assert_quiet(0.3, "nothing from the bad node")


def test_acceptor_refuses_wrong_proof(cluster):
    """A dialer that sends a wrong AUTH is refused by the acceptor, which
    counts and logs it; the link never carries room traffic."""
    n1 = cluster.node("n1")
    member = cluster.client(n1)
    member.join("r")
    before = n1.stat("cluster_links_refused")
    fake = FakePeer(n1)
    try:
        nonce_d = os.urandom(32)
        fake.send(hello_frame("intruder", unused_addr(), nonce_d))
        assert fake.recv_frame()[0] == TAG_HELLO
        assert fake.recv_frame()[0] == TAG_CHALLENGE
        fake.send(wire_frame(TAG_AUTH, auth_mac(
            "guess", LABEL_DIALER, nonce_d, os.urandom(32), "intruder",
            "n1")))
        fake.send(room_frame("r", "M|injected"))
        assert fake.wait_eof(3.0), "node kept a link whose AUTH was wrong"
    finally:
        fake.close()
    wait_until(lambda: n1.stat("cluster_links_refused") > before, 5.0,
               what="n1 to count the refused link")
    assert n1.peers() == []
    member.assert_quiet(0.3, "no room message from an unauthenticated peer")
    assert n1.srv.wait_log(COOKIE_LOG, 3.0), \
        f"refusal not explained in the log:\n{n1.log()}"


# --------------------------------------------------------------------------
# 6. Garbage on the cluster port
# --------------------------------------------------------------------------


def garbage_cases():
    rnd = random.Random(20240611)
    body = bytes(rnd.getrandbits(8) for _ in range(4096))
    return [
        ("random bytes", body),
        ("random frame", struct.pack("!I", 300) + bytes([0x77]) +
         bytes(rnd.getrandbits(8) for _ in range(299))),
        ("huge length prefix", b"\xff\xff\xff\xff" + b"\x00" * 16),
        ("length just over 1 GiB", struct.pack("!I", (1 << 30) + 1) +
         bytes([TAG_ROOM_TEXT]) + b"x" * 64),
        ("zero length", b"\x00\x00\x00\x00" * 4),
        ("room frame before the handshake",
         room_frame("r", "M|injected") + room_frame("r", "M|injected")),
        ("HELLO of another version",
         hello_frame("v99", "127.0.0.1:1", os.urandom(32), version=99)),
        ("truncated HELLO", wire_frame(TAG_HELLO, bytes([1, 0, 9]) + b"ab")),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]


def test_garbage_on_cluster_port(cluster):
    n1 = cluster.node("n1")
    n2 = cluster.node("n2", peers=[n1])
    wait_mesh([n1, n2])
    local = cluster.client(n1)
    remote = cluster.client(n2)
    local.join("r")
    remote.join("r")
    await_routing("r", [n1, n2], [local, remote], since=time.monotonic())
    keys = ("cluster_frames_malformed", "cluster_links_refused")

    for what, data in garbage_cases():
        before = stat_sum(n1, *keys)
        s = socket.create_connection(("127.0.0.1", n1.cport), timeout=3)
        try:
            try:
                s.sendall(data)
            except OSError:
                pass  # already dropped: fine
            deadline = time.monotonic() + 3.0
            dropped = False
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                except OSError:
                    dropped = True
                    break
                if not chunk:
                    dropped = True
                    break
            assert dropped, f"{what}: the node kept the link open for 3 s"
        finally:
            s.close()
        wait_until(lambda: stat_sum(n1, *keys) > before, 5.0,
                   what=lambda: f"{what}: {keys[0]} or {keys[1]} to grow: "
                   f"{n1.stats()}")
        assert n1.alive(), f"{what}: node died"

    # The node is fine: its link to n2, its clients, new clients.
    assert n1.peers() == ["n2"] and n2.peers() == ["n1"]
    local.assert_quiet(0.1, "nothing injected through garbage")
    assert local.cmd("bcast:r:M|still-fine") == "sent:1"
    assert local.recv_text() == "M|still-fine"
    assert remote.recv_text() == "M|still-fine"
    assert remote.cmd("bcast:r:M|back") == "sent:1"
    assert local.recv_text() == "M|back"
    assert remote.recv_text() == "M|back"
    assert cluster.client(n1).cmd("hello") == "hello"


def test_authenticated_peer_protocol(cluster):
    """A hand-driven peer with the right cookie: it is listed in peers(),
    gets room traffic only for rooms it announced, its broadcasts reach the
    node's local members and are not forwarded again, unknown tags are
    counted and skipped, and invalid text drops the link."""
    n1 = cluster.node("n1")
    n2 = cluster.node("n2", peers=[n1])
    wait_mesh([n1, n2])
    m1, m2 = cluster.client(n1), cluster.client(n2)
    m1.join("r")
    m2.join("r")
    await_routing("r", [n1], [m1, m2], since=time.monotonic())
    pub = cluster.client(n1)
    base = n1.stats()

    def room_frames(frames):
        return [f for f in frames if f[0] in (TAG_ROOM_TEXT, TAG_ROOM_BINARY)]

    fake = FakePeer(n1)
    try:
        name_a, addr_a = fake.handshake(COOKIE, "zz-fake", unused_addr())
        assert name_a == "n1"
        assert addr_a == n1.caddr, \
            f"HELLO carries dial address {addr_a!r}, expected {n1.caddr}"
        wait_until(lambda: n1.peers() == ["n2", "zz-fake"], 5.0,
                   what=lambda: f"the authenticated peer to be listed: "
                   f"{n1.peers()}")

        # Room traffic only after interest in the room. (fake.sync(): a PING
        # and its PONG; whatever n1 queued for us before has come by then.)
        assert pub.cmd("bcast:r:M|before-interest") == "sent:1"
        for c in (m1, m2):
            assert c.recv_text() == "M|before-interest"
        rooms = room_frames(fake.sync())
        assert not rooms, f"room frames without interest: {rooms}"

        fake.send(interest_frame("r"))
        early = room_frames(fake.sync())  # n1 has handled the interest
        assert pub.cmd("bcast:r:M|after-interest") == "sent:1"
        assert pub.cmd("bbin:r:M|bin") == "sent:1"
        frames = early + room_frames(fake.sync())
        got = [(t, parse_room(b)) for t, b in frames]
        assert got == [
            (TAG_ROOM_TEXT, ("r", b"M|after-interest")),
            (TAG_ROOM_BINARY, ("r", b"M|bin")),
        ], f"room frames to the peer: {got}"
        for c in (m1, m2):
            assert c.recv_text() == "M|after-interest"
            assert c.recv() == (OP_BINARY, b"M|bin")

        # From the peer: delivered to n1's members only, not forwarded.
        in_before = n1.stat("cluster_broadcasts_in")
        fake.send(room_frame("r", "M|from-fake"))
        assert m1.recv_text() == "M|from-fake"
        # n1 has handled the peer's frame (m1 has it): a copy sent back to
        # the peer would come before the PONG, and one re-forwarded to n2
        # before anything n1 broadcasts now.
        echoed = room_frames(fake.sync())
        assert not echoed, f"peer's broadcast sent back to it: {echoed}"
        assert pub.cmd("bcast:r:M|fence") == "sent:1"
        assert m2.recv_text() == "M|fence", \
            "no re-forwarded copy of a peer's broadcast"
        assert m1.recv_text() == "M|fence"
        fenced = [(t, parse_room(b)) for t, b in room_frames(fake.sync())]
        assert fenced == [(TAG_ROOM_TEXT, ("r", b"M|fence"))], fenced
        assert n1.stat("cluster_broadcasts_in") == in_before + 1

        # An unknown tag is counted and skipped; the link stays.
        unknown_before = n1.stat("cluster_unknown_tags")
        fake.send(wire_frame(0x7A, b"future stuff"))
        fake.send(room_frame("r", "M|after-unknown"))
        assert m1.recv_text() == "M|after-unknown"
        assert n1.stat("cluster_unknown_tags") == unknown_before + 1
        assert n1.peers() == ["n2", "zz-fake"]

        # PING is answered with the same token.
        fake.send(wire_frame(TAG_PING, struct.pack("!Q", 0xC0FFEE)))
        token = struct.pack("!Q", 0xC0FFEE)
        fake.wait_pong(token, timeout=5.0)
        assert token in fake.pongs, f"PING not answered: {fake.pongs}"

        # Invalid UTF-8 in a text room frame: the link is dropped.
        bad_before = n1.stat("cluster_frames_malformed")
        fake.send(room_frame("r", b"M|\xff\xfe bad"))
        assert fake.wait_eof(3.0), "link kept after invalid UTF-8 text"
        m1.assert_quiet(0.2, "no invalid text delivered")
        assert n1.stat("cluster_frames_malformed") == bad_before + 1
        wait_until(lambda: n1.peers() == ["n2"], 5.0,
                   what=lambda: f"the peer to go from n1's peers: "
                   f"{n1.peers()}")
    finally:
        fake.close()
    assert n1.stat("cluster_links_dropped") > base["cluster_links_dropped"]
    # n1 and n2 still work together.
    assert pub.cmd("bcast:r:M|end") == "sent:1"
    assert m1.recv_text() == "M|end" and m2.recv_text() == "M|end"


# --------------------------------------------------------------------------
# 7. Interest routing
# --------------------------------------------------------------------------


def test_interest_routing(cluster):
    n1, n2, n3 = mesh3(cluster)
    p1, p2 = cluster.client(n1), cluster.client(n2)
    m1, m2 = cluster.client(n1), cluster.client(n2)
    m1.join("R")
    m2.join("R")
    c3 = cluster.client(n3)
    c3.join("elsewhere")
    joined = time.monotonic()
    await_routing("R", [n1, n2], [m1, m2], since=joined)
    await_routing("elsewhere", [n1, n2], [c3], since=joined)

    def burst(tag, k=5):
        for i in range(k):
            assert p1.cmd(f"bcast:R:M|{tag}|p1|{i}") == "sent:1"
            assert p2.cmd(f"bcast:R:M|{tag}|p2|{i}") == "sent:1"
        return 2 * k

    def fences(tag):
        """Fences from p1 and p2 into R (to m1, m2) and into 'elsewhere'
        (to c3): then n1, n2 and n3 have handled all the bursts' traffic.
        Each node counts the fences it gets from the other two nodes in
        cluster_broadcasts_in: n1 and n2 one each (R), n3 two (elsewhere,
        while it has no member in R)."""
        fence("R", [p1, p2], [m1, m2], tag)
        fence("elsewhere", [p1, p2], [c3], tag)

    in3 = n3.stat("cluster_broadcasts_in")
    in1, in2 = n1.stat("cluster_broadcasts_in"), n2.stat("cluster_broadcasts_in")
    n = burst("a")
    for m in (m1, m2):
        assert len(m.recv_n(n)) == n
    fences("a")
    assert n3.stat("cluster_broadcasts_in") == in3 + 2, \
        "n3 has no member in R but received its broadcasts"
    assert n1.stat("cluster_broadcasts_in") == in1 + n // 2 + 1
    assert n2.stat("cluster_broadcasts_in") == in2 + n // 2 + 1
    c3.assert_quiet(0.05)

    # A join on n3 is effective cluster-wide within 1 s.
    c3.join("R")
    await_routing("R", [n1, n2], [m1, m2, c3], since=time.monotonic())
    in3 = n3.stat("cluster_broadcasts_in")
    n = burst("b")
    got = sorted(d.decode() for _, d in c3.recv_n(n, timeout=3))
    want = sorted(f"M|b|{p}|{i}" for p in ("p1", "p2") for i in range(5))
    assert got == want
    c3.assert_quiet(0.3, "exactly one copy of each")
    assert n3.stat("cluster_broadcasts_in") == in3 + n
    for m in (m1, m2):
        m.recv_n(n)

    # After leaving (and after the last member disconnects) n3 is out again.
    # One change at a time, each seen through before the next: interest
    # in R goes, comes back and goes again, and routing that has caught up
    # with only some of it would look the same as routing that is done.
    c3.leave("R")
    await_routing("R", [n1, n2], [m1, m2], since=time.monotonic())
    d3 = cluster.client(n3)
    d3.join("R")
    await_routing("R", [n1, n2], [m1, m2, d3], since=time.monotonic())
    d3.raw.abort()
    await_routing("R", [n1, n2], [m1, m2], since=time.monotonic())
    in3 = n3.stat("cluster_broadcasts_in")
    n = burst("c")
    for m in (m1, m2):
        m.recv_n(n)
    fences("c")
    assert n3.stat("cluster_broadcasts_in") == in3 + 2, \
        "n3 lost its last member of R but still receives R's broadcasts"
    c3.assert_quiet(0.05)


# --------------------------------------------------------------------------
# 8. Large and binary messages, order
# --------------------------------------------------------------------------


def test_max_message_and_binary_cross_the_cluster(cluster):
    n1, n2, n3 = mesh3(cluster)
    pub = cluster.client(n1)
    m2, m3 = cluster.client(n2), cluster.client(n3)
    m2.join("big")
    m3.join("big")
    await_routing("big", [n1], [m2, m3], since=time.monotonic())

    assert pub.cmd(f"big:big:{MAX_MESSAGE}", timeout=10) == "sent:0"
    assert pub.cmd("bcast:big:M|after-big") == "sent:0"
    assert pub.cmd("bbin:big:M|bin") == "sent:0"
    assert pub.cmd(f"bigbin:big:{MAX_MESSAGE}", timeout=10) == "sent:0"
    assert pub.cmd("bcast:big:M|last") == "sent:0"
    want = big_text(MAX_MESSAGE)
    wantb = big_binary(MAX_MESSAGE)
    for m in (m2, m3):
        op, data = m.recv(timeout=10)
        assert op == OP_TEXT, f"{m.node.name}: 1 MiB text arrived as binary"
        assert len(data) == MAX_MESSAGE and data == want, \
            f"{m.node.name}: 1 MiB text corrupted ({len(data)} bytes)"
        assert m.recv() == (OP_TEXT, b"M|after-big"), \
            "order: the small broadcast after the big one"
        assert m.recv() == (OP_BINARY, b"M|bin"), "binary stays binary"
        op, data = m.recv(timeout=10)
        assert op == OP_BINARY and len(data) == MAX_MESSAGE and \
            data == wantb, f"{m.node.name}: 1 MiB binary (all byte values) " \
            f"did not arrive intact (op {op}, {len(data)} bytes)"
        assert m.recv() == (OP_TEXT, b"M|last")
        m.assert_quiet(0.3)
    for n in (n1, n2, n3):
        assert n.alive()
        assert n.stat("cluster_queue_drops") == 0
    wait_mesh([n1, n2, n3], timeout=0.5)


# --------------------------------------------------------------------------
# 9. The cookie is mandatory; MOONROOM_COOKIE works
# --------------------------------------------------------------------------


def _env_without_cookie(**extra):
    env = {k: v for k, v in os.environ.items() if k != "MOONROOM_COOKIE"}
    env.update(extra)
    return env


@pytest.mark.parametrize("args,env", [
    (["--cluster-listen", "127.0.0.1:{c}"], {}),
    (["--peer", "127.0.0.1:{c}"], {}),
    (["--cluster-listen", "127.0.0.1:{c}", "--node", "n1"], {}),
    (["--cluster-listen", "127.0.0.1:{c}"], {"MOONROOM_COOKIE": ""}),
], ids=["listen", "peer", "listen-named", "empty-env"])
def test_cluster_without_cookie_refuses_to_start(args, env):
    c = free_port()
    argv = [str(require_bin()), "--listen", f"127.0.0.1:{free_port()}",
            *[a.format(c=c) for a in args], str(CLUSTER_SCRIPT)]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=10, env=_env_without_cookie(**env))
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, (r.returncode, err)
    assert "cookie" in err.lower() and "MOONROOM_COOKIE" in err, err


def test_cookie_from_environment(cluster, monkeypatch):
    monkeypatch.setenv("MOONROOM_COOKIE", COOKIE)
    e1 = cluster.node("e1", cookie=None)
    monkeypatch.delenv("MOONROOM_COOKIE")
    f2 = cluster.node("f2", peers=[e1])  # --cookie secret
    wait_mesh([e1, f2])
    c1, c2 = cluster.client(e1), cluster.client(f2)
    c2.join("env")
    await_routing("env", [e1], [c2], since=time.monotonic())
    assert c1.cmd("bcast:env:M|via-env-cookie") == "sent:0"
    assert c2.recv_text() == "M|via-env-cookie"


# --------------------------------------------------------------------------
# Heartbeats: a silent peer is detected
# --------------------------------------------------------------------------

SILENT_DETECT = 12.0  # generous: the contract only says heartbeats detect it


def test_silent_peer_is_detected_and_rejoins(cluster):
    n1 = cluster.node("n1")
    n2 = cluster.node("n2", peers=[n1])
    wait_mesh([n1, n2])
    n1.ctl  # open the control connection while n2 still runs
    dropped_before = n1.stat("cluster_links_dropped")
    os.kill(n2.srv.pid(), signal.SIGSTOP)  # TCP stays up, n2 says nothing
    try:
        t0 = time.monotonic()
        wait_until(lambda: n1.peers() == [], SILENT_DETECT, 0.2,
                   what="n1 to drop the frozen n2 from its peers")
        took = time.monotonic() - t0
        assert n1.stat("cluster_links_dropped") > dropped_before
        print(f"silent peer detected after {took:.1f}s")
        # n1 keeps serving meanwhile.
        c1 = cluster.client(n1)
        c1.join("r")
        assert c1.cmd("bcast:r:M|alone") == "sent:1"
        assert c1.recv_text() == "M|alone"
    finally:
        os.kill(n2.srv.pid(), signal.SIGCONT)
    wait_mesh([n1, n2], timeout=REJOIN_TIMEOUT)
    c2 = cluster.client(n2)
    c2.join("r")
    await_routing("r", [n1], [c1, c2], since=time.monotonic())
    assert c1.cmd("bcast:r:M|together") == "sent:1"
    assert c1.recv_text() == "M|together"
    assert c2.recv_text() == "M|together"


# --------------------------------------------------------------------------
# Orderly shutdown still works with the cluster running
# --------------------------------------------------------------------------


def test_sigterm_stops_a_clustered_node(cluster):
    n1 = cluster.node("n1")
    n2 = cluster.node("n2", peers=[n1])
    wait_mesh([n1, n2])
    c2 = cluster.client(n2)
    c2.join("r")
    n2.drop_ctl()
    n2.srv.signal(signal.SIGTERM)
    try:
        status = n2.srv.wait(5)
    except subprocess.TimeoutExpired:
        pytest.fail("a node with cluster links did not exit within 5 s of "
                    f"SIGTERM; its log:\n{n2.log()}")
    assert status == 0, f"exit status {status}:\n{n2.log()}"
    code, _ = c2.raw.expect_close(2.0)
    assert code == 1001, code
    wait_until(lambda: n1.peers() == [], 5.0,
               what=lambda: f"n2 to go from n1's peers: {n1.peers()}")
    assert n1.alive()


def test_slow_peer_is_dropped_and_local_delivery_goes_on(cluster):
    """A peer that authenticates, announces interest and then stops reading
    must not slow local delivery or grow the node's memory without bound:
    past the link queue limit (64 MiB) the link is dropped and counted."""
    n1 = cluster.node("n1", extra=["--max-backpressure", str(8 << 20)])
    local = cluster.client(n1)
    local.join("r")
    pub = cluster.client(n1)
    fake = FakePeer(n1)
    try:
        fake.handshake(COOKIE, "zz-slow", unused_addr())
        fake.send(interest_frame("r"))
        fake.sync()  # n1 has handled the interest
        # Shrink what the kernel buffers for the fake peer, then never read.
        fake.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        base = n1.stats()
        rss0 = n1.srv.rss_kb()
        n = 90  # 90 MiB, well past the 64 MiB link limit
        t0 = time.monotonic()
        for i in range(n):
            assert pub.cmd(f"big:r:{MAX_MESSAGE}", timeout=10) == "sent:1"
            msg = local.recv_text(timeout=10)
            assert len(msg) == MAX_MESSAGE and msg.startswith("M|big|"), i
        elapsed = time.monotonic() - t0
        s = n1.stats()
        assert s["cluster_queue_drops"] - base["cluster_queue_drops"] >= 1, s
        assert s["cluster_links_dropped"] - base["cluster_links_dropped"] >= 1, s
        assert n1.srv.wait_log(r"link (to|from) zz-slow dropped: .* exceed",
                               timeout=5), n1.log()
        growth_mb = (n1.srv.rss_kb() - rss0) / 1024
        if not sanitized_build():
            assert growth_mb < 160, f"RSS grew {growth_mb:.0f} MB"
        assert elapsed < 60, f"local delivery took {elapsed:.1f}s"
        assert local.cmd("id") != ""
    finally:
        fake.sock.close()


def test_many_rooms_link_with_a_small_max_message(cluster):
    """A node with thousands of rooms links to a node whose frame limit
    (--max-message plus a margin) is far smaller than the list of those
    rooms: the list goes in frames under the limit, the link comes up and
    stays up, and a broadcast into the last room crosses it. (One frame
    with every room once made the peer drop the link, and the link came
    back and dropped again every ~65 ms forever.)"""
    small = ("--max-message", "1024")
    n1 = cluster.node("n1", extra=small)
    holder = cluster.client(n1)
    prefix = "room-with-a-thirty-byte-name-"
    assert holder.cmd(f"joinmany:{prefix}:3000", timeout=10.0) == \
        "joined:3000"
    n2 = cluster.node("n2", peers=[n1], extra=small)
    wait_mesh([n1, n2])
    pub = cluster.client(n2)
    await_routing(f"{prefix}3000", [n2], [holder], since=time.monotonic())
    assert pub.cmd(f"bcast:{prefix}3000:M|last") == "sent:0"
    assert holder.recv_text() == "M|last"
    for node in (n1, n2):
        assert node.stat("cluster_links_dropped") == 0, node.log()
        assert node.stat("cluster_frames_malformed") == 0, node.log()
        assert node.stat("cluster_links_up") == 1, node.log()
