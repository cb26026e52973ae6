"""Cluster links over TLS (--cluster-tls-cert, --cluster-tls-key,
--cluster-tls-ca): nodes whose certificates the cluster CA signed link and
carry room traffic; a node with a certificate from another CA, or speaking
plain text, cannot link (logged once, counted) and gets no room traffic;
the cluster port answers a TLS ClientHello, not the plain wire format.
Certificates are made at test time (tlsutil.py); the cookie handshake
still runs on top."""

import shutil
import signal
import socket
import ssl
import time

import pytest

from conftest import wait_until
from test_cluster import await_routing, cluster, wait_mesh  # noqa: F401
import tlsutil


@pytest.fixture
def pki(tmp_path):
    """The cluster's CA and, for a node name, its certificate; and a rogue
    CA that signs certificates no honest node trusts."""
    ca = tlsutil.make_ca(tmp_path / "pki", "cluster-ca")
    rogue_ca = tlsutil.make_ca(tmp_path / "rogue", "rogue-ca")
    return {"ca": ca, "rogue_ca": rogue_ca}


def tls_args(ca, name, trust=None):
    """--cluster-tls-* for a node certificate signed by ca, trusting trust
    (default ca)."""
    c = tlsutil.make_cert(ca, name)
    return ["--cluster-tls-cert", c.cert, "--cluster-tls-key", c.key,
            "--cluster-tls-ca", (trust or ca).cert]


def tls_node(cluster, pki, name, peers=(), ca=None, trust=None, **kw):
    ca = ca or pki["ca"]
    return cluster.node(name, peers=peers, extra=tls_args(ca, name, trust),
                        **kw)


def test_three_nodes_broadcast_over_tls(cluster, pki):
    n1 = tls_node(cluster, pki, "n1")
    n2 = tls_node(cluster, pki, "n2", peers=[n1])
    n3 = tls_node(cluster, pki, "n3", peers=[n1, n2])
    wait_mesh([n1, n2, n3])
    clients = [cluster.client(n) for n in (n1, n2, n3)]
    for c in clients:
        c.join("tls")
    await_routing("tls", [n1, n2, n3], clients, since=time.monotonic())
    assert clients[0].cmd("bcast:tls:M|over tls") == "sent:1"
    for c in clients:
        assert c.recv_text() == "M|over tls"
    # A large message crosses in many records.
    assert clients[2].cmd("big:tls:300000") == "sent:1"
    for c in clients:
        got = c.recv_text(timeout=10)
        assert len(got) == 300000 and got.startswith("M|big|")
    for n in (n1, n2, n3):
        s = n.stats()
        assert s["cluster_tls_failures"] == 0, s
        assert s["cluster_links_up"] >= 2, s


def test_node_signed_by_another_ca_cannot_link(cluster, pki):
    a = tls_node(cluster, pki, "a")
    b = tls_node(cluster, pki, "b", peers=[a])
    wait_mesh([a, b])
    # The rogue trusts the cluster's CA (it cannot fail on its side) but
    # its own certificate was signed by another one.
    rogue = tls_node(cluster, pki, "rogue", peers=[a, b],
                     ca=pki["rogue_ca"], trust=pki["ca"])
    wait_until(lambda: a.stat("cluster_tls_failures") >= 2
               and b.stat("cluster_tls_failures") >= 1, 10,
               what="the rogue refused by a and b, repeatedly")
    # Logged once per peer with the verify reason, however often it redials.
    for n in (a, b):
        lines = [l for l in n.log().splitlines()
                 if "refused: TLS handshake failed" in l]
        assert len(lines) == 1, lines
        assert "certificate verify failed" in lines[0], lines[0]
    rlines = [l for l in rogue.log().splitlines()
              if "refused: TLS handshake failed" in l]
    assert len(rlines) == 2, rlines  # one per peer it dials
    assert a.peers() == ["b"] and b.peers() == ["a"]
    assert rogue.peers() == []
    # No room traffic reaches the rogue's clients.
    ca_, cb, cr = cluster.client(a), cluster.client(b), cluster.client(rogue)
    for c in (ca_, cb, cr):
        c.join("secret-room")
    await_routing("secret-room", [a], [ca_, cb], since=time.monotonic())
    assert ca_.cmd("bcast:secret-room:M|for members only") == "sent:1"
    assert cb.recv_text() == "M|for members only"
    cr.assert_quiet(0.5, "no traffic from the TLS cluster")
    assert a.stat("cluster_links_refused") >= 1


def test_plain_text_node_cannot_link_to_a_tls_cluster(cluster, pki):
    a = tls_node(cluster, pki, "a")
    plain = cluster.node("plain", peers=[a])
    wait_until(lambda: a.stat("cluster_tls_failures") >= 1, 10)
    lines = [l for l in a.log().splitlines()
             if "refused: TLS handshake failed" in l]
    assert lines and "not a TLS handshake" in lines[0], lines
    assert a.peers() == [] and plain.peers() == []


def test_cluster_port_speaks_tls(cluster, pki):
    """Link traffic is encrypted: the cluster port answers a TLS
    ClientHello with a TLS handshake (and asks for a client certificate),
    and a client without a certificate is refused."""
    a = tls_node(cluster, pki, "a")
    ctx = tlsutil.client_context(pki["ca"])
    ctx.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", a.cport), timeout=5)
    with ctx.wrap_socket(raw) as s:
        # The server's certificate is the node's, signed by the CA.
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        assert s.getpeercert()["subject"] == ((("commonName", "a"),),)
        # TLS 1.3 reports a missing client certificate after the handshake:
        # the server's alert ends the connection.
        s.settimeout(5)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            s.sendall(b"\x00\x00\x00\x01\x13")
            if not s.recv(100):
                raise ConnectionResetError("closed")
    wait_until(lambda: a.stat("cluster_tls_failures") >= 1, 5)
    assert a.srv.wait_log(r"refused: TLS handshake failed: peer did not "
                          r"return a certificate")


def test_sighup_reloads_the_cluster_certificate(cluster, pki):
    """SIGHUP re-reads the cluster's files too: a broken key keeps the
    previous pair (one warning), and nodes still link; a new certificate is
    used for the links made after the reload."""
    ca = pki["ca"]
    args = tls_args(ca, "a")
    cert, key = args[1], args[3]
    a = cluster.node("a", extra=args)
    with open(key, "w") as f:
        f.write("not a key\n")
    a.srv.proc.send_signal(signal.SIGHUP)
    assert a.srv.wait_log(r"warn  --cluster-tls-cert: reload failed, keeping "
                          r"the previous certificate: cannot load the key")
    b = tls_node(cluster, pki, "b", peers=[a])
    wait_mesh([a, b])
    new = tlsutil.make_cert(ca, "a2")
    shutil.copy(new.cert, cert)
    shutil.copy(new.key, key)
    a.srv.proc.send_signal(signal.SIGHUP)
    assert a.srv.wait_log(r"--cluster-tls-cert .* reloaded: subject CN=a2")
    ctx = tlsutil.client_context(ca)
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", a.cport), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            assert s.getpeercert()["subject"] == ((("commonName", "a2"),),)
    # The link made before the reload is still up.
    assert a.peers() == ["b"] and b.peers() == ["a"]
    s = a.stats()
    assert s["tls_reloads"] == 1 and s["tls_reload_failures"] == 1, s
