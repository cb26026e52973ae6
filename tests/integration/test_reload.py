"""Hot reload: the server watches its handler script's directory and reloads
the script (and the modules it requires from that directory) when one
changes; SIGHUP reloads too.

Every test writes its scripts into its own temporary directory (never into
the repository) and starts the server on that copy. Scripts are generated
from the template below: each version answers with its tag, so a reply says
which version handled it.
"""

import hashlib
import os
import re
import signal
import time

from conftest import RawClient, poll, wait_until

# Reloads must show up within this long of a save (the watcher debounces
# for a fraction of a second).
RELOAD_WITHIN = 2.0

# What the watcher logs, at debug level, when events changed nothing.
UNCHANGED = "content unchanged, not reloading"
DEBUG = ("--log-level", "debug")

TEMPLATE = r'''-- reload test script, version __TAG__
local ws = require "moonroom"
__REQUIRE__
local TAG = "__TAG__"
local hits = {}

local H = { hits = hits }

function H.on_connect(conn, req)
  conn.state.connected_under = TAG
end

function H.on_message(conn, msg)
  local cmd, arg = msg:match("^(%w+):?(.*)$")
  if cmd == "ping" then
    conn:send(TAG .. ":pong"__MODTAG__)
  elseif cmd == "join" then
    ws.join(conn, arg)
    conn:send(TAG .. ":joined:" .. arg)
  elseif cmd == "pub" then                 -- pub:ROOM:TEXT, no reply
    local room, text = arg:match("^([^:]+):(.*)$")
    ws.broadcast(room, TAG .. ":" .. text)
  elseif cmd == "set" then
    conn.state.x = arg
    conn:send(TAG .. ":set:" .. arg)
  elseif cmd == "get" then
    conn:send(TAG .. ":get:" .. tostring(conn.state.x) .. ":" ..
              tostring(conn.state.connected_under))
  elseif cmd == "rooms" then
    conn:send(TAG .. ":rooms:" .. table.concat(ws.rooms(conn), ","))
  elseif cmd == "hit" then
    hits.n = (hits.n or 0) + 1
    conn:send(TAG .. ":hits:" .. hits.n .. ":" .. tostring(hits.migrated))
  elseif cmd == "stats" then
    local s = ws.stats()
    conn:send(TAG .. ":stats:" .. s.reloads .. ":" .. s.reload_failures)
  else
    conn:send(TAG .. ":echo:" .. msg)
  end
end

__EXTRA__

return H
'''


def script_source(tag, extra="", module=None):
    src = TEMPLATE.replace("__TAG__", tag).replace("__EXTRA__", extra)
    if module:
        src = src.replace("__REQUIRE__", f'local mod = require "{module}"')
        src = src.replace("__MODTAG__", ' .. ":" .. mod.tag')
    else:
        src = src.replace("__REQUIRE__", "").replace("__MODTAG__", "")
    return src


def app_dir(tmp_path):
    """The watched directory: separate from tmp_path, where logs go."""
    d = tmp_path / "app"
    d.mkdir(exist_ok=True)
    return d


def write_in_place(path, text):
    """Rewrites the file itself (same inode), as `echo > file` does."""
    with open(path, "w") as f:
        f.write(text)


def write_editor_style(path, text):
    """Writes a temporary file next to it and renames it over the file, as
    many editors do (new inode)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def start(server, tmp_path, tag="v1", args=(), **kw):
    script = app_dir(tmp_path) / "handler.lua"
    write_in_place(script, script_source(tag, **kw))
    srv = server(script=script, args=args)
    if "--no-reload" not in args:
        assert srv.wait_log(r"watching .* for changes", timeout=5), srv.log()
    return srv, script


def ping(client):
    return client.cmd("ping")


def wait_tag(client, tag, timeout=RELOAD_WITHIN):
    """Pings until a reply comes from version `tag`; returns (reply,
    seconds waited). Fails after timeout."""
    t0 = time.monotonic()
    replies = []

    def running():
        replies.append(ping(client))
        return replies[-1].startswith(tag + ":") and replies[-1]

    reply = wait_until(running, timeout, what=lambda: f"version {tag} to "
                       f"run; last reply {replies[-1]!r}")
    return reply, time.monotonic() - t0


def count_reloads(srv):
    return len(re.findall(r"now running version \d+", srv.log()))


def unchanged_after(srv, save, timeout=RELOAD_WITHIN + 3):
    """Does save() (something that leaves every watched file's content as
    it is) and waits until the watcher logs that it found nothing changed.
    The server must run with --log-level debug.

    The watcher handles events in order, in bursts, DEBOUNCE after a
    burst's last event, and it either reloads or logs UNCHANGED. So once
    the line comes, every save before save() has been dealt with, and had
    any of them (or this one) led to a reload, its line would be in the
    log: the positive sign that stands in for "wait and see that nothing
    happens"."""
    n = srv.log().count(UNCHANGED)
    save()
    wait_until(lambda: srv.log().count(UNCHANGED) > n, timeout,
               what=lambda: f"the watcher to log {UNCHANGED!r} after a "
               f"save that changed nothing; log:\n{srv.log()}")


def settle(srv, script):
    """Touches the script and waits until the watcher has handled that
    (see unchanged_after): every earlier save has then been dealt with."""
    unchanged_after(srv, lambda: os.utime(script))


# -- (1) in-place edit --------------------------------------------------------

def test_in_place_edit_reloads_and_keeps_connections(server, tmp_path):
    srv, script = start(server, tmp_path)
    a = RawClient.connect(srv.port)
    b = RawClient.connect(srv.port)
    assert a.cmd("join:lobby") == "v1:joined:lobby"
    assert b.cmd("join:lobby") == "v1:joined:lobby"
    assert a.cmd("set:42") == "v1:set:42"

    write_in_place(script, script_source("v2"))
    reply, waited = wait_tag(a, "v2")
    assert reply == "v2:pong"
    assert waited < RELOAD_WITHIN

    # The same connection: its state and its rooms survived the reload.
    assert a.cmd("get") == "v2:get:42:v1"
    assert a.cmd("rooms") == "v2:rooms:lobby"
    # Broadcasts from the new version reach the old members.
    b.send_text("pub:lobby:hello")
    assert a.recv_text() == "v2:hello"
    assert b.recv_text() == "v2:hello"
    # New connections get the new version too.
    c = RawClient.connect(srv.port)
    assert c.cmd("get") == "v2:get:nil:v2"
    assert srv.wait_log(r"reloaded .*handler\.lua: now running version 2 ")
    for x in (a, b, c):
        x.close()


# -- (2) editor-style save ---------------------------------------------------------

def test_editor_style_rename_reloads_repeatedly(server, tmp_path):
    srv, script = start(server, tmp_path)
    a = RawClient.connect(srv.port)
    assert a.cmd("set:kept") == "v1:set:kept"
    # Twice: a watch on the file itself would be lost after the first
    # rename replaced the inode.
    write_editor_style(script, script_source("v2"))
    wait_tag(a, "v2")
    write_editor_style(script, script_source("v3"))
    wait_tag(a, "v3")
    # And an in-place edit still works after the renames.
    write_in_place(script, script_source("v4"))
    wait_tag(a, "v4")
    assert a.cmd("get") == "v4:get:kept:v1"
    assert srv.wait_log(r"now running version 4 ")
    # The temporary files the "editor" wrote did not cause extra reloads.
    assert count_reloads(srv) == 3
    a.close()


# -- (3) broken saves ----------------------------------------------------------------

def broken_syntax():
    # Line 3 is the broken one.
    return "local ws = require 'moonroom'\nlocal ok = 1\nlocal x = = 2\n" \
           "return {}\n"


def broken_runtime():
    return "local ws = require 'moonroom'\n\nerror('refusing to load')\n" \
           "return {}\n"


def test_broken_script_keeps_old_version_then_fix_loads(server, tmp_path):
    srv, script = start(server, tmp_path)
    a = RawClient.connect(srv.port)
    assert a.cmd("join:room") == "v1:joined:room"

    for n, broken in enumerate((broken_syntax(), broken_runtime()), 1):
        write_in_place(script, broken)
        # One error line naming the file and the line (3 in both).
        m = srv.wait_log(r"(?m)^.* error .*reload of .*handler\.lua failed, "
                         r"keeping version 1 sha256:\w+: .*handler\.lua:3:.*$",
                         timeout=RELOAD_WITHIN + 1)
        assert m, srv.log()
        wait_until(lambda: srv.log().count("failed, keeping version 1") >= n,
                   RELOAD_WITHIN + 1,
                   what=lambda: f"failed reload #{n} in the log:\n{srv.log()}")
        # Still serving, with the old handlers, on old and new connections.
        assert ping(a) == "v1:pong"
        c = RawClient.connect(srv.port)
        assert ping(c) == "v1:pong"
        c.close()
        assert srv.alive()

    assert "'=' expected near '='" in srv.log() or \
        "unexpected symbol" in srv.log()
    assert "refusing to load" in srv.log()
    assert a.cmd("stats") == "v1:stats:0:2"

    # Fix it: the new version loads, the connection and its room survive.
    write_in_place(script, script_source("v2"))
    wait_tag(a, "v2")
    assert a.cmd("rooms") == "v2:rooms:room"
    assert a.cmd("stats") == "v2:stats:1:2"
    # The failed attempts did not use up version numbers.
    assert srv.wait_log(r"now running version 2 ")
    a.close()


def test_not_a_handler_table_is_refused(server, tmp_path):
    srv, script = start(server, tmp_path)
    a = RawClient.connect(srv.port)
    write_in_place(script, "return 42\n")
    assert srv.wait_log(r"reload of .* failed.*must return a table",
                        timeout=RELOAD_WITHIN + 1), srv.log()
    assert ping(a) == "v1:pong"
    a.close()


# -- (4) on_reload migrates state ------------------------------------------------

MIGRATE = r'''
function H.on_reload(old)
  for k, v in pairs(old.hits or {}) do hits[k] = v end
  hits.migrated = "from-" .. tostring(old.tag_for_migration)
end
H.tag_for_migration = TAG
'''

MIGRATE_FAILS = r'''
H.tag_for_migration = TAG
function H.on_reload(old)
  error("cannot migrate from " .. tostring(old.tag_for_migration))
end
'''


def test_on_reload_migrates_state(server, tmp_path):
    srv, script = start(server, tmp_path, args=DEBUG,
                        extra="H.tag_for_migration = TAG")
    a = RawClient.connect(srv.port)
    for i in range(1, 4):
        assert a.cmd("hit") == f"v1:hits:{i}:nil"

    write_in_place(script, script_source("v2", extra=MIGRATE))
    wait_tag(a, "v2")
    # The count carried over from v1's table into v2's.
    assert a.cmd("hit") == "v2:hits:4:from-v1"

    # An on_reload that raises keeps the running version and its state.
    write_in_place(script, script_source("v3", extra=MIGRATE_FAILS))
    assert srv.wait_log(r"cannot migrate from v2", timeout=RELOAD_WITHIN + 1)
    assert srv.wait_log(r"reload of .*handler\.lua failed, keeping version 2",
                        timeout=2)
    settle(srv, script)
    assert ping(a) == "v2:pong"
    assert a.cmd("hit") == "v2:hits:5:from-v1"

    # v4 migrates from v2 (v3 never ran).
    write_in_place(script, script_source("v4", extra=MIGRATE))
    wait_tag(a, "v4")
    assert a.cmd("hit") == "v4:hits:6:from-v2"
    a.close()


# -- (5) SIGHUP and --no-reload ------------------------------------------------

def test_no_reload_ignores_edits_sighup_reloads(server, tmp_path):
    srv, script = start(server, tmp_path, args=("--no-reload",))
    a = RawClient.connect(srv.port)
    assert a.cmd("set:s") == "v1:set:s"
    assert "watching" not in srv.log()

    write_in_place(script, script_source("v2"))
    write_editor_style(script, script_source("v3"))
    # A bounded negative wait: without a watcher nothing happens, so there
    # is nothing to wait for. A watcher would have reloaded DEBOUNCE
    # (0.15 s) after these saves; with it the other tests see the new
    # version within about 0.2 s. Versions only move forward, so one ping
    # after the wait tells whether any reload happened during it.
    time.sleep(0.5)
    assert ping(a) == "v1:pong"
    assert count_reloads(srv) == 0

    srv.proc.send_signal(signal.SIGHUP)
    reply, _ = wait_tag(a, "v3")
    assert reply == "v3:pong"
    assert a.cmd("get") == "v3:get:s:v1"
    assert srv.wait_log(r"SIGHUP: reloading")
    assert srv.wait_log(r"now running version 2 ")
    assert srv.alive()
    a.close()


def test_sighup_with_watcher_reloads_too(server, tmp_path):
    srv, script = start(server, tmp_path)
    a = RawClient.connect(srv.port)
    srv.proc.send_signal(signal.SIGHUP)
    assert srv.wait_log(r"now running version 2 ", timeout=RELOAD_WITHIN)
    assert ping(a) == "v1:pong"  # same content, reloaded on demand
    write_in_place(script, script_source("v2"))
    wait_tag(a, "v2")
    assert srv.wait_log(r"now running version 3 ")
    a.close()


# -- (6) reload under a steady stream of broadcasts ------------------------------

def test_reload_during_broadcast_stream_loses_nothing(server, tmp_path):
    N = 2000
    REWRITES = 5
    srv, script = start(server, tmp_path)
    subs = [RawClient.connect(srv.port, timeout=10) for _ in range(3)]
    for s in subs:
        assert s.cmd("join:feed") == "v1:joined:feed"
    pub = RawClient.connect(srv.port, timeout=10)

    # The script is rewritten REWRITES times, each time once the previous
    # version runs (so that each save is its own reload), while a stream of
    # ~20 messages every 15 ms goes on, so reloads land in the middle of
    # it. The stream is paced by waiting for the pending reload.
    batch = 20
    sent = 0

    def send_batch():
        nonlocal sent
        for i in range(sent, min(N, sent + batch)):
            pub.send_text(f"pub:feed:{i}")
        sent = min(N, sent + batch)

    send_batch()
    assert ping(pub) == "v1:pong"  # v1 has handled the first batch
    for rewrites in range(1, REWRITES + 1):
        writer = write_editor_style if rewrites % 2 else write_in_place
        writer(script, script_source(f"v{rewrites + 1}"))
        deadline = time.monotonic() + RELOAD_WITHIN + 3
        while count_reloads(srv) < rewrites:
            assert time.monotonic() < deadline, \
                f"version {rewrites + 1} not loaded:\n{srv.log()}"
            if sent < N:
                send_batch()
            poll(lambda: count_reloads(srv) >= rewrites, 0.015)
    while sent < N:  # the reloads were done before the stream was
        send_batch()
    # A last message after the whole stream, from the last version.
    pub.send_text("pub:feed:end")
    last = f"v{REWRITES + 1}"

    for s in subs:
        seen_tags = []
        for i in range(N):
            msg = s.recv_text(timeout=10)
            tag, _, num = msg.partition(":")
            assert num == str(i), f"expected message {i}, got {msg!r}"
            if not seen_tags or seen_tags[-1] != tag:
                seen_tags.append(tag)
        # Versions only move forward, and the stream spanned reloads.
        nums = [int(t[1:]) for t in seen_tags]
        assert nums == sorted(nums), seen_tags
        assert len(seen_tags) >= 2, seen_tags
        # Nothing more: each message exactly once. Every copy of a stream
        # message would have been queued before the last message, which
        # was broadcast after the whole stream.
        after = s.recv_text(timeout=10)
        assert after == f"{last}:end", f"extra data after the stream: " \
            f"{after!r}"
        assert not s.buf, "extra data after the stream"

    wait_tag(pub, last, timeout=RELOAD_WITHIN + 1)
    assert srv.wait_log(rf"now running version {REWRITES + 1} ")
    assert "failed" not in srv.log()
    for c in subs + [pub]:
        c.close()


# -- (7) a changed module from the script's directory ----------------------------

def test_changed_module_triggers_reload(server, tmp_path):
    d = app_dir(tmp_path)
    mod = d / "reload_mod.lua"
    write_in_place(mod, 'return { tag = "m1" }\n')
    srv, script = start(server, tmp_path, module="reload_mod")
    a = RawClient.connect(srv.port)
    assert ping(a) == "v1:pong:m1"
    assert a.cmd("set:y") == "v1:set:y"

    # Only the module changes: the script is reloaded and requires the new
    # module code (package.loaded does not keep the old one).
    write_in_place(mod, 'return { tag = "m2" }\n')
    wait_until(lambda: ping(a) == "v1:pong:m2", RELOAD_WITHIN,
               what=lambda: f"module m2 in use; log:\n{srv.log()}")
    assert srv.wait_log(r"reload_mod\.lua changed: reloading")
    assert a.cmd("get") == "v1:get:y:v1"

    # Editor-style save of the module works too.
    write_editor_style(mod, 'return { tag = "m3" }\n')
    wait_until(lambda: ping(a) == "v1:pong:m3", RELOAD_WITHIN,
               what=lambda: f"module m3 in use; log:\n{srv.log()}")

    # A broken module keeps what runs, with the module's file and line.
    write_in_place(mod, 'local t = {\nreturn t\n')
    assert srv.wait_log(r"reload of .* failed.*reload_mod\.lua:2:",
                        timeout=RELOAD_WITHIN + 1), srv.log()
    assert ping(a) == "v1:pong:m3"
    write_in_place(mod, 'return { tag = "m4" }\n')
    wait_until(lambda: ping(a) == "v1:pong:m4", RELOAD_WITHIN,
               what=lambda: f"module m4 in use; log:\n{srv.log()}")
    a.close()


def test_other_files_in_directory_are_ignored(server, tmp_path):
    srv, script = start(server, tmp_path, args=DEBUG)
    a = RawClient.connect(srv.port)
    d = app_dir(tmp_path)
    (d / "notes.txt").write_text("not Lua\n")
    (d / "data.json").write_text("{}\n")
    (d / "notes.txt").write_text("still not Lua\n")
    settle(srv, script)
    assert ping(a) == "v1:pong"
    assert count_reloads(srv) == 0
    a.close()


# -- (8) versions in the log; unchanged saves do nothing -------------------------

def test_log_names_running_version(server, tmp_path):
    srv, script = start(server, tmp_path)
    src1 = script_source("v1")
    sha = hashlib.sha256(src1.encode()).hexdigest()[:12]
    assert re.search(rf"listening on .*version 1 sha256:{sha}\)", srv.log())
    a = RawClient.connect(srv.port)
    for n in (2, 3, 4):
        src = script_source(f"v{n}")
        write_in_place(script, src)
        wait_tag(a, f"v{n}")
        sha = hashlib.sha256(src.encode()).hexdigest()[:12]
        assert srv.wait_log(
            rf"reloaded .*handler\.lua: now running version {n} "
            rf"sha256:{sha}\b"), srv.log()
    assert count_reloads(srv) == 3
    a.close()


def test_unchanged_saves_do_not_reload(server, tmp_path):
    srv, script = start(server, tmp_path, args=DEBUG)
    a = RawClient.connect(srv.port)
    src = script.read_text()
    # Each save on its own, each seen by the watcher as changing nothing.
    unchanged_after(srv, lambda: os.utime(script))              # touch
    unchanged_after(srv, lambda: write_in_place(script, src))   # in place
    unchanged_after(srv, lambda: write_editor_style(script, src))  # rename
    assert ping(a) == "v1:pong"
    assert count_reloads(srv) == 0
    # Nothing about reloading was logged, apart from the debug lines that
    # say that nothing was reloaded.
    said = [line for line in srv.log().split("watching", 1)[1].splitlines()
            if "reload" in line and UNCHANGED not in line]
    assert not said, said
    # A real change afterwards still reloads.
    write_in_place(script, script_source("v2"))
    wait_tag(a, "v2")
    assert count_reloads(srv) == 1
    a.close()


def test_burst_of_writes_is_one_reload(server, tmp_path):
    srv, script = start(server, tmp_path, args=DEBUG)
    a = RawClient.connect(srv.port)
    # Many small writes in quick succession (an editor writing in chunks).
    src = script_source("v2")
    with open(script, "w") as f:
        for i in range(0, len(src), 64):
            f.write(src[i:i + 64])
            f.flush()
            # Pacing, not waiting for anything: the writes are spread out
            # in time, as an editor's are, but closer together than the
            # watcher's debounce.
            time.sleep(0.002)
    wait_tag(a, "v2")
    settle(srv, script)  # instead of waiting to see no second reload
    assert count_reloads(srv) == 1, srv.log()
    assert "failed" not in srv.log()
    a.close()


# -- shutdown with the watcher running ----------------------------------------------

def test_sigterm_exits_with_watcher_running(server, tmp_path):
    srv, script = start(server, tmp_path)
    a = RawClient.connect(srv.port)
    write_in_place(script, script_source("v2"))
    wait_tag(a, "v2")
    srv.signal(signal.SIGTERM)
    assert a.expect_close(timeout=5)[0] == 1001
    a.close()
    assert srv.wait(timeout=5) == 0
    assert "stopped:" in srv.log()


def test_failed_reload_restores_modules_for_old_handlers(server, tmp_path):
    # The old handlers require a module lazily, at message time. A reload
    # that fails must leave package.loaded as it was, so the old code keeps
    # getting the old module, not the new file the failed attempt loaded.
    d = app_dir(tmp_path)
    lazy = d / "lazy_mod.lua"
    write_in_place(lazy, 'return { v = "old" }\n')
    extra = '''
local orig = H.on_message
function H.on_message(conn, msg)
  if msg == "lazy" then return conn:send(TAG .. ":lazy:" .. require("lazy_mod").v) end
  return orig(conn, msg)
end
'''
    srv, script = start(server, tmp_path, extra=extra)
    a = RawClient.connect(srv.port)
    assert a.cmd("lazy") == "v1:lazy:old"
    # One save breaks the script and changes the module: the reload loads the
    # new module, then fails on the script's syntax error.
    broken = script_source("v2", extra=extra).replace("return H", "return H end")
    write_in_place(lazy, 'return { v = "new" }\n')
    write_in_place(script, broken)
    assert srv.wait_log(r"reload of .* failed", timeout=RELOAD_WITHIN + 1), srv.log()
    assert a.cmd("lazy") == "v1:lazy:old"
    a.close()
