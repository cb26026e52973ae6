"""A node that is paused (SIGSTOP/SIGCONT: a stopped container, a VM's
pause, a debugger) on a 3-node mesh (issue 16, item 3).

A pause shorter than the heartbeat timeout (5 s) must cost nothing: no link
drops on any node and every sequence-numbered broadcast, sent both ways
while the node was stopped, arrives once and in order. A longer pause drops
the links (the peers cannot tell a stopped node from a dead one) and the
mesh re-forms cleanly, with traffic flowing again.
"""

import os
import signal
import time

from test_cluster import (cluster, await_routing, mesh3, wait_mesh,  # noqa: F401
                          wait_until)

ROOM = "paused"
SILENT_S = 5.0  # MR_LINK_SILENT_MS


def members_and_publishers(cluster, nodes):
    """A member of ROOM and a publisher (in no room) on each node, with
    routing in place."""
    since = time.monotonic()
    members = []
    for n in nodes:
        m = cluster.client(n)
        m.join(ROOM)
        members.append(m)
    await_routing(ROOM, nodes, members, since=since)
    pubs = [cluster.client(n) for n in nodes]
    return members, pubs


def pump(pubs, start, seconds):
    """Each publisher broadcasts "M|pub|NODE|i" every 20 ms for `seconds`
    from index `start`, without waiting for replies (a stopped node answers
    later). Returns the next index."""
    i = start
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in pubs:
            p.send(f"bcast:{ROOM}:M|pub|{p.node.name}|{i}")
        i += 1
        time.sleep(0.02)  # pacing the traffic, not waiting for anything
    return i


def check_all_delivered(members, pubs, count, timeout=20.0):
    """Every publisher got `count` replies, and every member got each
    publisher's messages 0..count-1 exactly once, in order."""
    for p in pubs:
        for k in range(count):
            r = p.reply(timeout)
            assert r.startswith("sent:"), f"{p.node.name}: reply {k}: {r!r}"
    for m in members:
        got = [d.decode() for _, d in m.recv_n(len(pubs) * count, timeout)]
        for p in pubs:
            seq = [int(x.rsplit("|", 1)[1]) for x in got
                   if x.startswith(f"M|pub|{p.node.name}|")]
            assert seq == list(range(count)), \
                f"member on {m.node.name} from {p.node.name}: lost, " \
                f"duplicated or reordered: {len(seq)} of {count}, first " \
                f"gaps near {[x for x in range(count) if x not in seq][:5]}"
        m.assert_quiet(0.2)


def test_a_pause_shorter_than_the_timeout_drops_no_link_and_loses_nothing(
        cluster):
    nodes = mesh3(cluster)
    n3 = nodes[2]
    members, pubs = members_and_publishers(cluster, nodes)
    # Mesh formation may drop a duplicate link; count from here.
    up = {n.name: n.stat("cluster_links_up") for n in nodes}
    dropped = {n.name: n.stat("cluster_links_dropped") for n in nodes}
    i = pump(pubs, 0, 0.5)
    os.kill(n3.srv.pid(), signal.SIGSTOP)
    try:
        i = pump(pubs, i, 3.0)
    finally:
        os.kill(n3.srv.pid(), signal.SIGCONT)
    i = pump(pubs, i, 1.5)  # past the first heartbeats after the pause
    check_all_delivered(members, pubs, i)
    for n in nodes:
        s = n.stats()
        assert s["cluster_links_dropped"] == dropped[n.name], n.log()
        assert s["cluster_links_up"] == up[n.name], n.log()
    assert sorted(nodes[0].peers()) == ["n2", "n3"]
    # The resumed node knew that it had not run, and said so.
    assert n3.stat("cluster_stalls") >= 1, n3.log()
    assert "did not run for" in n3.log()
    for n in nodes[:2]:
        assert n.stat("cluster_stalls") == 0, n.log()


def test_a_pause_longer_than_the_timeout_drops_the_links_and_they_reform(
        cluster):
    nodes = mesh3(cluster)
    n1, n2, n3 = nodes
    # Mesh formation may drop a duplicate link; count from here.
    base = {n.name: n.stat("cluster_links_dropped") for n in nodes}
    stopped = time.monotonic()
    os.kill(n3.srv.pid(), signal.SIGSTOP)
    try:
        # The peers give the silent node up after SILENT_S.
        wait_until(lambda: all(n.stat("cluster_links_dropped") >=
                               base[n.name] + 1 for n in (n1, n2)),
                   SILENT_S + 5.0,
                   what="n1 and n2 to drop the stopped n3")
        assert n1.peers() == ["n2"] and n2.peers() == ["n1"]
        # The pause under test lasts 7 s.
        time.sleep(max(0.0, stopped + 7.0 - time.monotonic()))
    finally:
        os.kill(n3.srv.pid(), signal.SIGCONT)
    wait_until(lambda: n3.stat("cluster_links_dropped") >= base["n3"] + 2,
               10.0,
               what="n3 to see both links gone after it resumed")
    wait_mesh(nodes, timeout=15.0)
    members, pubs = members_and_publishers(cluster, nodes)
    i = pump(pubs, 0, 0.5)
    check_all_delivered(members, pubs, i)
    for n, dropped in ((n1, 1), (n2, 1), (n3, 2)):
        assert n.stat("cluster_links_dropped") == base[n.name] + dropped, \
            n.log()
        assert n.stat("cluster_frames_malformed") == 0, n.log()
