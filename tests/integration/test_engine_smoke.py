"""A quick smoke test of --engine redis:// against a redis-server started
on a free loopback port: two nodes, one broadcast each way, no duplicate
at the origin, and a wrong password refused at startup (exit 1). The full
suite is test_redis_engine.py."""

import shutil
import socket
import subprocess
import time

import pytest

from conftest import RawClient, wait_until

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(tmp_path), "--save", "", "--appendonly", "no",
         "--requirepass", "pw"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False
    wait_until(up, timeout=5)
    yield port
    proc.kill()
    proc.wait(5)


CHAT = "scripts/chat.lua"


def numsub(port, channel):
    out = subprocess.run(["redis-cli", "-p", str(port), "-a", "pw",
                          "--no-auth-warning", "PUBSUB", "NUMSUB", channel],
                         capture_output=True, text=True, timeout=5).stdout
    return int(out.split()[1])


def text_of(client):
    """The next chat line, past join and leave announcements ("* ...")."""
    while True:
        _, payload = client.recv_message(timeout=5)
        if not payload.startswith(b"* "):
            return payload.decode()


@pytest.mark.skipif(shutil.which("redis-cli") is None,
                    reason="redis-cli is not installed")
def test_two_nodes_through_redis(redis, tmp_path):
    from conftest import REPO_ROOT, start_server
    url = f"redis://:pw@127.0.0.1:{redis}"
    a = start_server(tmp_path, REPO_ROOT / CHAT, name="a",
                     args=["--engine", url, "--node", "a"])
    b = start_server(tmp_path, REPO_ROOT / CHAT, name="b",
                     args=["--engine", url, "--node", "b"])
    try:
        ca = RawClient.connect(a.port, "/?room=lobby&name=ada")
        cb = RawClient.connect(b.port, "/?room=lobby&name=bob")
        # Interest: each node subscribes to the room's channel.
        wait_until(lambda: numsub(redis, "moonroom:room:lobby") == 2,
                   timeout=5)
        ca.send_text("hello")
        assert text_of(ca) == "ada: hello"
        assert text_of(cb) == "ada: hello"
        cb.send_text("back")
        assert text_of(cb) == "bob: back"
        # Redis delivers in order: a copy of ada's own message would come
        # before bob's.
        assert text_of(ca) == "bob: back"
        ca.close()
        cb.close()
        wait_until(lambda: numsub(redis, "moonroom:room:lobby") == 0,
                   timeout=5)
    finally:
        a.stop()
        b.stop()


def test_wrong_password_is_an_error_at_startup(redis):
    from conftest import REPO_ROOT, run_bin
    r = run_bin(["--listen", "127.0.0.1:0", "--engine",
                 f"redis://:nope@127.0.0.1:{redis}", REPO_ROOT / CHAT])
    assert r.returncode == 1
    assert b"refused AUTH" in r.stderr
    assert b"nope" not in r.stderr  # the password is not logged
    r = run_bin(["--listen", "127.0.0.1:0", "--engine",
                 f"redis://127.0.0.1:{redis}", REPO_ROOT / CHAT])
    assert r.returncode == 1
    assert b"Redis wants a password" in r.stderr


def test_engine_excludes_the_mesh():
    from conftest import REPO_ROOT, run_bin
    r = run_bin(["--engine", "redis://127.0.0.1:6379", "--peer",
                 "127.0.0.1:9", "--cookie", "k", REPO_ROOT / CHAT])
    assert r.returncode == 2
    assert b"exclude each other" in r.stderr
