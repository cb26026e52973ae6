"""A throw-away redis-server for the Redis engine's tests (issue 12), and a
tiny RESP client to look inside it.

    rs = RedisServer(tmp_path)            # not started yet; picks a free port
    rs.start()                            # waits (bounded) until PING answers
    rs.url                                # "redis://127.0.0.1:PORT"
    rs.cmd("PUBSUB", "NUMSUB", "moonroom:room:lobby")  # -> [b"...", 1]
    rs.kill9()                            # SIGKILL, reaped
    rs.start()                            # again, on the same port
    rs.stop()                             # SIGTERM (SIGKILL after 3 s)

The server runs on 127.0.0.1 only, with no persistence (`--save ""
--appendonly no`), in its own temporary directory, so the tests need no
Redis service on the machine and leave nothing behind. `redis_server` is a
pytest fixture factory that stops every server it started; the benchmark
uses RedisServer directly.

The RESP client is for the test side only (the server speaks to Redis
through hiredis): one blocking socket per call, every read bounded."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

try:  # the benchmark (tests/bench/run.py) uses RedisServer without pytest
    import pytest
except ImportError:
    pytest = None

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
READY_TIMEOUT = 10.0


class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def encode_command(*args):
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode("utf-8")
        elif isinstance(a, int):
            a = str(a).encode("ascii")
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Reader:
    def __init__(self, sock, deadline):
        self.sock = sock
        self.buf = bytearray()
        self.deadline = deadline

    def _fill(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out reading a reply from Redis")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("Redis closed the connection")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n")
        out = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return out

    def exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n + 2]
        return out

    def reply(self):
        """One reply: bytes, int, None, a list, or a RedisError value."""
        head = self.line()
        kind, rest = head[:1], head[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError(f"not a RESP reply: {head!r}")


def redis_call(port, *args, password=None, timeout=5.0):
    """Sends one command (after AUTH when password is given) and returns the
    reply; raises RedisError on an error reply."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        r = _Reader(s, deadline)
        if password is not None:
            s.sendall(encode_command("AUTH", password))
            ok = r.reply()
            if isinstance(ok, RedisError):
                raise ok
        s.sendall(encode_command(*args))
        out = r.reply()
    if isinstance(out, RedisError):
        raise out
    return out


class RedisServer:
    """One redis-server process on a fixed loopback port (chosen free at
    construction, kept across restarts)."""

    def __init__(self, tmp_path, password=None, port=None, name="redis"):
        self.dir = Path(tmp_path) / f"{name}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(tmp_path) / f"{name}.log"
        self.password = password
        self.port = port or _free_port()
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def argv(self):
        a = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--daemonize", "no", "--protected-mode", "no",
             "--loglevel", "notice"]
        if self.password is not None:
            a += ["--requirepass", self.password]
        return a

    def start(self, timeout=READY_TIMEOUT):
        """Starts redis-server and waits until it answers PING."""
        assert not self.alive(), "redis-server is already running"
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError(f"{REDIS_SERVER} is missing: tools/deps.sh "
                               "installs redis-server")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log,
                                         cwd=str(self.dir))
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode} at "
                    f"start on port {self.port}:\n{self.log()[-2000:]}")
            try:
                if self.cmd("PING", timeout=0.5) == b"PONG":
                    return self
            except (OSError, ConnectionError, TimeoutError, RedisError):
                pass
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(
                    f"redis-server did not answer PING on port {self.port} "
                    f"within {timeout}s:\n{self.log()[-2000:]}")
            time.sleep(0.02)

    def cmd(self, *args, timeout=5.0):
        return redis_call(self.port, *args, password=self.password,
                          timeout=timeout)

    def numsub(self, channel):
        """Subscribers of one channel (PUBSUB NUMSUB)."""
        reply = self.cmd("PUBSUB", "NUMSUB", channel)
        return int(reply[1])

    def channels(self, pattern="*"):
        return sorted(c.decode("utf-8", "replace")
                      for c in self.cmd("PUBSUB", "CHANNELS", pattern))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """SIGKILL, as a crash would; the port is free again at return."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def redis_server(tmp_path):
    """Factory: redis_server(password=None) -> a started RedisServer on a
    free loopback port. Every server is stopped at the end of the test."""
    made = []

    def factory(password=None, start=True):
        rs = RedisServer(tmp_path, password=password, name=f"redis{len(made)}")
        made.append(rs)
        if start:
            rs.start()
        return rs

    yield factory
    for rs in made:
        rs.stop()


if pytest is not None:
    redis_server = pytest.fixture(redis_server)
