"""Hot reload of a script's module tree: modules in subdirectories of the
script's directory (lib/util.lua, required as "lib.util") are watched and
reload like the others, new subdirectories are picked up, the version in
the log covers the modules, and the handler table's checks (misspelt
handlers, handlers a reload drops) are logged.

The helpers and the script template are test_reload.py's."""

import hashlib
import re
import struct

from conftest import RawClient, wait_until
from test_reload import (DEBUG, RELOAD_WITHIN, app_dir, count_reloads, ping,
                         script_source, settle, start, wait_tag,
                         write_editor_style, write_in_place)


def versions(srv):
    """The sha256 prefixes of every version the log says runs, in order
    (the first from the "listening" line)."""
    return re.findall(r"version \d+ sha256:([0-9a-f]{12})", srv.log())


def expected_digest(src, modules):
    """What script.c hashes: the script, then for each module in name
    order "\\0NAME\\0CONTENT" and the content's size (8 bytes, native)."""
    h = hashlib.sha256(src.encode())
    for name, content in sorted(modules.items()):
        data = content.encode()
        h.update(b"\0" + name.encode() + b"\0" + data +
                 struct.pack("=Q", len(data)))
    return h.hexdigest()[:12]


def test_module_in_subdirectory_triggers_reload(server, tmp_path):
    d = app_dir(tmp_path)
    (d / "lib").mkdir()
    util = d / "lib" / "util.lua"
    write_in_place(util, 'return { tag = "m1" }\n')
    srv, script = start(server, tmp_path, module="lib.util")
    assert srv.wait_log(r"watching .* and 1 subdirectories for changes")
    a = RawClient.connect(srv.port)
    assert ping(a) == "v1:pong:m1"
    src = script_source("v1", module="lib.util")
    assert versions(srv) == [
        expected_digest(src, {"lib.util": 'return { tag = "m1" }\n'})]

    # Only the module in lib/ changes: a reload, a new version.
    write_in_place(util, 'return { tag = "m2" }\n')
    wait_until(lambda: ping(a) == "v1:pong:m2", RELOAD_WITHIN,
               what=lambda: f"module m2 in use; log:\n{srv.log()}")
    assert srv.wait_log(r"lib/util\.lua changed: reloading"), srv.log()
    assert srv.wait_log(r"now running version 2 "), srv.log()
    assert versions(srv)[-1] == expected_digest(
        src, {"lib.util": 'return { tag = "m2" }\n'})

    # Editor-style saves in lib/ too.
    write_editor_style(util, 'return { tag = "m3" }\n')
    wait_until(lambda: ping(a) == "v1:pong:m3", RELOAD_WITHIN,
               what=lambda: f"module m3 in use; log:\n{srv.log()}")
    assert len(set(versions(srv))) == 3
    a.close()


def test_deeper_module_and_init_lua(server, tmp_path):
    d = app_dir(tmp_path)
    (d / "lib" / "deep").mkdir(parents=True)
    init = d / "lib" / "deep" / "init.lua"
    write_in_place(init, 'return { tag = "d1" }\n')
    srv, script = start(server, tmp_path, module="lib.deep")
    assert srv.wait_log(r"watching .* and 2 subdirectories for changes")
    a = RawClient.connect(srv.port)
    assert ping(a) == "v1:pong:d1"
    write_in_place(init, 'return { tag = "d2" }\n')
    wait_until(lambda: ping(a) == "v1:pong:d2", RELOAD_WITHIN,
               what=lambda: f"module d2 in use; log:\n{srv.log()}")
    assert srv.wait_log(r"lib/deep/init\.lua changed: reloading"), srv.log()
    a.close()


def test_new_subdirectory_is_watched(server, tmp_path):
    srv, script = start(server, tmp_path)
    a = RawClient.connect(srv.port)
    d = app_dir(tmp_path)
    # A new directory with a module, then a script that requires it.
    (d / "plugins").mkdir()
    mod = d / "plugins" / "extra.lua"
    write_in_place(mod, 'return { tag = "p1" }\n')
    write_in_place(script, script_source("v2", module="plugins.extra"))
    wait_until(lambda: ping(a) == "v2:pong:p1", RELOAD_WITHIN,
               what=lambda: f"v2 with p1; log:\n{srv.log()}")
    # The directory is watched now: a change to the module alone reloads.
    n = count_reloads(srv)
    write_in_place(mod, 'return { tag = "p2" }\n')
    wait_until(lambda: ping(a) == "v2:pong:p2", RELOAD_WITHIN,
               what=lambda: f"module p2 in use; log:\n{srv.log()}")
    assert count_reloads(srv) > n
    assert srv.wait_log(r"plugins/extra\.lua changed"), srv.log()
    a.close()


def test_hidden_and_non_lua_directories_are_ignored(server, tmp_path):
    d = app_dir(tmp_path)
    (d / ".git").mkdir()
    (d / "data").mkdir()
    write_in_place(d / ".git" / "hook.lua", "return 1\n")
    srv, script = start(server, tmp_path, args=DEBUG)
    assert srv.wait_log(r"watching \S+ for changes to handler\.lua")
    a = RawClient.connect(srv.port)
    write_in_place(d / ".git" / "hook.lua", "return 2\n")
    (d / "data" / "notes.txt").write_text("not Lua\n")
    settle(srv, script)
    assert count_reloads(srv) == 0
    assert ping(a) == "v1:pong"
    a.close()


def test_too_many_module_directories_are_reported(server, tmp_path):
    d = app_dir(tmp_path)
    for i in range(70):
        sub = d / f"m{i:02d}"
        sub.mkdir()
        (sub / "x.lua").write_text("return 1\n")
    srv, script = start(server, tmp_path)
    assert srv.wait_log(r"watching .* and 64 subdirectories for changes")
    assert srv.wait_log(r"more than 64 directories under .* hold Lua files; "
                        r".* not watched \(reload with SIGHUP\)"), srv.log()
    a = RawClient.connect(srv.port)
    write_in_place(script, script_source("v2"))
    wait_tag(a, "v2")
    a.close()


MISSPELT = '''
H.on_mesage = function() end
H.onClose = function() end
H.online = true
'''


def test_handler_table_checks_are_logged(server, tmp_path):
    srv, script = start(server, tmp_path, extra=MISSPELT)
    log = srv.log()
    assert re.search(r"warn  \S+handler\.lua: the handler table has "
                     r"'on_mesage', which is not a handler and will never be "
                     r"called; did you mean on_message\?", log), log
    assert re.search(r"has 'onClose', .* did you mean on_close\?", log), log
    assert "'online'" not in log
    a = RawClient.connect(srv.port)

    # Every reload checks again; dropping a handler is said.
    extra = MISSPELT.replace("on_mesage", "On_Reload") + \
        "\nH.on_connect = nil\n"
    write_in_place(script, script_source("v2", extra=extra))
    wait_tag(a, "v2")
    assert srv.wait_log(r"has 'On_Reload', .* did you mean on_reload\?")
    assert srv.wait_log(r"warn  \S+handler\.lua: reload: on_connect is no "
                        r"longer defined"), srv.log()
    assert len(re.findall(r"has 'onClose'", srv.log())) == 2
    assert "no longer defined" not in srv.log().replace(
        "on_connect is no longer defined", "")
    a.close()
