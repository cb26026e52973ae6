"""Command line: --help, --version, usage errors (exit 2), script load
errors (exit 1), log levels."""

import re
import signal

import pytest

from conftest import (CMD_SCRIPT, REPO_ROOT, RawClient, free_port, run_bin)


def project_version():
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    m = re.search(r"project\(\s*moonroom\s+VERSION\s+([0-9.]+)", text)
    return m.group(1) if m else None


def test_help_exits_0_with_usage_on_stdout():
    r = run_bin(["--help"])
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert re.search(r"usage", out, re.I), out
    for opt in ("--listen", "--max-message", "--max-backpressure",
                "--idle-timeout", "--ping-interval", "--handshake-timeout",
                "--log-level"):
        assert opt in out, f"{opt} not documented in --help:\n{out}"


def test_version_exits_0_and_prints_version():
    r = run_bin(["--version"])
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode() + r.stderr.decode()
    version = project_version()
    if version:
        assert version in out, out
    else:
        assert re.search(r"\d+\.\d+\.\d+", out), out


def _assert_usage_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.decode().strip()
    assert err, "usage error printed nothing on stderr"
    assert len(err.splitlines()) == 1, \
        f"usage error should be one line on stderr, got:\n{err}"


@pytest.mark.parametrize("args", [
    ["--no-such-option"],
    ["--max-message", "abc"],
    ["--max-message", "-5"],
    ["--max-message", ""],
    ["--max-backpressure", "lots"],
    ["--idle-timeout", "x"],
    ["--idle-timeout", "-1"],
    ["--ping-interval", "soon"],
    ["--handshake-timeout", "nope"],
    ["--log-level", "verbose"],
    ["--listen", "not-an-address"],
    ["--listen", "127.0.0.1:99999"],
    ["--listen", "127.0.0.1:http"],
], ids=lambda a: " ".join(a) or "empty")
def test_bad_option_exits_2_with_one_line(args):
    port = free_port()
    if args[0] != "--listen":
        args = ["--listen", f"127.0.0.1:{port}", *args]
    r = run_bin([*args, CMD_SCRIPT])
    _assert_usage_error(r)


def test_option_missing_its_value_exits_2():
    r = run_bin([CMD_SCRIPT, "--max-message"])
    _assert_usage_error(r)


def test_missing_script_exits_2():
    r = run_bin(["--listen", f"127.0.0.1:{free_port()}"])
    _assert_usage_error(r)


def _load_error(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(source)
    r = run_bin(["--listen", f"127.0.0.1:{free_port()}", path])
    return r, r.stderr.decode(errors="replace")


def test_script_syntax_error_exits_1_naming_file_and_line(tmp_path):
    r, err = _load_error(tmp_path, "bad_syntax.lua",
                         "local ws = require 'moonroom'\n"
                         "local t = {}\n"
                         "t.x = = 3\n"
                         "return t\n")
    assert r.returncode == 1, (r.returncode, err)
    assert "bad_syntax.lua:3" in err, err


def test_script_runtime_error_exits_1_naming_file_and_line(tmp_path):
    r, err = _load_error(tmp_path, "bad_runtime.lua",
                         "local ws = require 'moonroom'\n"
                         "\n"
                         "\n"
                         "local x = nil\n"
                         "x.field = 1\n"
                         "return {}\n")
    assert r.returncode == 1, (r.returncode, err)
    assert "bad_runtime.lua:5" in err, err


def test_script_raising_error_exits_1_naming_file_and_line(tmp_path):
    r, err = _load_error(tmp_path, "bad_raise.lua",
                         "-- comment\n"
                         "error('refusing to load')\n")
    assert r.returncode == 1, (r.returncode, err)
    assert "bad_raise.lua:2" in err, err
    assert "refusing to load" in err, err


@pytest.mark.parametrize("ret", ["return 42", "return nil", "",
                                 "return 'handlers'"])
def test_script_not_returning_table_exits_1(tmp_path, ret):
    r, err = _load_error(tmp_path, "bad_return.lua",
                         "local ws = require 'moonroom'\n" + ret + "\n")
    assert r.returncode == 1, (r.returncode, err)
    assert "bad_return.lua" in err, err


def test_nonexistent_script_fails_naming_file(tmp_path):
    missing = tmp_path / "does_not_exist.lua"
    r = run_bin(["--listen", f"127.0.0.1:{free_port()}", missing])
    err = r.stderr.decode(errors="replace")
    assert r.returncode in (1, 2), (r.returncode, err)
    assert "does_not_exist.lua" in err, err


def test_port_in_use_fails(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        port = s.getsockname()[1]
        r = run_bin(["--listen", f"127.0.0.1:{port}", CMD_SCRIPT])
        assert r.returncode != 0, r.stderr
        assert r.stderr.strip(), "no message for a failed listen"
    finally:
        s.close()


def _log_lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_log_lines_have_level_words(server):
    srv = server()
    c = RawClient.connect(srv.port)
    assert c.cmd("hello") == "hello"
    c.send_close(1000)
    c.expect_close()
    c.close()
    srv.wait_log(r"(?i)\binfo\b", 3)
    lines = _log_lines(srv.log())
    assert lines, "default log level logged nothing for a connection"
    for line in lines:
        assert re.search(r"(?i)\b(debug|info|warn|warning|error)\b", line), \
            f"log line without a level word: {line!r}"
    assert any(re.search(r"(?i)\binfo\b", line) for line in lines), lines


def test_log_level_error_suppresses_info(server):
    srv = server(args=["--log-level", "error"])
    c = RawClient.connect(srv.port)
    assert c.cmd("hello") == "hello"
    c.send_close(1000)
    c.expect_close()
    c.close()
    # A handshake that is refused is at most a warning, not an error.
    c2 = RawClient(srv.port)
    c2.send(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    c2.read_http_response()
    c2.close()
    # Stop the server and wait for it to exit: then its log is complete,
    # whatever it was going to say about these connections (and about its
    # own shutdown, which must not be logged at info either).
    srv.signal(signal.SIGTERM)
    assert srv.wait(timeout=10) == 0, srv.log()
    for line in _log_lines(srv.log()):
        assert not re.search(r"(?i)\b(info|debug)\b", line), \
            f"--log-level error still logged: {line!r}"


def test_log_level_debug_is_accepted(server):
    srv = server(args=["--log-level", "debug"])
    c = RawClient.connect(srv.port)
    assert c.cmd("x") == "x"
    c.close()
