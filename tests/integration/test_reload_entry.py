"""SIGHUP and the file watcher reload through one entry point (reload.c):
the same content digest, the same one-line failure log.

These tests start the real binary on a script in their own temporary
directory and send it real signals.
"""

import re
import signal

SCRIPT = '''return { on_message = function(conn, msg) conn:send("%s") end }
'''

BROKEN = '''local function helper() error("boom at load") end
helper()
return {}
'''


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_sighup_after_an_edit_reloads_once(server, tmp_path):
    """An edit followed at once by SIGHUP: the signal loads the new content,
    and the watcher, firing after its debounce, sees that content already
    loaded. (When SIGHUP bypassed reload.c, the watcher's digest was stale
    and the same content was loaded a second time, as version 3.)"""
    script = tmp_path / "h.lua"
    write(script, SCRIPT % "v1")
    srv = server(script=script, args=("--log-level", "debug"))
    assert srv.wait_log(r"watching ")
    write(script, SCRIPT % "v2")
    srv.proc.send_signal(signal.SIGHUP)
    assert srv.wait_log(r"SIGHUP: reloading")
    assert srv.wait_log(r"now running version 2 ")
    # The watcher's verdict on the same burst of events is logged either
    # way; then it must not have loaded anything more.
    assert srv.wait_log(r"content unchanged, not reloading")
    assert "now running version 3" not in srv.log()
    assert len(re.findall(r"reloaded .*: now running", srv.log())) == 1


def test_sighup_failure_is_one_log_line(server, tmp_path):
    """A script that raises at load, reloaded by SIGHUP: the error and its
    traceback are one log line naming the running version kept, as for a
    reload by the watcher."""
    script = tmp_path / "h.lua"
    write(script, SCRIPT % "v1")
    srv = server(script=script, args=("--no-reload",))
    write(script, BROKEN)
    srv.proc.send_signal(signal.SIGHUP)
    m = srv.wait_log(r"reload of \S+ failed, keeping version 1 [^\n]*")
    assert m, srv.log()
    line = m.group(0)
    assert "boom at load" in line
    assert "stack traceback: | " in line
    for other in srv.log().splitlines():
        assert not other.startswith("\t"), other
        assert not other.startswith("stack traceback"), other
    assert srv.alive()
