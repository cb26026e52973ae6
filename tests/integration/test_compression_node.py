"""permessage-deflate (RFC 7692) against a second independent client: Node.js
`ws` (tests/node/, pinned in its package-lock.json; tools/deps.sh installs
it). The real moonroom runs scripts/echo.lua or scripts/chat.lua with
--compression on; tests/node/compression.js connects, sends and reports what
it saw as JSON, and the assertions here decide what that must be.

Whether a frame from the server was compressed is counted inside ws (its
decompress() runs once per compressed frame), so "compressed_in" is the
number of compressed frames a message came in.
"""

import json
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT

NODE_DIR = REPO_ROOT / "tests" / "node"
CLIENT = NODE_DIR / "compression.js"
ECHO = REPO_ROOT / "scripts" / "echo.lua"
CHAT = REPO_ROOT / "scripts" / "chat.lua"
ON = ["--compression", "on"]
THRESHOLD = 128  # the server's default --compression-threshold
NODE_TIMEOUT = 60  # seconds for one run of the client; it takes about one


def node_client(group, url, *extra):
    """Runs one group of tests/node/compression.js; returns its report."""
    node = shutil.which("node")
    if not node or not (NODE_DIR / "node_modules" / "ws").is_dir():
        pytest.fail("node and tests/node/node_modules/ws are needed: run tools/deps.sh "
                    "(or `npm ci` in tests/node)")
    r = subprocess.run([node, str(CLIENT), group, url, *map(str, extra)],
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


def negotiated(ext):
    return ext.split(";")[0].strip() == "permessage-deflate"


def test_every_offer_node_ws_can_make(server):
    """210 offers: serverNoContextTakeover, clientNoContextTakeover (absent,
    true, false), serverMaxWindowBits (absent, 8, 9, 12, 15),
    clientMaxWindowBits (absent, true, false, 8, 9, 12, 15). Each connection
    echoes text with matches 2,000 bytes back, a 300-byte text, an empty
    text and the first again as binary, all compressed by the client."""
    srv = server(ECHO, args=ON)
    rows = node_client("matrix", srv.url + "/")["rows"]
    assert len(rows) == 2 * 3 * 5 * 7
    problems = []
    for row in rows:
        o = row["offer"]
        what = json.dumps(o)
        if o.get("clientNoContextTakeover") is False and "handshake_error" in row:
            # ws takes an explicit false to mean "I need my context kept", and
            # fails the handshake when the answer has client_no_context_takeover,
            # which moonroom always sends (an idle connection holds no inflater).
            if "Invalid Sec-WebSocket-Extensions" not in row["handshake_error"]:
                problems.append(f"{what}: handshake failed: {row['handshake_error']}")
            continue
        if o.get("clientNoContextTakeover") is False and negotiated(row["extensions"]):
            problems.append(f"{what}: ws accepted an answer it should have refused: "
                            f"{row['extensions']!r}")
            continue
        if "handshake_error" in row:
            problems.append(f"{what}: handshake failed: {row['handshake_error']}")
            continue
        if not row["ok"]:
            problems.append(f"{what}: echo failed: {row}")
            continue
        ext, params = row["extensions"], row["params"] or {}
        if o.get("serverMaxWindowBits") == 8 and not negotiated(ext):
            # zlib cannot deflate raw with a 256-byte window: declining is the
            # one honest answer (RFC 7692 7.1.2.1).
            if any(e["compressed_in"] for e in row["echo"]):
                problems.append(f"{what}: declined, yet sent compressed frames")
            continue
        if not negotiated(ext):
            problems.append(f"{what}: not negotiated: {ext!r}")
            continue
        if not (params.get("server_no_context_takeover") and
                params.get("client_no_context_takeover")):
            problems.append(f"{what}: expected both no_context_takeover in {ext!r}")
        smwb = o.get("serverMaxWindowBits")
        if smwb and params.get("server_max_window_bits", 99) > smwb:
            problems.append(f"{what}: server_max_window_bits missing or above {smwb}: {ext!r}")
        if o.get("clientMaxWindowBits") is False and "client_max_window_bits" in ext:
            problems.append(f"{what}: client_max_window_bits answered though not offered")
        # far (6,000 B), 300 B, far again, empty, far as binary.
        got = [e["compressed_in"] for e in row["echo"]]
        want = [1, 1, 1, 0, 1]
        if [min(g, 1) for g in got] != want:
            problems.append(f"{what}: compressed frames per echo {got}, expected {want}")
    assert not problems, f"{len(problems)} of {len(rows)} offers:\n" + "\n".join(problems[:20])


def check_sizes(out, threshold):
    assert negotiated(out["extensions"]), out["extensions"]
    for r in out["rows"] + out["plain_sender"]:
        assert r["ok"], r
        if r["len"] < threshold:
            assert r["compressed_in"] == 0, f"{r['name']}: {r['len']} B came back compressed"
        elif "incompressible" not in r["name"]:
            assert r["compressed_in"] >= 1, f"{r['name']}: {r['len']} B came back plain"
    names = [r["name"] for r in out["rows"]]
    assert "1 MiB text" in names and "after 1 MiB, small again" in names


def test_every_size_class_round_trips(server):
    """Empty, below the threshold, at it, just above, 64 KiB (text,
    incompressible and compressible binary), 1 MiB (= --max-message, counted
    inflated), then a small one again; from a client that compresses
    everything and from one that compresses nothing."""
    srv = server(ECHO, args=ON)
    check_sizes(node_client("sizes", srv.url + "/", THRESHOLD), THRESHOLD)


def test_threshold_level_and_window_options(server):
    """--compression-threshold moves the line; the smallest window and the
    fastest level still round-trip every size class."""
    srv = server(ECHO, args=ON + ["--compression-threshold", "1000", "--compression-level", "1",
                                  "--compression-window", "9"])
    check_sizes(node_client("sizes", srv.url + "/", 1000), 1000)
    srv = server(ECHO, args=ON + ["--compression-level", "9", "--compression-window", "15"])
    check_sizes(node_client("sizes", srv.url + "/", THRESHOLD), THRESHOLD)


def test_fragmented_messages_and_a_ping_between_fragments(server):
    srv = server(ECHO, args=ON)
    out = node_client("fragments", srv.url + "/")
    assert negotiated(out["extensions"]), out["extensions"]
    assert len(out["rows"]) == 6, out
    for r in out["rows"]:
        assert r["ok"], r
        assert r["compressed_in"] >= 1, f"{r['name']}: the echo came back plain"
        if r["name"].startswith("compressed"):
            assert r["frames_compressed_out"] >= 2, r
        if "ping" in r["name"]:
            # The ping went out before the last fragment: its pong comes first.
            assert r["events"] == ["pong", "message"], r


def test_broadcast_to_a_mixed_room(server):
    """chat.lua room of four: ws's default offer, a client without
    compression, one that asked for server_max_window_bits=9 and one with
    every option. The plain one gets plain frames; the others compressed
    frames they can inflate, including a message whose matches lie 2,000
    bytes back (the one frame shared by all of them must be made with the
    smallest window any of them agreed to, or sent otherwise)."""
    srv = server(CHAT, args=ON + ["--no-reload"])
    out = node_client("broadcast", srv.url)
    m = out["members"]
    assert not m["plain"]["extensions"], m
    for k in ("deflate", "small_window", "all_options"):
        assert negotiated(m[k]["extensions"]), m
    problems = []
    for row in out["rows"]:
        for k, g in row["got"].items():
            if not g["ok"]:
                problems.append(f"{row['name']} -> {k}: {g}")
                continue
            want = 0 if k == "plain" or row["len"] < THRESHOLD else 1
            if min(g["compressed_in"], 1) != want:
                problems.append(f"{row['name']} -> {k}: {g['compressed_in']} compressed frames, "
                                f"expected {'some' if want else 'none'}")
    assert not problems, "\n".join(problems)


def test_extension_only_when_on(server):
    on = server(ECHO, args=ON)
    out = node_client("plain", on.url + "/")
    assert out["no_offer"]["extensions"] == ""
    assert out["no_offer"]["echo"]["ok"] and out["no_offer"]["echo"]["compressed_in"] == 0
    assert negotiated(out["offer"]["extensions"]), out
    assert out["offer"]["echo"]["ok"] and out["offer"]["echo"]["compressed_in"] == 1

    for args in ([], ["--compression", "off"]):
        off = server(ECHO, args=args)
        out = node_client("plain", off.url + "/")
        for k in ("no_offer", "offer"):
            assert out[k]["extensions"] == "", (args, out)
            assert out[k]["echo"]["ok"] and out[k]["echo"]["compressed_in"] == 0, (args, out)
