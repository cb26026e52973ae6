"""Shared fixtures and helpers for moonroom's integration tests.

Everything talks to a real moonroom process over loopback. Two kinds of
client are used:

* RawClient: a plain socket that does the HTTP upgrade by hand and sends
  hand-built frames (any opcode, RSV bits, masking, fragmentation, lying
  length fields). Server frames are parsed strictly (they must be unmasked).
* Debian's python3-websockets (asyncio API) through arun()/ws_connect(), an
  independent implementation, for interoperability checks.

Every wait is bounded. Every server process is killed and reaped in the
fixture finalizer; its stderr goes to a file that failing tests print.

Tests import helpers with ``from conftest import ...`` (pytest's default
"prepend" import mode puts this directory on sys.path).
"""

import asyncio
import base64
import hashlib
import inspect
import os
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SCRIPTS = HERE / "scripts"
CMD_SCRIPT = SCRIPTS / "cmd.lua"

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10

# Hard ceiling for one test, so that a hang shows up as a failure rather
# than as ctest killing the whole suite.
TEST_ALARM_SECONDS = 90


def moonroom_bin():
    env = os.environ.get("MOONROOM_BIN")
    if env:
        return Path(env)
    return REPO_ROOT / "build" / "moonroom"


def sanitized_build():
    """True when the binary was built with AddressSanitizer. Its allocator
    keeps freed memory in quarantine (hundreds of MB), so RSS bounds are
    only asserted on the plain build, which the test command also runs."""
    global _SANITIZED
    if _SANITIZED is None:
        with open(moonroom_bin(), "rb") as f:
            _SANITIZED = b"__asan_init" in f.read()
    return _SANITIZED


_SANITIZED = None


def require_bin():
    """Returns the binary path; fails (MOONROOM_BIN set) or skips (unset)
    when it does not exist."""
    path = moonroom_bin()
    if not path.exists():
        if os.environ.get("MOONROOM_BIN"):
            pytest.fail(f"MOONROOM_BIN={path} does not exist")
        pytest.skip(f"moonroom binary not built at {path}")
    return path


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def accept_key(key):
    digest = hashlib.sha1((key + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def new_key():
    return base64.b64encode(os.urandom(16)).decode("ascii")


# --------------------------------------------------------------------------
# Bounded waiting
# --------------------------------------------------------------------------

# Polling returns as soon as its condition holds, so bounds are generous
# (sanitizer builds on a busy 2-core machine are slow); they only decide
# how long a broken build takes to fail.
POLL_INTERVAL = 0.02


def poll(predicate, timeout, interval=POLL_INTERVAL):
    """Calls predicate() until it returns something truthy or `timeout`
    seconds have passed; returns its last value (falsy on timeout).

    This is the one place where the tests sleep while waiting for a
    condition: between two looks at it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return value
        time.sleep(min(interval, remaining))


def _describe(predicate):
    try:
        src = inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
    return src if len(src) <= 200 else src[:200] + "..."


def wait_until(predicate, timeout=5.0, interval=POLL_INTERVAL, what=None):
    """Waits until predicate() returns something truthy and returns it.

    After `timeout` seconds raises AssertionError naming what was awaited:
    `what` (a string, or a callable called then, so that it can describe the
    state at that moment), else the predicate's source, and its last value.
    Exceptions from the predicate propagate at once."""
    value = poll(predicate, timeout, interval)
    if value:
        return value
    desc = what() if callable(what) else what
    if desc is None:
        desc = _describe(predicate)
    raise AssertionError(f"timed out after {timeout}s waiting for {desc} "
                         f"(last value {value!r})")


# --------------------------------------------------------------------------
# Server process management
# --------------------------------------------------------------------------


class ServerStartError(Exception):
    pass


class Server:
    """One moonroom process. .port, .url, .proc, .log(), .log_path."""

    def __init__(self, args, script, log_path, port):
        self.script = str(script)
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.proc = None
        self.expect_exit = False  # set by tests that stop the server
        self._log_file = None

    def argv(self):
        return [str(require_bin()), "--listen", f"127.0.0.1:{self.port}",
                *self.args, self.script]

    def start(self, ready_timeout=5.0):
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=self._log_file, cwd=str(REPO_ROOT))

        def accepting():
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"moonroom exited with {self.proc.returncode} before "
                    f"accepting on port {self.port}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port),
                                              timeout=0.5):
                    return True
            except OSError:
                return False

        if not poll(accepting, ready_timeout):
            raise ServerStartError(
                f"moonroom did not accept on port {self.port} within "
                f"{ready_timeout}s:\n{self.log()}")
        # The admin port is bound just after the WebSocket port, so a test
        # that talks to it first waits for it too (a loaded machine can run
        # the test between the two binds: connection refused). The log line
        # says it is listening; a probe connection would count against the
        # admin's connection limit until the server saw it close.
        if "--admin-listen" in self.args:
            poll(lambda: self.proc.poll() is not None or
                 "admin listening on" in self.log(), ready_timeout)
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=5.0):
        """Waits until the log matches a regex; returns the match or None."""
        rx = re.compile(pattern)
        return poll(lambda: rx.search(self.log()), timeout)

    def pid(self):
        return self.proc.pid

    def rss_kb(self, field="VmRSS"):
        """Resident memory now (VmRSS), or its peak so far (VmHWM)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError("no " + field)

    def signal(self, sig):
        self.expect_exit = True
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Kills and reaps the process. Returns the exit status it had
        before we stopped it (None when it was still running)."""
        if self.proc is None:
            return None
        early = self.proc.poll()
        if early is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return early


def start_server(tmp_path, script=CMD_SCRIPT, args=(), name="server",
                 ready_timeout=5.0):
    """Starts moonroom on a free port, retrying a few times on a port clash."""
    require_bin()
    last = None
    for attempt in range(5):
        port = free_port()
        log_path = Path(tmp_path) / f"{name}-{port}.log"
        srv = Server(args, script, log_path, port)
        try:
            return srv.start(ready_timeout=ready_timeout)
        except ServerStartError as e:
            srv.stop()
            last = e
            if re.search(r"in use|EADDRINUSE", srv.log(), re.I):
                continue
            raise
    raise last


@pytest.fixture
def server(request, tmp_path):
    """Factory: server(script=CMD_SCRIPT, args=(...)) -> started Server.

    Finalizer kills and reaps every server; a server that died on its own
    during the test (crash) makes the test error out."""
    started = []
    request.node._moonroom_servers = started

    def factory(script=CMD_SCRIPT, args=(), ready_timeout=5.0):
        srv = start_server(tmp_path, script=script, args=args,
                           name=f"server{len(started)}",
                           ready_timeout=ready_timeout)
        started.append(srv)
        return srv

    yield factory

    problems = []
    for srv in started:
        early = srv.stop()
        if early is not None and not srv.expect_exit:
            problems.append(f"moonroom on port {srv.port} died during the "
                            f"test with status {early}")
        log = srv.log()
        if "AddressSanitizer" in log or "runtime error:" in log:
            problems.append(f"sanitizer report in log of port {srv.port}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def cmd_server(server):
    """A server running the command-driven test handler, default options."""
    return server()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in getattr(item, "_moonroom_servers", []):
            log = srv.log()
            if len(log) > 20000:
                log = "...\n" + log[-20000:]
            rep.sections.append(
                (f"moonroom stderr (port {srv.port}, {rep.when})", log))


@pytest.fixture(autouse=True)
def _test_alarm():
    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_ALARM_SECONDS}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_ALARM_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def run_bin(args, timeout=10):
    """Runs the binary to completion (CLI tests). Returns CompletedProcess."""
    return subprocess.run([str(require_bin()), *[str(a) for a in args]],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, cwd=str(REPO_ROOT))


# --------------------------------------------------------------------------
# Raw WebSocket client
# --------------------------------------------------------------------------


class PeerClosed(Exception):
    """The TCP connection ended (EOF or reset) while we were reading."""


class CloseReceived(Exception):
    """A close frame arrived while a data message was expected."""

    def __init__(self, code, reason):
        super().__init__(f"close frame: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


class Frame:
    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin = fin
        self.rsv = rsv
        self.opcode = opcode
        self.masked = masked
        self.payload = payload

    def close_info(self):
        """(code, reason) of a close frame; (None, b"") when it is empty."""
        assert self.opcode == OP_CLOSE
        if len(self.payload) < 2:
            return None, b""
        return struct.unpack("!H", self.payload[:2])[0], self.payload[2:]

    def __repr__(self):
        p = self.payload if len(self.payload) < 60 else \
            self.payload[:60] + b"..."
        return (f"Frame(fin={self.fin}, rsv={self.rsv:#x}, "
                f"op={self.opcode:#x}, masked={self.masked}, payload={p!r})")


def apply_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (bytes(key) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")) \
        .to_bytes(n, "big")


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True,
                mask_key=None, length=None):
    """A client frame. length overrides the announced payload length
    (payload is then sent as given, possibly shorter)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload) if length is None else length
    out = bytearray([(0x80 if fin else 0) | rsv | (opcode & 0x0F)])
    mbit = 0x80 if mask else 0
    if n < 126:
        out.append(mbit | n)
    elif n < 65536:
        out.append(mbit | 126)
        out += struct.pack("!H", n)
    else:
        out.append(mbit | 127)
        out += struct.pack("!Q", n)
    if mask:
        key = os.urandom(4) if mask_key is None else mask_key
        out += key
        out += apply_mask(payload, key)
    else:
        out += payload
    return bytes(out)


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def upgrade_request(path="/", key=None, version="13", upgrade="websocket",
                    connection="Upgrade", method="GET", host="127.0.0.1",
                    extra_headers=(), http_version="HTTP/1.1"):
    """Builds an upgrade request head. Pass None for a header to omit it."""
    lines = [f"{method} {path} {http_version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    for name, value in extra_headers:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpResponse:
    def __init__(self, status, reason, headers, body, raw):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> value (last wins)
        self.body = body
        self.raw = raw

    def __repr__(self):
        return f"HttpResponse({self.status} {self.reason!r}, {self.headers})"


def fill_buffer(sock, buf, deadline, what):
    """Appends one recv() to buf, waiting at most until deadline; raises
    TimeoutError, or PeerClosed on EOF or reset."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"timed out waiting for {what}")
    sock.settimeout(remaining)
    try:
        data = sock.recv(65536)
    except socket.timeout:
        raise TimeoutError(f"timed out waiting for {what}")
    except (ConnectionResetError, BrokenPipeError):
        raise PeerClosed("connection reset")
    if not data:
        raise PeerClosed("EOF")
    buf += data


class RawClient:
    def __init__(self, port, timeout=5.0, rcvbuf=None, host="127.0.0.1",
                 source=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:  # another loopback address, 127.0.0.2 say
            self.sock.bind((source, 0))
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.port = port
        self.timeout = timeout
        self.buf = bytearray()
        self.response = None
        self.pings = []  # payloads of pings seen by recv_message

    # -- connection-level ---------------------------------------------------

    @classmethod
    def connect(cls, port, path="/", extra_headers=(), extra=b"", **kw):
        """Connects and completes the upgrade, asserting 101."""
        c = cls(port, **kw)
        try:
            resp = c.handshake(path=path, extra_headers=extra_headers,
                               extra=extra)
            assert resp.status == 101, f"upgrade refused: {resp!r} " \
                f"{resp.body!r}"
        except BaseException:
            c.close()
            raise
        return c

    def handshake(self, path="/", key=None, extra_headers=(), extra=b"",
                  timeout=5.0, **kw):
        key = key or new_key()
        req = upgrade_request(path=path, key=key, extra_headers=extra_headers,
                              **kw)
        self.sock.sendall(req + extra)
        resp = self.read_http_response(timeout=timeout,
                                       read_body=False)
        if resp.status == 101:
            assert resp.headers.get("sec-websocket-accept") == \
                accept_key(key), f"bad Sec-WebSocket-Accept in {resp!r}"
        else:
            self._read_body(resp, timeout)
        self.response = resp
        return resp

    def read_http_response(self, timeout=5.0, read_body=True):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep, f"bad header line {line!r}"
            headers[name.strip().lower()] = value.strip()
        resp = HttpResponse(int(m.group(1)), m.group(2) or "", headers, b"",
                            head)
        if read_body:
            self._read_body(resp, max(0.1, deadline - time.monotonic()))
        return resp

    def _read_body(self, resp, timeout):
        deadline = time.monotonic() + timeout
        if "content-length" in resp.headers:
            n = int(resp.headers["content-length"])
            while len(self.buf) < n:
                self._fill(deadline)
            resp.body = bytes(self.buf[:n])
            del self.buf[:n]
        else:
            # No length: body runs to EOF.
            try:
                while True:
                    self._fill(deadline)
            except PeerClosed:
                pass
            resp.body = bytes(self.buf)
            self.buf.clear()

    def _fill(self, deadline):
        fill_buffer(self.sock, self.buf, deadline, "data from server")

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Drops the TCP connection without a close frame (RST)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- frames -------------------------------------------------------------

    def send_frame(self, opcode, payload=b"", **kw):
        self.send(build_frame(opcode, payload, **kw))

    def send_text(self, text, **kw):
        self.send_frame(OP_TEXT, text.encode("utf-8")
                        if isinstance(text, str) else text, **kw)

    def send_binary(self, data, **kw):
        self.send_frame(OP_BINARY, data, **kw)

    def send_close(self, code=None, reason=b"", **kw):
        self.send_frame(OP_CLOSE, close_payload(code, reason), **kw)

    def recv_frame(self, timeout=5.0):
        """Reads one server frame (strict: server frames must be unmasked)."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._take(2, deadline)
        masked = bool(b1 & 0x80)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8, deadline))[0]
        key = self._take(4, deadline) if masked else None
        payload = self._take(n, deadline)
        if masked:
            payload = apply_mask(payload, key)
        return Frame(bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, masked, payload)

    def recv_message(self, timeout=5.0, answer_pings=True):
        """Reads one complete data message: (opcode, payload bytes).

        Answers pings (masked pong, same payload) unless answer_pings is
        False, skips pongs, reassembles fragments, raises CloseReceived on a
        close frame and PeerClosed on EOF."""
        deadline = time.monotonic() + timeout
        opcode, parts = None, []
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            assert not f.masked, f"server sent a masked frame: {f!r}"
            assert f.rsv == 0, f"server set RSV bits: {f!r}"
            if f.opcode == OP_PING:
                self.pings.append(f.payload)
                if answer_pings:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                code, reason = f.close_info()
                raise CloseReceived(code, reason)
            if f.opcode == OP_CONT:
                assert opcode is not None, "server sent a stray continuation"
            else:
                assert opcode is None, "server interleaved data frames"
                assert f.opcode in (OP_TEXT, OP_BINARY), \
                    f"unexpected opcode from server: {f!r}"
                opcode = f.opcode
            parts.append(f.payload)
            if f.fin:
                return opcode, b"".join(parts)

    def recv_text(self, timeout=5.0):
        op, data = self.recv_message(timeout)
        assert op == OP_TEXT, f"expected text, got opcode {op} {data[:80]!r}"
        return data.decode("utf-8")

    def recv_binary(self, timeout=5.0):
        op, data = self.recv_message(timeout)
        assert op == OP_BINARY, f"expected binary, got opcode {op}"
        return data

    def cmd(self, text, timeout=5.0):
        """Sends a text command to cmd.lua and returns the text reply."""
        self.send_text(text)
        return self.recv_text(timeout)

    def expect_close(self, timeout=5.0, answer_pings=True):
        """Reads until a close frame; returns (code, reason bytes).

        Data messages before it are skipped. Returns (None, None) when the
        TCP connection ends without a close frame."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv_message(max(0.01, deadline - time.monotonic()),
                                  answer_pings=answer_pings)
            except CloseReceived as c:
                return c.code, c.reason
            except PeerClosed:
                return None, None

    def wait_eof(self, timeout=5.0):
        """Discards input until the TCP connection ends. True on EOF/reset,
        False on timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
                self.buf.clear()
        except PeerClosed:
            return True
        except TimeoutError:
            return False


def http_request(port, data, timeout=5.0):
    """Sends raw bytes, returns the HttpResponse (body read)."""
    c = RawClient(port, timeout=timeout)
    try:
        c.send(data)
        return c.read_http_response(timeout=timeout)
    finally:
        c.close()


def expect_fail(client, code, timeout=5.0):
    """The server must send a close frame with `code` and then drop TCP
    (without waiting for our close reply)."""
    got, reason = client.expect_close(timeout)
    if got is None:
        what = "TCP closed without a close frame" if reason is None \
            else "a close frame without a status code"
        raise AssertionError(f"expected close code {code}, got {what}")
    assert got == code, f"expected close code {code}, got {got} " \
        f"(reason {reason!r})"
    assert client.wait_eof(3.0), \
        "server did not close the TCP connection after failing it"
    return reason


# --------------------------------------------------------------------------
# python3-websockets helpers (asyncio only)
# --------------------------------------------------------------------------


def arun(coro, timeout=20.0):
    """Runs a coroutine to completion with a hard time limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_connect(url, **kw):
    import websockets
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 2)
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", None)
    return websockets.connect(url, **kw)


async def arecv(ws, timeout=5.0):
    return await asyncio.wait_for(ws.recv(), timeout)


# --------------------------------------------------------------------------
# cmd.lua conveniences
# --------------------------------------------------------------------------


def parse_kv(text, sep=","):
    out = {}
    for part in text.split(sep):
        if part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


def stats(client):
    """ws.stats() via the 'stats' command, values as ints where possible."""
    out = {}
    for k, v in parse_kv(client.cmd("stats")).items():
        try:
            out[k] = int(float(v))
        except ValueError:
            out[k] = v
    return out


def join(client, room):
    assert client.cmd(f"join:{room}") == f"joined:{room}"


def conn_id(client):
    return int(client.cmd("id"))


def observer(port):
    """A connection in room 'observers', which receives cmd.lua's
    on_close reports ("closeinfo:ID:ROOMS" then "closed:ID:CODE:REASON")."""
    c = RawClient.connect(port)
    join(c, "observers")
    return c


def wait_closed_report(obs, cid, timeout=5.0):
    """Waits for cmd.lua's on_close report about connection cid.

    Returns (code, reason, still_member_rooms)."""
    deadline = time.monotonic() + timeout
    info = None
    while True:
        msg = obs.recv_text(max(0.01, deadline - time.monotonic()))
        if msg.startswith(f"closeinfo:{cid}:"):
            info = msg[len(f"closeinfo:{cid}:"):]
        elif msg.startswith(f"closed:{cid}:"):
            code, _, reason = msg[len(f"closed:{cid}:"):].partition(":")
            return int(code), reason, info
