#!/usr/bin/python3
"""moonroom benchmark driver.

Runs every scenario against moonroom and against the Node.js + ws peer
(tests/bench/peer/server.js), interleaved round by round, each run on a fresh
server on a free loopback port, and reports medians with min-max and the ratio
moonroom/peer. Writes docs/bench/results.md, docs/bench/fanout.png and the raw
JSON of every run under docs/bench/raw/ (git-ignored).

  /usr/bin/python3 tests/bench/run.py                 # full run, 3 rounds
  /usr/bin/python3 tests/bench/run.py --rounds 5
  /usr/bin/python3 tests/bench/run.py --only fanout-1k,idle
  /usr/bin/python3 tests/bench/run.py --smoke         # what ctest bench.smoke runs

Only the standard library is used; gnuplot (Debian gnuplot-nox) is installed
with apt-get when missing and a plot is wanted.
"""
import argparse
import atexit
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEER_DIR = os.path.join(HERE, "peer")
DOCS = os.path.join(ROOT, "docs", "bench")

# Every process this script starts, so that every exit path kills them.
CHILDREN = []


def kill_children():
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
    for p in CHILDREN:
        try:
            p.wait(timeout=5)
        except Exception:
            pass


def on_signal(signum, _frame):
    kill_children()
    sys.exit(128 + signum)


atexit.register(kill_children)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGHUP, on_signal)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fail(msg):
    log("bench: FAIL: " + msg)
    sys.exit(1)


# ---------------------------------------------------------------- setup


def build(build_dir):
    log(f"bench: building in {build_dir}")
    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        subprocess.run(["cmake", "-S", ROOT, "-B", build_dir], check=True,
                       stdout=sys.stderr)
    subprocess.run(["cmake", "--build", build_dir, "-j2", "--target", "moonroom",
                    "moonroom-loadgen"], check=True, stdout=sys.stderr)


def npm_install():
    """Installs the peer's dependency (ws) into tests/bench/peer/node_modules."""
    # npm rewrites node_modules/.package-lock.json on every install.
    marker = os.path.join(PEER_DIR, "node_modules", ".package-lock.json")
    lock = os.path.join(PEER_DIR, "package-lock.json")
    if (os.path.exists(marker) and
            os.path.exists(os.path.join(PEER_DIR, "node_modules", "ws", "package.json")) and
            (not os.path.exists(lock) or os.path.getmtime(marker) >= os.path.getmtime(lock))):
        return
    if not shutil.which("npm") or not shutil.which("node"):
        fail("node and npm are needed for the Node.js peer (tests/bench/peer); "
             "install Debian's nodejs and npm")
    log("bench: npm install in tests/bench/peer")
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=PEER_DIR,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not os.path.exists(marker):
        fail("`npm install --no-audit --no-fund` failed in tests/bench/peer, so the "
             "Node.js peer cannot run (is the npm registry reachable?). npm said:\n"
             + r.stdout[-3000:])


def ensure_gnuplot():
    if shutil.which("gnuplot"):
        return True
    log("bench: installing gnuplot-nox with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "gnuplot-nox"]
    quiet = dict(env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    r = subprocess.run(cmd, **quiet)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], **quiet)
        r = subprocess.run(cmd, **quiet)
    if not shutil.which("gnuplot"):
        log("bench: WARNING: gnuplot is not available (apt-get said:\n" + r.stdout[-1500:] +
            ")\nfanout.png not written")
        return False
    return True


def make_test_certs(outdir):
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost
    signed by it (ECDSA P-256, valid a day), made with the openssl command in
    outdir by the integration tests' helper (tests/integration/tlsutil.py).
    Returns {"ca", "cert", "key"} paths; nothing of it is kept."""
    if not shutil.which("openssl"):
        fail("the TLS scenarios need the openssl command (Debian package openssl)")
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    from tlsutil import make_ca, make_cert
    ca = make_ca(outdir, "moonroom-bench-ca")
    leaf = make_cert(ca, "localhost")
    return {"ca": ca.cert, "cert": leaf.cert, "key": leaf.key}


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_busy_s():
    """Seconds of CPU the whole machine spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_wait=60.0, threshold=0.25):
    """Waits until the rest of the machine uses less than `threshold` cores
    (measured over half a second), so that one engineer's test run does not
    land in the middle of a measurement. Returns the load seen last."""
    deadline = time.monotonic() + max_wait
    warned = False
    while True:
        b0, t0 = cpu_busy_s(), time.monotonic()
        time.sleep(0.5)
        load = (cpu_busy_s() - b0) / (time.monotonic() - t0)
        if load < threshold or time.monotonic() > deadline:
            return load
        if not warned:
            log(f"bench: the machine is busy ({load:.2f} cores used by other processes); "
                f"waiting up to {max_wait:.0f}s for it to calm down")
            warned = True


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1048576:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def out(cmd, cwd=None):
        try:
            return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True,
                                  timeout=10).stdout.strip()
        except Exception:
            return ""

    ws_version = ""
    try:
        with open(os.path.join(PEER_DIR, "node_modules", "ws", "package.json")) as f:
            ws_version = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "memory": mem,
        "open_files_limit": out(["sh", "-c", "ulimit -n"]),
        "node": out(["node", "--version"]),
        "ws": ws_version,
        "commit": out(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT),
        # read-only: --no-optional-locks keeps git from touching the index
        "dirty": subprocess.run(["git", "--no-optional-locks", "diff", "--quiet", "HEAD", "--",
                                 "core", "lua", "CMakeLists.txt"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                                ).returncode == 1,
    }


# ---------------------------------------------------------------- servers


class Server:
    """One server process on a free loopback port, started fresh for each run."""

    def __init__(self, kind, cmd_fn, logdir, label):
        self.kind = kind
        self.port = free_port()
        self.label = label
        self.logpath = os.path.join(logdir, f"{label}-{self.port}.log")
        self.logf = open(self.logpath, "w")
        cmd = cmd_fn(self.port)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=HERE)
        CHILDREN.append(self.proc)
        self.wait_ready()

    def tail(self):
        try:
            with open(self.logpath) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail(f"{self.label} server exited with status {self.proc.returncode} at "
                     f"start: {' '.join(self.cmd)}\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        fail(f"{self.label} server did not listen on 127.0.0.1:{self.port} within "
             f"{timeout:.0f}s: {' '.join(self.cmd)}\n{self.tail()}")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.logf.close()


# ---------------------------------------------------------------- scenarios


def scenarios(smoke):
    """Each scenario: name, title, loadgen arguments, variants, metrics."""
    if smoke:
        fan = dict(warmup=0.2, duration=1.0)
        return [
            dict(name="fanout-1k", kind="fanout", variants="servers", trace=True,
                 args=["--scenario", "fanout", "--conns", "20", "--window", "16"], **fan),
            dict(name="echo-100", kind="chat", variants="servers",
                 args=["--scenario", "chat", "--conns", "8", "--room-size", "1",
                       "--rate", "0", "--window", "1"], warmup=0.1, duration=0.5),
            dict(name="chat-10k", kind="chat", variants="servers",
                 args=["--scenario", "chat", "--conns", "40", "--room-size", "4",
                       "--rate", "20"], **fan),
            dict(name="idle", kind="idle", variants="servers",
                 args=["--scenario", "idle", "--conns", "50", "--hold", "0.5"]),
            dict(name="lua-fanout-1k", kind="fanout", variants="scripts",
                 args=["--scenario", "fanout", "--conns", "10", "--window", "16"],
                 warmup=0.1, duration=0.5),
            dict(name="lua-echo", kind="chat", variants="scripts",
                 args=["--scenario", "chat", "--conns", "8", "--room-size", "1",
                       "--rate", "0", "--window", "4"], warmup=0.1, duration=0.5),
            dict(name="publish-1k", kind="fanout", variants="moonroom",
                 args=["--scenario", "fanout", "--conns", "10", "--window", "16",
                       "--http-publish"], warmup=0.1, duration=0.5),
            dict(name="fanout-1k-deflate", kind="fanout", variants="deflate",
                 args=["--scenario", "fanout", "--conns", "20", "--window", "16",
                       "--size", "1024", "--payload", "chat"], warmup=0.1, duration=0.5),
            dict(name="idle-deflate", kind="idle", variants="deflate",
                 args=["--scenario", "idle", "--conns", "50", "--hold", "0.3"]),
            dict(name="presence-1k", kind="presence", variants="cluster",
                 members=30),
            dict(name="fanout-1k-tls", kind="fanout", variants="tls",
                 args=["--scenario", "fanout", "--conns", "20", "--window", "16"],
                 warmup=0.1, duration=0.5),
            dict(name="idle-tls", kind="idle", variants="tls",
                 args=["--scenario", "idle", "--conns", "50", "--hold", "0.3"]),
            dict(name="crossnode-1k", kind="crossnode", variants="engines",
                 args=["--scenario", "fanout", "--conns", "20", "--window", "16"],
                 warmup=0.2, duration=1.0),
        ]
    return [
        dict(name="fanout-1k", kind="fanout", variants="servers", trace=True,
             title="fan-out, 1,000 subscribers, 64 B, 16 in flight",
             args=["--scenario", "fanout", "--conns", "1000", "--window", "16"],
             warmup=1, duration=5),
        dict(name="fanout-10k", kind="fanout", variants="servers", trace=True,
             title="fan-out, 10,000 subscribers, 64 B, 16 in flight",
             args=["--scenario", "fanout", "--conns", "10000", "--window", "16",
                   "--stall", "20"],
             warmup=1, duration=6),
        dict(name="echo-100", kind="chat", variants="servers",
             title="echo, 100 connections alone in their rooms, 1 in flight each",
             args=["--scenario", "chat", "--conns", "100", "--room-size", "1",
                   "--rate", "0", "--window", "1"],
             warmup=1, duration=5),
        dict(name="chat-10k", kind="chat", variants="servers",
             title="chat, 10,000 connections in 1,000 rooms of 10, 1 msg/s each",
             args=["--scenario", "chat", "--conns", "10000", "--room-size", "10",
                   "--rate", "1"],
             warmup=2, duration=8),
        dict(name="idle", kind="idle", variants="servers",
             title="idle, 19,000 connections (rooms of 10)",
             args=["--scenario", "idle", "--conns", "19000", "--room-size", "10",
                   "--hold", "2", "--concurrency", "256"]),
        dict(name="lua-fanout-1k", kind="fanout", variants="scripts",
             title="Lua cost: fan-out, 1,000 subscribers",
             args=["--scenario", "fanout", "--conns", "1000", "--window", "16"],
             warmup=1, duration=4),
        dict(name="lua-echo", kind="chat", variants="scripts",
             title="Lua cost: echo, 100 connections alone in their rooms, 4 in flight each",
             args=["--scenario", "chat", "--conns", "100", "--room-size", "1",
                   "--rate", "0", "--window", "4"],
             warmup=1, duration=4),
        # moonroom only: the Node peer has no HTTP publish path.
        dict(name="publish-1k", kind="fanout", variants="moonroom",
             title="publish over HTTP: POST requests per second over one keep-alive "
                   "connection (16 pipelined), each fanned out to 1,000 subscribers, 64 B",
             args=["--scenario", "fanout", "--conns", "1000", "--window", "16",
                   "--http-publish"],
             warmup=1, duration=5),
        # permessage-deflate on and off, both servers: messages big enough to
        # be compressed (over the 128-byte threshold), of chat-like JSON.
        dict(name="fanout-1k-deflate", kind="fanout", variants="deflate",
             title="fan-out with and without permessage-deflate, 1,000 subscribers, "
                   "1 KiB of chat-like JSON, 16 in flight",
             args=["--scenario", "fanout", "--conns", "1000", "--window", "16",
                   "--size", "1024", "--payload", "chat"],
             warmup=1, duration=5),
        dict(name="idle-deflate", kind="idle", variants="deflate",
             title="idle with and without permessage-deflate negotiated, 19,000 connections "
                   "(rooms of 10)",
             args=["--scenario", "idle", "--conns", "19000", "--room-size", "10",
                   "--hold", "2", "--concurrency", "256"]),
        # moonroom only, three nodes: cluster-wide presence after a join storm.
        dict(name="presence-1k", kind="presence", variants="cluster", members=1000,
             title="presence: 1,000 connections join and are tracked in one room, "
                   "spread over 3 nodes"),
        # TLS (wss://) beside plain, both servers: the same fan-out and idle
        # connections, with a certificate from a throw-away CA made at start.
        dict(name="fanout-1k-tls", kind="fanout", variants="tls",
             title="fan-out over TLS and plain, 1,000 subscribers, 64 B, 16 in flight",
             args=["--scenario", "fanout", "--conns", "1000", "--window", "16"],
             warmup=1, duration=5),
        dict(name="idle-tls", kind="idle", variants="tls",
             title="idle over TLS and plain, 19,000 connections (rooms of 10)",
             args=["--scenario", "idle", "--conns", "19000", "--room-size", "10",
                   "--hold", "2", "--concurrency", "256"]),
        # moonroom only, two nodes: every delivery crosses from the
        # publisher's node to the subscribers' node, through a mesh link or
        # through Redis.
        dict(name="crossnode-1k", kind="crossnode", variants="engines",
             title="cross-node fan-out, 1,000 subscribers on node B, the publisher on "
                   "node A, 64 B, 16 in flight: the mesh beside Redis",
             args=["--scenario", "fanout", "--conns", "1000", "--window", "16"],
             warmup=1, duration=5),
        # The same with 10 subscribers: the hop between the nodes, not the
        # fan-out on B, is what limits it.
        dict(name="crossnode-10", kind="crossnode", variants="engines",
             title="cross-node messages, 10 subscribers on node B, the publisher on "
                   "node A, 64 B, 16 in flight: the mesh beside Redis",
             args=["--scenario", "fanout", "--conns", "10", "--window", "16"],
             warmup=1, duration=5),
        dict(name="presence-10k", kind="presence", variants="cluster", members=10000,
             title="presence: 10,000 connections join and are tracked in one room, "
                   "spread over 3 nodes"),
    ]


def trace_paths(port):
    """The two files of a traced run: the server's (--trace-latency) and the
    load generator's (--trace-out)."""
    base = os.path.join(tempfile.gettempdir(), f"moonroom-trace-{os.getpid()}-{port}")
    return base + ".server", base + ".loadgen"


def variants(kind, opts, sc=None):
    bench = os.path.join(HERE, "bench.lua")
    mr_extra = ["--ping-interval", "0", "--idle-timeout", "0",
                "--max-backpressure", str(opts.max_backpressure)]

    def moonroom(script, extra=()):
        return lambda port: [opts.moonroom, "--listen", f"127.0.0.1:{port}", *mr_extra,
                             *extra, script]

    node = lambda port: ["node", os.path.join(PEER_DIR, "server.js"), str(port), "127.0.0.1"]
    if kind == "servers":
        vs = [("moonroom", moonroom(bench)), ("node", node)]
        if sc and sc.get("trace"):
            # A third run of moonroom with every broadcast frame's timings
            # written out, for the breakdown of where the latency goes.
            vs.append(("moonroom traced", lambda port: moonroom(
                bench, ["--trace-latency", trace_paths(port)[0]])(port)))
        return vs
    if kind == "deflate":
        # Both with their compression settings alike (see peer/server.js).
        return [("moonroom", moonroom(bench)),
                ("moonroom deflate", moonroom(bench, ["--compression", "on"])),
                ("node", node),
                ("node deflate", lambda port: node(port) + ["deflate"])]
    if kind == "tls":
        t = opts.tls
        return [("moonroom", moonroom(bench)),
                ("moonroom tls", moonroom(bench, ["--tls-cert", t["cert"],
                                                  "--tls-key", t["key"]])),
                ("node", node),
                ("node tls", lambda port: node(port) + ["--tls-cert", t["cert"],
                                                        "--tls-key", t["key"]])]
    if kind == "moonroom":
        return [("moonroom", moonroom(bench))]
    if kind == "cluster":
        return [("moonroom", None)]  # presence_run starts its own nodes
    if kind == "engines":
        return [("mesh", None), ("redis", None)]  # crossnode_run starts them
    return [("bench_min.lua", moonroom(os.path.join(HERE, "bench_min.lua"))),
            ("bench.lua", moonroom(bench)),
            ("bench_work.lua", moonroom(os.path.join(HERE, "bench_work.lua"))),
            ("bench_json.lua", moonroom(os.path.join(HERE, "bench_json.lua")))]


# Load generator options a variant needs: bench_json.lua's clients speak JSON.
VARIANT_LOADGEN_ARGS = {"bench_json.lua": ["--json"],
                        # --deflate: offer permessage-deflate, require it, inflate.
                        "moonroom deflate": ["--deflate"], "node deflate": ["--deflate"]}


def run_loadgen(opts, sc, server, holding_cb=None):
    tls = server.kind.endswith(" tls")
    args = [opts.loadgen, "--url", f"{'wss' if tls else 'ws'}://127.0.0.1:{server.port}/",
            "--server-pid", str(server.proc.pid), *sc["args"],
            *VARIANT_LOADGEN_ARGS.get(server.kind, [])]
    if server.kind == "moonroom traced":
        args += ["--trace-out", trace_paths(server.port)[1]]
    if tls:
        # The certificate is verified (chain and IP address) on every
        # connection, as a client on the internet would.
        args += ["--tls-ca", opts.tls["ca"]]
    if "duration" in sc:
        args += ["--warmup", str(sc["warmup"]), "--duration", str(sc["duration"])]
    budget = 120 + sc.get("duration", 0) * 2
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    CHILDREN.append(p)
    err_lines = []
    held = {}

    def read_stderr():
        for line in p.stderr:
            err_lines.append(line)
            if line.startswith("HOLDING") and holding_cb:
                held.update(holding_cb(int(line.split()[1])))

    t = threading.Thread(target=read_stderr, daemon=True)
    t.start()
    try:
        p.wait(timeout=budget)  # the JSON is one short line: the pipe cannot fill
        out = p.stdout.read()
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        out = ""
    t.join(timeout=5)
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"ok": False, "error": f"loadgen printed no JSON (exit {p.returncode}): "
               + "".join(err_lines)[-500:] + out[-500:]}
    res["exit"] = p.returncode
    res.update(held)
    return res


def one_run(opts, sc, label, cmd_fn, logdir):
    res = {}
    if not opts.smoke:
        res["load_before"] = wait_quiet()
    b0, c0, t0 = cpu_busy_s(), children_cpu_s(), time.monotonic()
    own0 = sum(os.times()[:2])
    if sc["kind"] == "presence":
        res.update(presence_run(opts, sc, logdir))
    elif sc["kind"] == "crossnode":
        res.update(crossnode_run(opts, sc, label, logdir))
    else:
        res.update(server_run(opts, sc, label, cmd_fn, logdir))
        if label == "moonroom traced" and res.get("port"):
            res["breakdown"] = breakdown(*trace_paths(res["port"]))
    # Whatever CPU the machine spent beyond this run's own processes (the
    # server and the loadgen, both waited for by now, and this script, the
    # presence scenarios' client) was someone else's.
    wall = time.monotonic() - t0
    other = ((cpu_busy_s() - b0) - (children_cpu_s() - c0)
             - (sum(os.times()[:2]) - own0))
    res["other_cpu_pct"] = max(0.0, 100.0 * other / wall) if wall > 0 else 0.0
    return res


def server_run(opts, sc, label, cmd_fn, logdir):
    server = Server(label, cmd_fn, logdir, f"{sc['name']}-{label}")
    try:
        time.sleep(0.2)
        rss0 = rss_kib(server.proc.pid)
        hold_cb = None
        if sc["kind"] == "idle":
            def hold_cb(n):
                time.sleep(0.5)  # let the last on_connect calls and allocations settle
                return {"rss_after_kib": rss_kib(server.proc.pid), "held": n}
        res = run_loadgen(opts, sc, server, hold_cb)
        res["rss_before_kib"] = rss0
        if "rss_after_kib" in res and res.get("held"):
            res["rss_per_conn_b"] = (res["rss_after_kib"] - rss0) * 1024.0 / res["held"]
            res["rss_after_mib"] = res["rss_after_kib"] / 1024.0
        if not server.alive():
            res["ok"] = False
            res["error"] = (f"server exited with status {server.proc.returncode} during the "
                            f"run; log tail:\n{server.tail()}")
        res["server_log"] = server.logpath
        res["port"] = server.port
        return res
    finally:
        server.stop()


def lua_alone(smoke):
    """Times each script's on_message alone in LuaJIT (tests/bench/lua_cost.lua)."""
    luajit = shutil.which("luajit")
    if not luajit:
        log("bench: luajit (Debian package luajit) not found; skipping the Lua-alone timing")
        return {}
    out = {}
    for script in ("bench_min.lua", "bench.lua", "bench_work.lua", "bench_json.lua"):
        r = subprocess.run([luajit, os.path.join(HERE, "lua_cost.lua"),
                            os.path.join(HERE, script), "20000" if smoke else "2000000"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=300)
        try:
            out[script] = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[script] = {"error": r.stdout[-1000:] or f"exit {r.returncode}"}
    return out


# The stages of a broadcast message's way, in order: (key, what it is).
# Stamps: sent (load generator), read / handed to the handler / queued for
# every recipient / first and last socket write (moonroom --trace-latency),
# first and last subscriber received (load generator). Same clock.
STAGES = [
    ("unread", "unread in the publisher's socket (sent → read returned)"),
    ("parse", "read → handed to the handler (parsing; earlier messages of the same read)"),
    ("handler", "handler → queued for every subscriber (Lua, the broadcast)"),
    ("wait", "queued → first subscriber's socket write"),
    ("sweep", "first → last subscriber's socket write (the write sweep)"),
    ("tail", "last socket write → last subscriber read it (load generator)"),
    ("first_rx", "sent → first subscriber read it"),
    ("total", "sent → last subscriber read it (completion)"),
]


def pctl(vals, p):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(p * len(vals)))] if vals else None


def breakdown(srv_path, lg_path):
    """Joins a traced run's two files by message number: where each message's
    time went, as percentiles (µs) of every stage, and how the server batched
    (messages per read, per socket write; loop turns per sweep)."""
    srv, footer = {}, {}
    try:
        with open(srv_path) as f:
            for line in f:
                if line.startswith("#"):
                    w = line[1:].split()
                    if w and w[0] == "frames":
                        footer = {w[i]: int(w[i + 1]) for i in range(0, len(w) - 1, 2)}
                    continue
                v = [int(x) for x in line.split()]
                srv[v[0]] = v
        rows = []
        with open(lg_path) as f:
            for line in f:
                seq, sent, first_rx, last_rx = (int(x) for x in line.split())
                s = srv.get(seq)
                if not s or not s[6]:
                    continue
                _, read_no, in_read, rd, msg, q, fw, lw, _rec, _wr, tq, tl = s
                rows.append(dict(unread=rd - sent, parse=msg - rd, handler=q - msg,
                                 wait=fw - q, sweep=lw - fw, tail=last_rx - lw,
                                 first_rx=first_rx - sent, total=last_rx - sent,
                                 turns=tl - tq, read_no=read_no, in_read=in_read))
    except (OSError, ValueError, IndexError) as e:
        return {"error": f"cannot read the trace: {e}"}
    finally:
        for path in (srv_path, lg_path):
            try:
                os.unlink(path)
            except OSError:
                pass
    if not rows:
        return {"error": "no traced message was joined"}
    out = {"messages": len(rows)}
    for key, _ in STAGES:
        vals = [r[key] / 1e3 for r in rows]
        out[key] = {p: pctl(vals, q) for p, q in (("p50", .5), ("p90", .9), ("p99", .99))}
    per_read = {}
    for r in rows:
        per_read[r["read_no"]] = max(per_read.get(r["read_no"], 0), r["in_read"])
    out["msgs_per_read"] = statistics.mean(per_read.values())
    out["turns_p50"] = pctl([r["turns"] for r in rows], .5)
    if footer.get("sends"):
        out["blocks_per_send"] = footer["sent_blocks"] / footer["sends"]
    out["lost"] = footer.get("lost")
    return out


def derived(res):
    """Adds per-delivery and per-message server CPU costs."""
    cpu = res.get("server_cpu_pct")
    if cpu is not None:
        if res.get("deliveries_per_s"):
            res["server_us_per_delivery"] = cpu / 100.0 / res["deliveries_per_s"] * 1e6
        if res.get("msgs_per_s"):
            res["server_us_per_msg"] = cpu / 100.0 / res["msgs_per_s"] * 1e6
    lat = res.get("latency_us") or {}
    for k in ("p50", "p99"):
        if k in lat and lat.get("count"):
            res["lat_" + k] = lat[k]
    comp = res.get("complete_us") or {}
    if comp.get("count"):
        res["complete_p99"] = comp["p99"]
    return res


def check_smoke(sc, label, res):
    problems = []
    if not res.get("ok"):
        problems.append(f"not ok: {res.get('error')} {res.get('first_tls_error', '')}")
    if label.endswith(" tls"):
        # Every connection must have completed a verified TLS handshake
        # (1.2 or 1.3) before its WebSocket one.
        if not res.get("tls") or res.get("tls_verify") != "ca":
            problems.append("the load generator did not run with --tls --tls-ca")
        elif not res.get("opened") or res.get("tls_handshakes", 0) < res.get("opened"):
            problems.append(f"{res.get('tls_handshakes')} TLS handshakes for "
                            f"{res.get('opened')} connections")
        elif not str(res.get("tls_version", "")).startswith("TLSv1."):
            problems.append(f"TLS version {res.get('tls_version')!r}")
    elif res.get("tls_handshakes"):
        problems.append(f"{res['tls_handshakes']} TLS handshakes in a plain run")
    if label == "moonroom traced":
        bd = res.get("breakdown") or {}
        if "error" in bd or not bd.get("messages"):
            problems.append(f"no latency breakdown: {bd.get('error')}")
    if sc["kind"] == "presence":
        pass  # ok means every node converged
    elif sc["kind"] == "idle":
        if res.get("opened", 0) < 50:
            problems.append(f"only {res.get('opened')} of 50 connections opened")
    else:
        if not res.get("deliveries"):
            problems.append("no message was delivered")
        for k in ("order_violations", "missing", "malformed", "cross_room",
                  "protocol_errors", "closed_by_server"):
            if res.get(k):
                problems.append(f"{k} = {res[k]}")
        if label.endswith(" deflate") and not res.get("inflated_msgs"):
            problems.append("permessage-deflate negotiated, yet no compressed message came")
        if sc["variants"] == "tls" and not label.endswith(" tls") and res.get("tls"):
            problems.append("TLS without a tls variant")
        if sc["variants"] == "deflate" and not label.endswith(" deflate") and \
                res.get("inflated_msgs"):
            problems.append("compressed messages without --deflate")
    return problems


# ---------------------------------------------------------------- presence

PRESENCE_NODES = 3
PRESENCE_ROOM = "storm"


def node_view(port, n):
    """GET / of bench_presence.lua on one node: its counts, presence size and
    frame counters."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /?room={PRESENCE_ROOM}&n={n} HTTP/1.1\r\nHost: x\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def open_storm(ports, n, concurrency):
    """Opens n WebSocket connections round-robin over ports, at most
    `concurrency` handshakes in flight, each joining and being tracked in
    PRESENCE_ROOM by the handler. Returns the open sockets and the time the
    last upgrade answer arrived."""
    import selectors
    sel = selectors.DefaultSelector()
    socks, opened, started, last = [], 0, 0, time.monotonic()
    key = "dGhlIHNhbXBsZSBub25jZQ=="

    def start(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", ports[i % len(ports)]))
        req = (f"GET /?room={PRESENCE_ROOM}&name=p{i} HTTP/1.1\r\nHost: x\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        sel.register(s, selectors.EVENT_WRITE, [req, b""])
        socks.append(s)

    deadline = time.monotonic() + 120
    while opened < n:
        while started < n and started - opened < concurrency:
            start(started)
            started += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {opened} of {n} connections upgraded in 120 s")
        for k, ev in sel.select(timeout=1.0):
            s, st = k.fileobj, k.data
            if ev & selectors.EVENT_WRITE:
                s.send(st[0])
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("a node closed a connection during the handshake")
            st[1] += chunk
            if b"\r\n\r\n" in st[1]:
                if not st[1].startswith(b"HTTP/1.1 101"):
                    raise RuntimeError("upgrade refused: " + st[1][:200].decode("latin-1"))
                sel.unregister(s)
                opened += 1
                last = time.monotonic()
    sel.close()
    return socks, last


def presence_run(opts, sc, logdir):
    """A join storm on a 3-node cluster: N connections spread over the
    nodes, each joining and tracked in one room (bench_presence.lua), as fast
    as the client can open them. Measures how long until every node's
    ws.count(room, "cluster") and ws.presence(room) reach N, from the first
    connect and from the last upgrade, and the COUNTS and PRESENCE frames the
    nodes sent (summed over links) per join."""
    n = sc["members"]
    script = os.path.join(HERE, "bench_presence.lua")
    servers, socks = [], []
    res = {"ok": False}
    try:
        seed = None
        for i in range(PRESENCE_NODES):
            cport = free_port()
            name = "n%d" % i

            def cmd(port, cport=cport, name=name, seed=seed):
                c = [opts.moonroom, "--listen", f"127.0.0.1:{port}", "--ping-interval", "0",
                     "--idle-timeout", "0", "--node", name, "--cookie", "bench",
                     "--cluster-listen", f"127.0.0.1:{cport}"]
                if seed:
                    c += ["--peer", seed]
                return c + [script]
            servers.append(Server("moonroom", cmd, logdir, f"{sc['name']}-{name}"))
            seed = seed or f"127.0.0.1:{cport}"
        ports = [sv.port for sv in servers]
        deadline = time.monotonic() + 20
        while not all(node_view(p, 0)["peers"] == PRESENCE_NODES - 1 for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes did not link up within 20 s")
            time.sleep(0.05)
        before = [node_view(p, 0) for p in ports]
        t0 = time.monotonic()
        socks, last = open_storm(ports, n, sc.get("concurrency", 256))
        deadline = time.monotonic() + 60
        while True:
            views = [node_view(p, n) for p in ports]
            if all(v["cluster"] == n and v["presence"] == n for v in views):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no convergence within 60 s: {views}")
            time.sleep(0.005)
        done = time.monotonic()
        frames = sum(a["counts_out"] + a["presence_out"] - b["counts_out"] - b["presence_out"]
                     for a, b in zip(views, before))
        res = {"ok": True, "members": n, "storm_s": last - t0,
               "joins_per_s": n / (last - t0) if last > t0 else None,
               "converge_ms": (done - t0) * 1e3, "after_last_ms": (done - last) * 1e3,
               "frames": frames, "frames_per_join": frames / n,
               "links": PRESENCE_NODES * (PRESENCE_NODES - 1)}
        for sv in servers:
            if not sv.alive():
                res = {"ok": False, "error": f"a node exited:\n{sv.tail()}"}
    except (RuntimeError, OSError, ValueError) as e:
        res = {"ok": False, "error": str(e)}
    finally:
        for s in socks:
            s.close()
        for sv in servers:
            sv.stop()
    res["server_log"] = servers[0].logpath if servers else ""
    return res


# ---------------------------------------------------------------- cross-node


def admin_metric(port, name):
    """One sample of a node's /metrics (its --admin-listen port), or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in (name, name + "_total"):
            return float(parts[1])
    return None


def crossnode_run(opts, sc, label, logdir):
    """Fan-out across two nodes: the subscribers on node B, the publisher on
    node A (moonroom-loadgen --pub-url), so every delivery crosses from A to
    B once per message: over the mesh link (label "mesh"), or published to
    Redis by A and received by B's subscription (label "redis", on a
    redis-server this run starts on a free port, no persistence). Waits
    until A and B are linked (cluster_links_up) or both are connected to
    Redis (engine_connected) before the load generator starts."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    from redisutil import RedisServer
    servers, rs = [], None
    res = {"ok": False}
    try:
        common = [opts.moonroom, "--ping-interval", "0", "--idle-timeout", "0",
                  "--max-backpressure", str(opts.max_backpressure)]
        bench = os.path.join(HERE, "bench.lua")
        admin = {}
        if label == "redis":
            rs = RedisServer(logdir, name=f"{sc['name']}-redis-{free_port()}")
            rs.start()
            CHILDREN.append(rs.proc)
            prefix = "bench%d" % os.getpid()
        cport_a = free_port()
        for name in ("a", "b"):
            aport = free_port()
            admin[name] = aport
            if label == "redis":
                extra = ["--engine", rs.url, "--redis-prefix", prefix]
                ready = "moonroom_engine_connected"
            else:
                extra = ["--cookie", "bench"] + (
                    ["--cluster-listen", f"127.0.0.1:{cport_a}"] if name == "a" else
                    ["--cluster-listen", f"127.0.0.1:{free_port()}",
                     "--peer", f"127.0.0.1:{cport_a}"])
                ready = "moonroom_cluster_links_up"

            def cmd(port, extra=extra, name=name, aport=aport):
                return [*common, "--listen", f"127.0.0.1:{port}", "--node", name,
                        "--admin-listen", f"127.0.0.1:{aport}", *extra, bench]
            servers.append(Server("moonroom", cmd, logdir, f"{sc['name']}-{label}-{name}"))
        deadline = time.monotonic() + 20
        while not all((admin_metric(admin[n], ready) or 0) >= 1 for n in ("a", "b")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the nodes did not report {ready} >= 1 within 20 s")
            time.sleep(0.05)
        a, b = servers
        sc2 = dict(sc, args=[*sc["args"], "--pub-url", f"ws://127.0.0.1:{a.port}/",
                             "--settle", "1"])
        res = run_loadgen(opts, sc2, b)
        res["engine"] = label
        for sv in servers:
            if not sv.alive():
                res = {"ok": False, "error": f"a node exited:\n{sv.tail()}"}
        if rs is not None and not rs.alive():
            res = {"ok": False, "error": "redis-server exited during the run"}
    except (RuntimeError, OSError, ValueError) as e:
        res = {"ok": False, "error": str(e)}
    finally:
        for sv in servers:
            sv.stop()
        if rs is not None:
            rs.stop()
    res["server_log"] = servers[-1].logpath if servers else ""
    return res


# ---------------------------------------------------------------- report

METRICS = {
    "fanout": [("deliveries_per_s", "deliveries/s", "{:,.0f}", True),
               ("msgs_per_s", "messages/s completed", "{:,.1f}", True),
               ("lat_p50", "latency p50 (ms)", "{:,.2f}", False),
               ("lat_p99", "latency p99 (ms)", "{:,.2f}", False),
               ("complete_p99", "send to last subscriber p99 (ms)", "{:,.2f}", False),
               ("server_cpu_pct", "server CPU %", "{:,.0f}", None),
               ("server_us_per_delivery", "server CPU µs/delivery", "{:,.2f}", False),
               ("loadgen_cpu_pct", "loadgen CPU %", "{:,.0f}", None)],
    "chat": [("deliveries_per_s", "deliveries/s", "{:,.0f}", True),
             ("msgs_per_s", "messages/s sent", "{:,.0f}", True),
             ("lat_p50", "latency p50 (ms)", "{:,.2f}", False),
             ("lat_p99", "latency p99 (ms)", "{:,.2f}", False),
             ("server_cpu_pct", "server CPU %", "{:,.0f}", None),
             ("server_us_per_delivery", "server CPU µs/delivery", "{:,.2f}", False),
             ("loadgen_cpu_pct", "loadgen CPU %", "{:,.0f}", None)],
    "presence": [("converge_ms", "first connect until every node has them all (ms)",
                  "{:,.0f}", False),
                 ("storm_s", "time to open and upgrade them all (s)", "{:,.2f}", False),
                 ("after_last_ms", "last upgrade until every node has them all (ms)",
                  "{:,.0f}", False),
                 ("frames_per_join", "COUNTS + PRESENCE frames sent per join, all 6 "
                  "links together", "{:,.4f}", False),
                 ("frames", "frames sent, all links", "{:,.0f}", False)],
    "idle": [("opened", "connections held", "{:,.0f}", True),
             ("connect_rate", "connects/s (incl. handshake)", "{:,.0f}", True),
             ("rss_per_conn_b", "server RSS growth per connection (bytes)", "{:,.0f}", False),
             ("rss_after_mib", "server RSS holding them (MiB)", "{:,.1f}", False)],
}
LUA_METRICS = {
    "lua-fanout-1k": [("deliveries_per_s", "deliveries/s", "{:,.0f}"),
                      ("lat_p99", "latency p99 (ms)", "{:,.2f}"),
                      ("server_us_per_msg", "server CPU µs/published msg", "{:,.1f}")],
    "lua-echo": [("msgs_per_s", "messages/s", "{:,.0f}"),
                 ("lat_p50", "latency p50 (ms)", "{:,.3f}"),
                 ("server_cpu_pct", "server CPU %", "{:,.0f}"),
                 ("server_us_per_msg", "server CPU µs/msg", "{:,.2f}")],
}
SCALE = {"lat_p50": 1e-3, "lat_p99": 1e-3, "complete_p99": 1e-3}
DEFLATE_METRICS = {
    "fanout": [("deliveries_per_s", "deliveries/s", "{:,.0f}"),
               ("server_us_per_delivery", "server CPU µs/delivery", "{:,.2f}"),
               ("wire_bytes_per_delivery", "bytes on the wire per delivery", "{:,.0f}"),
               ("server_cpu_pct", "server CPU %", "{:,.0f}"),
               ("lat_p50", "latency p50 (ms)", "{:,.2f}"),
               ("lat_p99", "latency p99 (ms)", "{:,.2f}"),
               ("loadgen_cpu_pct", "loadgen CPU % (inflating included)", "{:,.0f}")],
    "idle": [("opened", "connections held", "{:,.0f}"),
             ("connect_rate", "connects/s (incl. handshake)", "{:,.0f}"),
             ("rss_per_conn_b", "server RSS growth per connection (bytes)", "{:,.0f}"),
             ("rss_after_mib", "server RSS holding them (MiB)", "{:,.1f}")],
}
DEFLATE_LABELS = ("moonroom", "moonroom deflate", "node", "node deflate")
TLS_METRICS = {
    "fanout": [("deliveries_per_s", "deliveries/s", "{:,.0f}"),
               ("server_us_per_delivery", "server CPU µs/delivery", "{:,.2f}"),
               ("server_cpu_pct", "server CPU %", "{:,.0f}"),
               ("lat_p50", "latency p50 (ms)", "{:,.2f}"),
               ("lat_p99", "latency p99 (ms)", "{:,.2f}"),
               ("loadgen_cpu_pct", "loadgen CPU % (decrypting included)", "{:,.0f}")],
    "idle": [("opened", "connections held", "{:,.0f}"),
             ("connect_rate", "connects/s (incl. TLS and WebSocket handshakes)", "{:,.0f}"),
             ("rss_per_conn_b", "server RSS growth per connection (bytes)", "{:,.0f}"),
             ("rss_after_mib", "server RSS holding them (MiB)", "{:,.1f}")],
}
TLS_LABELS = ("moonroom", "moonroom tls", "node", "node tls")


def stats(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def fmt_stat(st, fmt, scale=1.0):
    if st is None:
        return "n/a"
    m, lo, hi = (x * scale for x in st)
    if len(set([m, lo, hi])) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(lo)}–{fmt.format(hi)})"


def collect(results, name, label, key):
    return [r.get(key) for r in results.get((name, label), []) if r.get("ok")]


def breakdown_report(results, traced):
    """The latency breakdown of the traced runs, a table per scenario."""
    lines = ["## Where a fan-out message's time goes\n",
             "A third run of moonroom in every round, with `--trace-latency`: the server "
             "stamps each broadcast frame when the read that brought the message returned, "
             "when the message reached the handler, when the broadcast had queued it for "
             "every subscriber, and when the first and the last subscriber's socket took "
             "it; the load generator (`--trace-out`) stamps when it sent each message and "
             "when its first and last subscriber read it, on the same clock "
             "(CLOCK_MONOTONIC). The two are joined by message number. Each cell is the "
             "median over the rounds of that run's percentile over its messages, in ms.\n"]
    for sc in traced:
        runs = [r for r in results.get((sc["name"], "moonroom traced"), [])
                if r.get("ok") and isinstance(r.get("breakdown"), dict)
                and "error" not in r["breakdown"]]
        if not runs:
            continue
        bds = [r["breakdown"] for r in runs]
        lines.append(f"### {sc['title']}\n")
        lines.append("| stage | p50 | p90 | p99 |")
        lines.append("|---|---|---|---|")
        for key, title in STAGES:
            cells = []
            for p in ("p50", "p90", "p99"):
                vals = [b[key][p] for b in bds if b.get(key)]
                cells.append(f"{statistics.median(vals) / 1e3:,.2f}" if vals else "n/a")
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
        med = lambda k: statistics.median([b[k] for b in bds if b.get(k) is not None])
        plain = stats(collect(results, sc["name"], "moonroom", "deliveries_per_s"))
        traced_dps = stats([r.get("deliveries_per_s") for r in runs])
        lines.append("")
        lines.append(f"Batching in these runs: {med('msgs_per_read'):.1f} messages per read "
                     f"of the publisher's socket, {med('blocks_per_send'):.1f} frames per "
                     f"socket write, a message's last write {med('turns_p50'):.0f} loop "
                     f"turns after it was queued (median), "
                     f"{statistics.median([b['messages'] for b in bds]):,.0f} messages "
                     "joined per run. Tracing's own cost: "
                     f"{fmt_stat(traced_dps, '{:,.0f}')} deliveries/s traced against "
                     f"{fmt_stat(plain, '{:,.0f}')} in the untraced runs.\n")
    return lines


# The targets, as ratios to the Node peer of the same run:
# (scenario, metric, bound, at most / at least, what it says).
TARGETS = [
    ("fanout-1k", "deliveries_per_s", 25.0, "min", "fan-out 1k deliveries/s ≥ 25× node"),
    ("fanout-1k", "lat_p50", 0.03, "max", "fan-out 1k latency p50 ≤ 0.03× node"),
    ("fanout-1k", "lat_p99", 0.05, "max", "fan-out 1k latency p99 ≤ 0.05× node"),
    ("fanout-10k", "deliveries_per_s", 22.0, "min", "fan-out 10k deliveries/s ≥ 22× node"),
    ("fanout-10k", "lat_p50", 0.03, "max", "fan-out 10k latency p50 ≤ 0.03× node"),
    ("fanout-10k", "lat_p99", 0.05, "max", "fan-out 10k latency p99 ≤ 0.05× node"),
    ("echo-100", "deliveries_per_s", 2.1, "min", "echo round trips/s ≥ 2.1× node"),
]


def targets_report(results, scs):
    """Each target against this run's medians: the ratio to the Node peer."""
    names = {sc["name"] for sc in scs}
    rows = []
    for name, key, bound, how, what in TARGETS:
        if name not in names:
            continue
        a = stats(collect(results, name, "moonroom", key))
        b = stats(collect(results, name, "node", key))
        if not a or not b or not b[0]:
            continue
        ratio = a[0] / b[0]
        met = ratio >= bound if how == "min" else ratio <= bound
        rows.append(f"| {what} | {ratio:.3g}× | {'met' if met else 'missed'} |")
    idle = stats(collect(results, "idle", "moonroom", "rss_per_conn_b"))
    if "idle" in names and idle:
        rows.append(f"| idle connection ≤ 512 B of server RSS | {idle[0]:,.0f} B | "
                    f"{'met' if idle[0] <= 512 else 'missed'} |")
    if not rows:
        return []
    return (["## Targets\n",
             "The targets of the fan-out latency issue, as ratios of this run's medians "
             "(moonroom / node); what limits those missed is in README.md.\n",
             "| target | this run | |", "|---|---|---|"] + rows + [""])


def report(opts, scs, results, info, started, elapsed, alone):
    lines = []
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines.append("# moonroom benchmark results\n")
    lines.append(f"Generated by `tests/bench/run.py --rounds {opts.rounds}` on {now} "
                 f"({elapsed / 60:.1f} min). Every cell is the median over the rounds, with "
                 "min–max in parentheses; each run used a fresh server, and moonroom and "
                 "the Node.js peer alternated, the order turning each round (A B, B A, …). "
                 "How the numbers are made and what they mean: [README.md](README.md).\n")
    lines.append("| machine | |\n|---|---|")
    lines.append(f"| CPU | {info['cpu']} |")
    lines.append(f"| nproc | {info['nproc']} (the load generator, one thread, shares them with "
                 "the server) |")
    lines.append(f"| kernel | {info['kernel']} |")
    lines.append(f"| memory | {info['memory']} |")
    lines.append(f"| open files limit | {info['open_files_limit']} |")
    dirty = " plus uncommitted changes to core/" if info.get("dirty") else ""
    lines.append(f"| moonroom | commit {info['commit'] or '?'}{dirty}, `bench.lua`, "
                 f"`--max-backpressure {opts.max_backpressure} --ping-interval 0 "
                 "--idle-timeout 0` |")
    lines.append(f"| peer | Node.js {info['node']}, ws {info['ws']} "
                 "(`tests/bench/peer/server.js`) |")
    others = [r.get("other_cpu_pct", 0.0) for runs in results.values() for r in runs]
    if others:
        noisy = sum(1 for o in others if o > 20)
        lines.append(f"| other processes during the runs | median {statistics.median(others):.0f} %, "
                     f"max {max(others):.0f} % of one core"
                     + (f" ({noisy} runs above 20 %: treat those numbers with care)" if noisy
                        else "") + " |")
    lines.append("")
    failures = []
    for sc in scs:
        if sc["variants"] != "servers":
            continue
        lines.append(f"## {sc['title']}\n")
        lines.append("| metric | moonroom | node + ws | moonroom / node |")
        lines.append("|---|---|---|---|")
        for key, title, fmt, higher in METRICS[sc["kind"]]:
            a = stats(collect(results, sc["name"], "moonroom", key))
            b = stats(collect(results, sc["name"], "node", key))
            scale = SCALE.get(key, 1.0)
            ratio = "n/a"
            if a and b and b[0]:
                ratio = f"{a[0] / b[0]:.2f}"
                if higher is True:
                    ratio += " (higher is better)"
                elif higher is False:
                    ratio += " (lower is better)"
            lines.append(f"| {title} | {fmt_stat(a, fmt, scale)} | {fmt_stat(b, fmt, scale)} "
                         f"| {ratio} |")
        lines.append("")
    traced = [sc for sc in scs if sc.get("trace")]
    if traced:
        lines += breakdown_report(results, traced)
    lines += targets_report(results, scs)
    deflate = [sc for sc in scs if sc["variants"] == "deflate"]
    if deflate:
        lines.append("## permessage-deflate\n")
        lines.append("Each server with compression off and on, alike on both sides: no context "
                     "takeover either way, messages under 128 bytes sent plain, level 1 "
                     "(moonroom `--compression on`; the peer `perMessageDeflate` with "
                     "`serverNoContextTakeover`, `clientNoContextTakeover`, `threshold: 128`, "
                     "level 1). The load generator offers what a browser offers "
                     "(`permessage-deflate; client_max_window_bits`), sends plain and inflates "
                     "what it gets; every message is 1 KiB of chat-like JSON behind its "
                     "52-byte header. Bytes on the wire are the WebSocket bytes (frame headers "
                     "included) the subscribers read, per delivery. moonroom compresses a "
                     "broadcast once and shares the frame; ws compresses each recipient's "
                     "copy.\n")
        for sc in deflate:
            lines.append(f"### {sc['title']}\n")
            lines.append("| metric | " + " | ".join(f"{l}" for l in DEFLATE_LABELS) +
                         " | moonroom deflate / node deflate |")
            lines.append("|---|" + "---|" * (len(DEFLATE_LABELS) + 1))
            for key, title, fmt in DEFLATE_METRICS[sc["kind"]]:
                cells = [stats(collect(results, sc["name"], l, key)) for l in DEFLATE_LABELS]
                a, b = cells[1], cells[3]
                ratio = f"{a[0] / b[0]:.2f}" if a and b and b[0] else "n/a"
                lines.append(f"| {title} | " + " | ".join(
                    fmt_stat(c, fmt, SCALE.get(key, 1.0)) for c in cells) + f" | {ratio} |")
            lines.append("")
    tls = [sc for sc in scs if sc["variants"] == "tls"]
    if tls:
        lines.append("## TLS\n")
        lines.append("Each server plain and over TLS on the same load: moonroom with "
                     "`--tls-cert`/`--tls-key`, the peer as Node's `https` server with `ws` on "
                     "it. The certificate is ECDSA P-256, from a throw-away CA made with the "
                     "`openssl` command when the run starts; the load generator (OpenSSL, "
                     "non-blocking, in its epoll loop) verifies it on every connection against "
                     "that CA (`--tls-ca`, the IP address included) and takes what the server "
                     "chooses (TLS 1.3 with both). Connects/s include the TLS handshake.\n")
        for sc in tls:
            lines.append(f"### {sc['title']}\n")
            lines.append("| metric | " + " | ".join(TLS_LABELS) +
                         " | moonroom tls / node tls | moonroom tls / moonroom |")
            lines.append("|---|" + "---|" * (len(TLS_LABELS) + 2))
            for key, title, fmt in TLS_METRICS[sc["kind"]]:
                cells = [stats(collect(results, sc["name"], l, key)) for l in TLS_LABELS]
                ratios = []
                for a, b in ((cells[1], cells[3]), (cells[1], cells[0])):
                    ratios.append(f"{a[0] / b[0]:.2f}" if a and b and b[0] else "n/a")
                lines.append(f"| {title} | " + " | ".join(
                    fmt_stat(c, fmt, SCALE.get(key, 1.0)) for c in cells) + " | " +
                    " | ".join(ratios) + " |")
            versions = sorted({f"{r.get('tls_version')} {r.get('tls_cipher')}"
                               for l in TLS_LABELS if l.endswith(" tls")
                               for r in results.get((sc["name"], l), []) if r.get("ok")})
            if versions:
                lines.append("\nNegotiated: " + ", ".join(versions) + ".")
            lines.append("")
    for sc in scs:
        if sc["variants"] != "engines":
            continue
        lines.append(f"## {sc['title']}\n")
        lines.append("Two moonroom nodes (`bench.lua`) on this machine: the subscribers "
                     "connect to node B, the publisher to node A (`moonroom-loadgen "
                     "--pub-url`), so every message crosses from A to B once: over the "
                     "mesh's link, or through Redis (`--engine redis://...`, a "
                     "`redis-server` the run starts, no persistence). Server CPU is node "
                     "B's.\n")
        lines.append("| metric | mesh | Redis | Redis / mesh |")
        lines.append("|---|---|---|---|")
        for key, title, fmt, higher in METRICS["fanout"]:
            m = stats(collect(results, sc["name"], "mesh", key))
            r = stats(collect(results, sc["name"], "redis", key))
            scale = SCALE.get(key, 1.0)
            ratio = f"{r[0] / m[0]:.2f}" if m and r and m[0] else "n/a"
            lines.append(f"| {title} | {fmt_stat(m, fmt, scale)} | {fmt_stat(r, fmt, scale)} "
                         f"| {ratio} |")
        lines.append("")
    for sc in scs:
        if sc["variants"] not in ("moonroom", "cluster"):
            continue
        lines.append(f"## {sc['title']}\n")
        lines.append("| metric | moonroom |")
        lines.append("|---|---|")
        for key, title, fmt, _ in METRICS[sc["kind"]]:
            if sc["kind"] == "fanout" and key == "msgs_per_s":
                title = "publish requests/s completed (every subscriber has it)"
            lines.append(f"| {title} | "
                         f"{fmt_stat(stats(collect(results, sc['name'], 'moonroom', key)), fmt, SCALE.get(key, 1.0))} |")
        lines.append("")
    lua = [sc for sc in scs if sc["variants"] == "scripts"]
    if lua:
        lines.append("## Lua handler cost (moonroom only)\n")
        lines.append("`bench_min.lua` is the least a handler can do (one table lookup and the "
                     "broadcast), `bench.lua` the handler of every other table, and "
                     "`bench_work.lua` adds parsing the message's four header fields, "
                     "statistics and rebuilding the message (five new strings) per message; "
                     "`bench_json.lua` is a JSON chat handler: its clients send "
                     "`{\"text\":\"...\"}` (`moonroom-loadgen --json`), and per message it "
                     "decodes, looks up the room's state, encodes `{\"from\":ID,\"text\":...}` "
                     "and broadcasts.\n")
        for sc in lua:
            labels = [v[0] for v in variants("scripts", opts)]
            lines.append(f"### {sc['title']}\n")
            lines.append("| metric | " + " | ".join(f"`{l}`" for l in labels) + " |")
            lines.append("|---|" + "---|" * len(labels))
            for key, title, fmt in LUA_METRICS[sc["name"]]:
                cells = [fmt_stat(stats(collect(results, sc["name"], l, key)), fmt,
                                  SCALE.get(key, 1.0)) for l in labels]
                lines.append(f"| {title} | " + " | ".join(cells) + " |")
            lines.append("")
        scripts = [l for l in ("bench_min.lua", "bench.lua", "bench_work.lua",
                               "bench_json.lua") if "ns_per_msg" in alone.get(l, {})]
        if alone and {"bench_min.lua", "bench.lua", "bench_work.lua"} <= set(scripts):
            lines.append("### The handler alone\n")
            lines.append("`luajit tests/bench/lua_cost.lua SCRIPT`: `on_message` called in a loop on "
                         "the load generator's messages with the real `moonroom` module over a stub "
                         "core (best of 5 "
                         "runs of 2,000,000 calls; the JIT inlines what it can, and the C call "
                         "into the handler and the broadcast itself are left out).\n")
            lines.append("| | " + " | ".join(f"`{l}`" for l in scripts) + " |")
            lines.append("|---|" + "---|" * len(scripts))
            lines.append("| ns per message | " + " | ".join(
                f"{alone[l]['ns_per_msg']:,.1f}" for l in scripts) + " |")
            lines.append("")
        echo = {l: stats(collect(results, "lua-echo", l, "server_us_per_msg"))
                for l in [v[0] for v in variants("scripts", opts)]}
        if all(echo.values()):
            base = echo["bench_min.lua"]
            parts = []
            for l in ("bench.lua", "bench_work.lua", "bench_json.lua"):
                d = echo[l][0] - base[0]
                overlap = echo[l][1] <= base[2] and base[1] <= echo[l][2]
                parts.append(f"`{l}` {d:+.2f} µs" + (" (the ranges overlap: noise)"
                                                     if overlap else ""))
            lines.append("Server CPU per echoed message beyond `bench_min.lua` (whose "
                         f"{base[0]:.2f} µs cover reading the frame, the call into Lua and "
                         "writing the frame back): " + ", ".join(parts) + ".\n")
    for (name, label), runs in results.items():
        for i, r in enumerate(runs):
            if not r.get("ok"):
                failures.append(f"- {name} / {label} round {i + 1}: {r.get('error')} "
                                f"(violations {r.get('order_violations')}, missing "
                                f"{r.get('missing')}, closed {r.get('closed_by_server')})")
            elif r.get("order_violations") or r.get("missing"):
                failures.append(f"- {name} / {label} round {i + 1}: "
                                f"{r.get('order_violations')} order violations, "
                                f"{r.get('missing')} missing")
    lines.append("## Delivery checks\n")
    if failures:
        lines.append("Runs that failed or lost messages (left out of the medians):\n")
        lines.extend(f.replace("\n", " ") for f in failures)
    else:
        lines.append("Every run of every scenario: every subscriber received every message "
                     "exactly once and in order (0 order violations, 0 missing), no "
                     "connection was closed by a server.")
    lines.append("")
    lines.append("![fan-out](fanout.png)\n")
    return "\n".join(lines)


def plot(results, outpng, tmpdir):
    rows = []
    for name, title in (("fanout-1k", "1,000 subscribers"), ("fanout-10k", "10,000 subscribers")):
        row = [f'"{title}"']
        for label in ("moonroom", "node"):
            d = stats(collect(results, name, label, "deliveries_per_s"))
            l = stats(collect(results, name, label, "lat_p99"))
            if not d or not l:
                return False
            row += [d[0] / 1e3, d[1] / 1e3, d[2] / 1e3, l[0] / 1e3, l[1] / 1e3, l[2] / 1e3]
        rows.append(row)
    dat = os.path.join(tmpdir, "fanout.dat")
    with open(dat, "w") as f:
        for r in rows:
            f.write(" ".join(str(x) for x in r) + "\n")
    gp = f"""
set terminal pngcairo size 1100,480 font "sans,11" noenhanced
set output "{outpng}"
set multiplot layout 1,2 title "moonroom vs Node.js ws: fan-out of 64-byte messages, 16 in flight (median, bars min-max)"
set style data histogram
set style histogram errorbars gap 2 lw 1.5
set style fill solid 0.8 border -1
set boxwidth 0.9
set xrange [-0.6:1.6]
set grid ytics
set yrange [0:*]
set key top left
set title "deliveries per second (thousands), higher is better"
plot "{dat}" using 2:3:4:xtic(1) title "moonroom" lc rgb "#1f77b4", \\
     "" using 8:9:10 title "node + ws" lc rgb "#ff7f0e"
set title "delivery latency p99 (ms), lower is better"
set logscale y
set yrange [*:*]
plot "{dat}" using 5:6:7:xtic(1) title "moonroom" lc rgb "#1f77b4", \\
     "" using 11:12:13 title "node + ws" lc rgb "#ff7f0e"
unset multiplot
"""
    script = os.path.join(tmpdir, "fanout.gp")
    with open(script, "w") as f:
        f.write(gp)
    r = subprocess.run(["gnuplot", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0 and "pngcairo" in r.stdout:
        # gnuplot-nox without cairo: fall back to the libgd png terminal.
        with open(script, "w") as f:
            f.write(gp.replace('pngcairo size 1100,480 font "sans,11"', "png size 1100,480"))
        r = subprocess.run(["gnuplot", script], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        log("bench: WARNING: gnuplot failed:\n" + r.stdout)
        return False
    return True


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every scenario (3)")
    ap.add_argument("--smoke", action="store_true",
                    help="a few connections for a second or two against both servers; "
                         "asserts delivery and order only, writes no docs")
    ap.add_argument("--only", default="",
                    help="comma-separated scenarios: fanout-1k, fanout-10k, echo-100, chat-10k, idle, "
                         "lua-fanout-1k, lua-echo, publish-1k, fanout-1k-deflate, "
                         "idle-deflate, presence-1k, presence-10k, fanout-1k-tls, idle-tls, "
                         "crossnode-1k, crossnode-10")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--moonroom", help="server binary (default BUILD_DIR/moonroom)")
    ap.add_argument("--loadgen",
                    help="load generator (default BUILD_DIR/tests/bench/moonroom-loadgen)")
    ap.add_argument("--no-build", action="store_true", help="do not run cmake")
    ap.add_argument("--max-backpressure", type=int, default=8 * 1024 * 1024,
                    help="moonroom --max-backpressure (8 MiB, so no subscriber is cut off)")
    ap.add_argument("--out", default=DOCS, help="where results.md and fanout.png go")
    ap.add_argument("--retries", type=int, default=2,
                    help="repeat a run this often while other processes used more than a "
                         "quarter of a core during it (2)")
    opts = ap.parse_args()

    given = opts.moonroom and opts.loadgen
    opts.moonroom = os.path.abspath(opts.moonroom or os.path.join(opts.build_dir, "moonroom"))
    opts.loadgen = os.path.abspath(opts.loadgen or os.path.join(opts.build_dir, "tests", "bench",
                                                                "moonroom-loadgen"))
    if not given and not opts.no_build and not opts.smoke:
        build(opts.build_dir)
    for path in (opts.moonroom, opts.loadgen):
        if not os.access(path, os.X_OK):
            fail(f"{path} is missing; build with cmake -S {ROOT} -B {opts.build_dir} && "
                 f"cmake --build {opts.build_dir} -j2")
    npm_install()

    scs = scenarios(opts.smoke)
    if opts.only:
        wanted = set(opts.only.split(","))
        unknown = wanted - {s["name"] for s in scs}
        if unknown:
            fail("unknown scenario(s): " + ", ".join(sorted(unknown)))
        scs = [s for s in scs if s["name"] in wanted]
    rounds = 1 if opts.smoke else opts.rounds
    logdir = tempfile.mkdtemp(prefix="moonroom-bench-")
    opts.tls = make_test_certs(logdir) if any(s["variants"] == "tls" for s in scs) else None
    info = machine_info()
    log(f"bench: {len(scs)} scenarios x {rounds} rounds; server logs in {logdir}")

    results = {}
    problems = []
    started = time.monotonic()
    for rnd in range(rounds):
        for sc in scs:
            vs = variants(sc["variants"], opts, sc)
            k = rnd % len(vs)  # rotate the order each round: A B, B A, ...
            for label, cmd_fn in vs[k:] + vs[:k]:
                t0 = time.monotonic()
                res = derived(one_run(opts, sc, label, cmd_fn, logdir))
                for retry in range(opts.retries):
                    # Another process took CPU during the run: measure again.
                    if opts.smoke or res.get("other_cpu_pct", 0) <= 25:
                        break
                    log(f"bench: round {rnd + 1} {sc['name']} {label}: other processes used "
                        f"{res['other_cpu_pct']:.0f} % of a core during the run; again")
                    again = derived(one_run(opts, sc, label, cmd_fn, logdir))
                    again["retries"] = retry + 1
                    # Keep the ok attempt that was disturbed least.
                    def key(r):
                        return (not r.get("ok"), r.get("other_cpu_pct", 0))
                    if key(again) <= key(res):
                        res = again
                results.setdefault((sc["name"], label), []).append(res)
                summary = {k: res.get(k) for k in (
                    "deliveries_per_s", "msgs_per_s", "lat_p50", "lat_p99", "server_cpu_pct",
                    "wire_bytes_per_delivery",
                    "loadgen_cpu_pct", "opened", "connect_rate", "rss_per_conn_b",
                    "order_violations", "missing", "converge_ms", "after_last_ms",
                    "frames_per_join", "other_cpu_pct") if res.get(k) is not None}
                log(f"bench: round {rnd + 1} {sc['name']:<14} {label:<15} "
                    f"{'ok ' if res.get('ok') else 'FAIL'} {time.monotonic() - t0:5.1f}s "
                    + " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in summary.items()))
                if not res.get("ok"):
                    log(f"bench:   error: {res.get('error')} (server log {res['server_log']})")
                if opts.smoke:
                    problems += [f"{sc['name']} / {label}: {p}"
                                 for p in check_smoke(sc, label, res)]
    elapsed = time.monotonic() - started
    alone = {}
    if opts.smoke or any(sc["variants"] == "scripts" for sc in scs):
        alone = lua_alone(opts.smoke)
        log("bench: handler alone: " + ", ".join(
            f"{k} {v.get('ns_per_msg', v.get('error'))} ns" for k, v in alone.items()))
        if opts.smoke:
            problems += [f"lua_cost.lua {k}: {v['error']}" for k, v in alone.items()
                         if "error" in v]

    if opts.smoke:
        if problems:
            fail("smoke found problems:\n  " + "\n  ".join(problems) +
                 f"\nserver logs in {logdir}")
        n = sum(len(v) for v in results.values())
        print(f"bench smoke: {n} runs against moonroom and node, all delivered in order")
        print(f"{n} passed, 0 failed")
        shutil.rmtree(logdir, ignore_errors=True)
        return 0

    os.makedirs(opts.out, exist_ok=True)
    raw_dir = os.path.join(opts.out, "raw")
    os.makedirs(raw_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(raw_dir, f"run-{stamp}.json"), "w") as f:
        json.dump({"machine": info, "rounds": rounds, "lua_alone": alone,
                   "runs": [{"scenario": k[0], "variant": k[1], "results": v}
                            for k, v in results.items()]}, f, indent=1)
    md = report(opts, scs, results, info, started, elapsed, alone)
    names = {s["name"] for s in scs}
    if not opts.only and {"fanout-1k", "fanout-10k"} <= names and ensure_gnuplot():
        if not plot(results, os.path.join(opts.out, "fanout.png"), logdir):
            md = md.replace("![fan-out](fanout.png)\n", "")
    else:
        md = md.replace("![fan-out](fanout.png)\n", "")
    print(md)
    if opts.only:
        log("bench: --only given, so results.md is left as it was")
    else:
        with open(os.path.join(opts.out, "results.md"), "w") as f:
            f.write(md)
        log(f"bench: wrote {os.path.join(opts.out, 'results.md')} in {elapsed / 60:.1f} min")
    bad = [r for runs in results.values() for r in runs if not r.get("ok")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
