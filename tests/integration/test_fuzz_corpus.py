"""Issue 16, item 6b: every fuzz target has a seed corpus and a dictionary
(tests/fuzz/corpus/NAME/, tests/fuzz/dict/NAME.dict), and the seeds are
inputs the real server handles: each is answered or closed, never hangs
it or kills it."""

import re
import socket
import time

from conftest import REPO_ROOT, RawClient, PeerClosed

FUZZ = REPO_ROOT / "tests" / "fuzz"


def targets():
    text = (FUZZ / "CMakeLists.txt").read_text()
    m = re.search(r"set\(MOONROOM_FUZZ_TARGETS ([^)]*)\)", text)
    assert m, "no MOONROOM_FUZZ_TARGETS in tests/fuzz/CMakeLists.txt"
    return m.group(1).split()


DICT_LINE = re.compile(r'^[A-Za-z0-9_]*="(?:[^"\\]|\\\\|\\"|\\x[0-9a-fA-F]{2})+"$')


def test_every_target_has_a_corpus_and_a_dictionary():
    names = targets()
    assert {"http", "wire", "frames"} <= set(names), names
    for name in names:
        corpus = FUZZ / "corpus" / name
        seeds = [p for p in corpus.iterdir() if p.is_file()]
        assert len(seeds) >= 8, f"{corpus}: {len(seeds)} seeds"
        assert len({p.read_bytes() for p in seeds}) == len(seeds), \
            f"{corpus}: duplicate seeds"
        entries = 0
        for line in (FUZZ / "dict" / f"{name}.dict").read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            assert DICT_LINE.match(line), f"{name}.dict: {line!r}"
            entries += 1
        assert entries >= 10, f"{name}.dict: {entries} entries"


def finishes(c, timeout):
    """Reads until the server closes the connection or has sent a whole
    response head (101 included); True unless it timed out."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            c._fill(deadline)
            if b"\r\n\r\n" in c.buf:
                return True
    except PeerClosed:
        return True
    except TimeoutError:
        return False
    return False


def test_http_seeds_are_answered_by_the_server(server):
    srv = server(args=["--handshake-timeout", "1"])
    for seed in sorted((FUZZ / "corpus" / "http").iterdir()):
        c = RawClient(srv.port, timeout=5.0)
        try:
            c.send(seed.read_bytes())
            assert finishes(c, 4.0), f"{seed.name}: no answer, no close"
            if seed.name.split("-", 1)[1] == "upgrade":
                assert c.buf.startswith(b"HTTP/1.1 101 "), bytes(c.buf)
        finally:
            c.close()
        assert srv.alive(), f"server died on {seed.name}:\n{srv.log()}"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=2):
        pass


def test_frame_seeds_are_handled_after_an_upgrade(server):
    srv = server(args=["--handshake-timeout", "1"])
    for seed in sorted((FUZZ / "corpus" / "frames").iterdir()):
        c = RawClient.connect(srv.port)
        try:
            c.send(seed.read_bytes())
            # Whatever the frames did, the connection still answers or is
            # closed cleanly; the server lives.
            try:
                c.cmd("alive?", timeout=3.0)
            except Exception:  # closed, refused or a close frame: all fine
                pass
        finally:
            c.close()
        assert srv.alive(), f"server died on {seed.name}:\n{srv.log()}"
