"""An app repository of one's own: `cmake --install` of the build under test
(the directory of MOONROOM_BIN) into a temporary prefix, then, outside the
checkout, `moonroom new` from the installed binary, the new app's specs
under busted with only the prefix's Lua directories (taken from what
`moonroom new` printed), and the installed server serving the new app to a
websockets client. Also: the installed binary and kit hold no path into the
checkout's lua/, find their modules relative to where they are (and keep
doing so when the prefix moves), and the build directory's binary finds the
source tree's lua/; under a Lua that is not LuaJIT the kit says how to
select LuaJIT."""

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import (REPO_ROOT, arecv, arun, free_port, moonroom_bin,
                      require_bin, sanitized_build, wait_until, ws_connect)


def build_dir():
    """The CMake build directory of the binary under test."""
    d = require_bin().resolve().parent
    if not (d / "CMakeCache.txt").exists():
        pytest.skip(f"{moonroom_bin()} is not in a CMake build directory")
    return d


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """The build under test, installed into a fresh prefix."""
    p = tmp_path_factory.mktemp("prefix")
    assert REPO_ROOT not in p.parents
    r = subprocess.run(["cmake", "--install", str(build_dir()), "--prefix",
                        str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return p


def kit_env(extra):
    """The environment for busted: extra on top of ours, and the sanitizer
    runtimes preloaded into luajit when the kit was built with them (as the
    busted test in CMakeLists.txt does)."""
    env = dict(os.environ, **extra)
    for name in ("LUA_PATH", "LUA_CPATH"):
        if name not in extra:
            env.pop(name, None)
    if sanitized_build():
        libs = [subprocess.run(["cc", f"-print-file-name={lib}"],
                               capture_output=True, text=True,
                               timeout=10).stdout.strip()
                for lib in ("libasan.so", "libubsan.so")]
        env["LD_PRELOAD"] = ":".join(libs)
    return env


def new_app(prefix, where):
    """Runs the installed `moonroom new` in where (outside the checkout);
    returns the app's directory and what it printed."""
    r = subprocess.run([str(prefix / "bin" / "moonroom"), "new", "myapp"],
                       cwd=str(where), capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    return where / "myapp", r.stdout


def exports(out):
    """The NAME=VALUE pairs of the `export` line `moonroom new` printed."""
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("export"))
    words = shlex.split(line)[1:]
    return dict(w.split("=", 1) for w in words)


class App:
    """A moonroom process started from cwd (outside the checkout), stopped
    and reaped on exit; its log in log_path."""

    def __init__(self, binary, script, cwd, log_path):
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--listen", f"127.0.0.1:{self.port}", "--log-level",
             "debug", str(script)],
            cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=self._log)

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def __enter__(self):
        wait_until(lambda: self.proc.poll() is not None
                   or "listening on" in self.log(), 10,
                   what=lambda: f"the server to listen:\n{self.log()}")
        assert self.proc.poll() is None, self.log()
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        log = self.log()
        assert "AddressSanitizer" not in log and "runtime error:" not in log, log


PROBE = """
-- Answers every connection with where its modules come from.
local probe = require "mr_install_probe"
return {
  on_connect = function(conn)
    conn:send(probe .. "|" .. tostring(package.searchpath("moonroom.testing",
                                                          package.path)))
  end,
}
"""


def probe(binary, cwd, tmp_path):
    """Starts binary on the probe script in cwd and returns its answer."""
    (cwd / "probe.lua").write_text(PROBE)

    async def ask(url):
        async with ws_connect(url + "/") as ws:
            return await arecv(ws)

    with App(binary, "probe.lua", cwd, tmp_path / "probe.log") as app:
        return arun(ask(app.url))


# ---- install -------------------------------------------------------------------

def test_install_puts_the_server_modules_and_kit_in_the_lua_paths(prefix):
    assert os.access(prefix / "bin" / "moonroom", os.X_OK)
    assert (prefix / "share/lua/5.1/moonroom/testing.lua").is_file()
    assert (prefix / "lib/lua/5.1/moonroom/sim.so").is_file()
    # The moonroom module is built into the server; no second copy.
    assert not (prefix / "share/lua/5.1/moonroom.lua").exists()


def test_an_install_to_usr_local_is_on_luajits_default_paths(tmp_path):
    """Staged with DESTDIR: every Lua file lands in a directory LuaJIT
    searches without LUA_PATH or LUA_CPATH."""
    luajit = shutil.which("luajit")
    if not luajit:
        pytest.skip("luajit is not installed")
    r = subprocess.run(["cmake", "--install", str(build_dir()), "--prefix",
                        "/usr/local"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, DESTDIR=str(tmp_path)))
    assert r.returncode == 0, r.stdout + r.stderr
    env = {k: v for k, v in os.environ.items()
           if k not in ("LUA_PATH", "LUA_CPATH")}
    paths = subprocess.run(
        [luajit, "-e", "print(package.path) print(package.cpath)"],
        capture_output=True, text=True, timeout=10, env=env).stdout.split()
    templates = {".lua": paths[0].split(";"), ".so": paths[1].split(";")}
    staged = tmp_path / "usr/local"
    files = [f for f in staged.rglob("*") if f.suffix in templates]
    assert {f.name for f in files} == {"testing.lua", "sim.so"}
    for f in files:
        rel = "/" + str(f.relative_to(tmp_path))
        assert any(t.replace("?", "moonroom/" + f.stem) == rel
                   for t in templates[f.suffix]), (rel, templates[f.suffix])
    assert (staged / "bin/moonroom").is_file()


def test_installed_files_hold_no_path_into_the_checkout(prefix):
    checkout_lua = str(REPO_ROOT / "lua").encode()
    for f in (prefix / "bin" / "moonroom", prefix / "lib/lua/5.1/moonroom/sim.so"):
        assert checkout_lua not in f.read_bytes(), f


def test_installed_server_finds_modules_in_its_prefix_even_after_a_move(
        prefix, tmp_path):
    # A module that exists only in the prefix: the checkout cannot supply it.
    lua = prefix / "share/lua/5.1"
    (lua / "mr_install_probe.lua").write_text("return 'from the prefix'\n")
    try:
        cwd = tmp_path / "app"
        cwd.mkdir()
        got = probe(prefix / "bin/moonroom", cwd, tmp_path)
        assert got == (f"from the prefix|{lua.resolve()}/moonroom/testing.lua")
        # The same tree somewhere else: found where it now is.
        moved = tmp_path / "moved"
        shutil.copytree(prefix, moved, symlinks=True)
        got = probe(moved / "bin/moonroom", cwd, tmp_path)
        assert got == ("from the prefix|"
                       f"{(moved / 'share/lua/5.1').resolve()}"
                       "/moonroom/testing.lua")
    finally:
        (lua / "mr_install_probe.lua").unlink()


def test_build_directory_binary_finds_the_source_trees_lua(tmp_path):
    binary = build_dir() / "moonroom"
    cwd = tmp_path / "app"
    cwd.mkdir()
    (cwd / "mr_install_probe.lua").write_text("return 'next to the script'\n")
    got = probe(binary, cwd, tmp_path)
    assert got == ("next to the script|"
                   f"{(REPO_ROOT / 'lua').resolve()}/moonroom/testing.lua")


# ---- moonroom new, outside the checkout ------------------------------------

def test_new_app_passes_its_specs_under_busted(prefix, tmp_path):
    if not shutil.which("busted"):
        pytest.skip("busted is not installed")
    app, out = new_app(prefix, tmp_path)
    for f in ("app.lua", "spec/app_spec.lua", ".busted"):
        assert (app / f).is_file()
        assert f"wrote myapp/{f}\n" in out, out
    assert f"run it:   {prefix}/bin/moonroom myapp/app.lua\n" in out, out
    assert "test it:  cd myapp && busted\n" in out, out
    assert 'lua = "luajit"' in (app / ".busted").read_text()

    # The prefix is not one LuaJIT searches: `new` says what to export.
    env = exports(out)
    assert env == {"LUA_PATH": f"{prefix.resolve()}/share/lua/5.1/?.lua;;",
                   "LUA_CPATH": f"{prefix.resolve()}/lib/lua/5.1/?.so;;"}
    r = subprocess.run(["busted", "-o", "plainTerminal"], cwd=str(app),
                       env=kit_env(env), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"\b6 successes / 0 failures / 0 errors", r.stdout), \
        r.stdout + r.stderr

    # A second `new` refuses, exit 1, and leaves the app as it was.
    (app / "app.lua").write_text("-- mine\n")
    r = subprocess.run([str(prefix / "bin/moonroom"), "new", "myapp"],
                       cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert "myapp/app.lua already exists; nothing written" in r.stderr
    assert (app / "app.lua").read_text() == "-- mine\n"


def test_kit_under_another_lua_says_to_select_luajit(prefix, tmp_path):
    lua52 = shutil.which("lua5.2")
    if not shutil.which("busted") or not lua52:
        pytest.skip("busted or lua5.2 is not installed")
    app, out = new_app(prefix, tmp_path)
    r = subprocess.run(["busted", f"--lua={lua52}", "-o", "plainTerminal"],
                       cwd=str(app), env=kit_env(exports(out)),
                       capture_output=True, text=True, timeout=60)
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "moonroom.testing: the test kit needs LuaJIT" in text, text
    assert "busted --lua=luajit" in text, text
    assert "undefined symbol" not in text, text


def test_installed_server_serves_the_new_app(prefix, tmp_path):
    app, _ = new_app(prefix, tmp_path)

    async def chat(url):
        async with ws_connect(url + "/?room=dev&name=ada") as ada:
            async with ws_connect(url + "/?room=dev&name=bob") as bob:
                assert await arecv(ada) == "bob joined"
                await bob.send("hi")
                assert await arecv(bob) == "bob: hi"
                assert await arecv(ada) == "bob: hi"
                await ada.send("/who")
                assert await arecv(ada) == "2 here"
            assert await arecv(ada) == "bob left"

    with App(prefix / "bin/moonroom", "app.lua", app, tmp_path / "app.log") as srv:
        arun(chat(srv.url))
