"""wss:// against a second independent client: Node.js `ws` over Node's TLS
(tests/node/, pinned in its package-lock.json; tools/deps.sh installs it).
The real moonroom runs with --tls-cert/--tls-key from a throw-away CA made
with the openssl command for each test; tests/node/tls.js connects with the
CA trusted (ws's `ca` option), sends, and reports what it saw as JSON; the
assertions here decide what that must be.
"""

import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT, free_port, http_request, wait_until
from tlsutil import make_ca, make_cert

NODE_DIR = REPO_ROOT / "tests" / "node"
CLIENT = NODE_DIR / "tls.js"
ECHO = REPO_ROOT / "scripts" / "echo.lua"
CHAT = REPO_ROOT / "scripts" / "chat.lua"
NODE_TIMEOUT = 60  # seconds for one run of the client; it takes one or two

# The ws.stats() counter of TLS handshakes the server saw fail.
TLS_FAILED = "tls_handshake_failures"
# ... and the ones that completed.
TLS_DONE = "tls_handshakes"


class Certs:
    """The paths a test needs: ca (the CA's certificate), cert, key."""

    def __init__(self, tmp_path):
        ca = make_ca(tmp_path / "pki")
        leaf = make_cert(ca, "localhost")
        self.ca, self.cert, self.key = ca.cert, leaf.cert, leaf.key


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path)


def tls_server(server, certs, script, args=()):
    """moonroom with TLS on its --listen port and an admin port for
    /metrics; returns (srv, wss base URL, admin port)."""
    admin = free_port()
    srv = server(script, args=["--tls-cert", certs.cert, "--tls-key", certs.key,
                               "--admin-listen", f"127.0.0.1:{admin}", *args])
    return srv, f"wss://127.0.0.1:{srv.port}", admin


def metric(admin_port, name):
    """The running total of ws.stats() counter `name`, from /metrics."""
    resp = http_request(admin_port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n"
                        b"Connection: close\r\n\r\n")
    assert resp.status == 200, resp
    m = re.search(rf"^moonroom_{name}_total (\S+)$", resp.body.decode(), re.M)
    assert m, f"no moonroom_{name}_total in /metrics"
    return float(m.group(1))


def node_client(group, url, ca):
    """Runs one group of tests/node/tls.js; returns its report."""
    node = shutil.which("node")
    if not node or not (NODE_DIR / "node_modules" / "ws").is_dir():
        pytest.fail("node and tests/node/node_modules/ws are needed: run tools/deps.sh "
                    "(or `npm ci` in tests/node)")
    r = subprocess.run([node, str(CLIENT), group, url, str(ca)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=NODE_TIMEOUT, cwd=str(NODE_DIR))
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pytest.fail(f"node client printed no report (exit {r.returncode}):\n"
                    f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    assert "fatal" not in out, out["fatal"]
    assert r.returncode == 0, r.stderr
    return out


def check_tls(info, version):
    assert info["protocol"] == version, info
    assert info["authorized"] is True, info
    assert info["alpn"] == "http/1.1", info
    assert info["peer_cn"] == "localhost", info


def test_echo_over_tls_1_3_and_1_2(server, certs):
    """echo.lua over wss with the test CA trusted, TLS 1.3 (Node's default)
    and 1.2: small text, empty, 64 KiB binary, 1 MiB text and binary (each
    way: the echo comes back as big), a small one after them, and a 300-byte
    message written to the TLS socket one byte per TLS record."""
    srv, base, _ = tls_server(server, certs, ECHO)
    out = node_client("echo", base + "/", certs.ca)
    for version, key in (("TLSv1.3", "tls1.3"), ("TLSv1.2", "tls1.2")):
        row = out["versions"][key]
        check_tls(row["tls"], version)
        names = [r["name"] for r in row["rows"]]
        assert names == ["small text", "empty", "binary 64 KiB", "text 1 MiB", "binary 1 MiB",
                         "small after 1 MiB", "one byte per TLS record"], row
        for r in row["rows"]:
            assert r["ok"], (key, r)
    tiny = out["versions"]["tls1.3"]["rows"][-1]
    assert tiny["records"] > 300, tiny


def test_chat_room_over_tls(server, certs):
    """Two ws clients in one chat.lua room over wss: a join notice, a short
    message and a 100 KB one arrive as chat.lua sends them."""
    srv, base, _ = tls_server(server, certs, CHAT, args=["--no-reload"])
    out = node_client("chat", base, certs.ca)
    check_tls(out["tls"], "TLSv1.3")
    assert out["ada_saw_bob_join"], out
    assert out["bob_got"] == "ada: hi bob, over tls", out
    assert out["ada_got_big"], out


def test_client_without_the_ca_is_refused(server, certs):
    """A ws client that does not trust the test CA fails with Node's
    certificate error, and so does one that checks for a name the
    certificate lacks. Node checks the certificate when the server's
    Finished arrives and closes before sending its own, so the server sees
    both as failed handshakes: it counts them (exactly two), logs each, and
    goes on serving: a client with the CA gets through after them (one
    completed handshake)."""
    srv, base, admin = tls_server(server, certs, ECHO)
    before = metric(admin, TLS_FAILED)
    done = metric(admin, TLS_DONE)
    out = node_client("untrusted", base + "/", certs.ca)
    assert out["no_ca"]["connected"] is False, out
    assert out["no_ca"]["code"] == "UNABLE_TO_VERIFY_LEAF_SIGNATURE", out
    assert out["wrong_name"]["connected"] is False, out
    assert out["wrong_name"]["code"] == "ERR_TLS_CERT_ALTNAME_INVALID", out
    assert out["with_ca"]["connected"] is True, out
    wait_until(lambda: metric(admin, TLS_FAILED) >= before + 2, timeout=5,
               what=lambda: f"{TLS_FAILED} to count both refused handshakes "
                            f"(was {before}, now {metric(admin, TLS_FAILED)})")
    wait_until(lambda: len(re.findall(r"TLS handshake failed", srv.log())) == 2, timeout=5,
               what=lambda: f"two log lines for them:\n{srv.log()}")
    assert metric(admin, TLS_FAILED) == before + 2
    assert metric(admin, TLS_DONE) == done + 1
    assert srv.alive()


def test_permessage_deflate_over_tls(server, certs):
    """--compression on with TLS: the extension is negotiated inside the
    TLS session and 10 KB and 1 MiB messages come back compressed."""
    srv, base, _ = tls_server(server, certs, ECHO, args=["--compression", "on"])
    out = node_client("deflate", base + "/", certs.ca)
    check_tls(out["tls"], "TLSv1.3")
    assert out["extensions"].startswith("permessage-deflate"), out
    assert [r["name"] for r in out["rows"]] == ["10 KB chat", "1 MiB", "small"], out
    for r in out["rows"]:
        assert r["ok"], r
        if r["name"] != "small":
            assert r["compressed_in"] >= 1, r
        else:
            assert r["compressed_in"] == 0, r
