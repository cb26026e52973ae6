#!/usr/bin/python3
"""What pending script timers cost the loop: echo round trips through the
real server with no timers and with 100,000 pending (ws.after, due in an
hour), in interleaved blocks; what scheduling and cancelling them costs, and
the server's RSS for them.

  /usr/bin/python3 tests/bench/timers.py [--moonroom build/moonroom]
          [--timers 100000] [--rounds 2000] [--blocks 5]

Prints the round trips (median and p99 in microseconds, over --rounds
sequential echoes on one connection, per block), the time the script took
to schedule and cancel the timers, and the longest echo while the same
number of no-op timers, all due in the same millisecond, run in one loop
turn. Uses tests/integration/scripts/timers.lua. Only the standard library
is used; nothing is asserted: read the numbers."""
import argparse
import base64
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(ROOT, "tests", "integration", "scripts", "timers.lua")


class Client:
    """A minimal WebSocket client: masked text frames out, unmasked in."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: " + key + "\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81])
        if n < 126:
            head += bytes([0x80 | n])
        else:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def recv(self):
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return self._take(n).decode()

    def cmd(self, text):
        self.send(text)
        return self.recv()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def round_trips(c, rounds):
    for _ in range(200):  # warm up
        c.cmd("x")
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        c.cmd("x")
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moonroom", default=os.path.join(ROOT, "build",
                                                       "moonroom"))
    ap.add_argument("--timers", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=5)
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [args.moonroom, "--listen", f"127.0.0.1:{port}", "--no-reload",
         "--log-level", "warn", SCRIPT], stdin=subprocess.DEVNULL)
    try:
        for _ in range(250):
            try:
                c = Client(port)
                break
            except OSError:
                time.sleep(0.02)
        else:
            sys.exit("moonroom did not start")
        # Interleaved, so that the machine's drift (other load, CPU
        # frequency) falls on both conditions alike.
        none, pending, arm, cancel, rss_each = [], [], [], [], []
        for _ in range(args.blocks):
            none.append(round_trips(c, args.rounds))
            base_rss = rss_kb(proc.pid)
            t0 = time.perf_counter()
            reply = c.cmd(f"many {args.timers} 3600000")
            arm.append(time.perf_counter() - t0)
            assert reply == f"armed {args.timers}", reply
            assert c.cmd("stats").startswith(f"timers={args.timers} "), \
                "timers not pending"
            rss_each.append((rss_kb(proc.pid) - base_rss) * 1024 /
                            args.timers)
            pending.append(round_trips(c, args.rounds))
            t0 = time.perf_counter()
            reply = c.cmd("cancelmany")
            cancel.append(time.perf_counter() - t0)
            assert reply == f"cancelled {args.timers}", reply

        def med(rows, i):
            return statistics.median(r[i] for r in rows)

        print(f"echo round trip, {args.blocks} interleaved blocks of "
              f"{args.rounds} (medians of the blocks' p50 / p99):")
        label = f"{args.timers} timers pending:"
        print(f"  {'no timers pending:':<24} p50 {med(none, 0):6.1f} us  "
              f"p99 {med(none, 1):6.1f} us")
        print(f"  {label:<24} p50 {med(pending, 0):6.1f} us  "
              f"p99 {med(pending, 1):6.1f} us")
        print(f"scheduling {args.timers} from Lua: "
              f"{statistics.median(arm) * 1e9 / args.timers:.0f} ns each; "
              f"cancelling them: "
              f"{statistics.median(cancel) * 1e9 / args.timers:.0f} ns each; "
              f"RSS for the first batch: {rss_each[0]:.0f} B each "
              f"(timer, entry and the handle the script keeps)")
        # A burst: every timer due in the same millisecond runs in one loop
        # turn; the longest echo while it runs shows how long that turn is.
        reply = c.cmd(f"many {args.timers} 300")
        t0 = time.perf_counter()
        worst = 0.0
        while time.perf_counter() - t0 < 1.0:
            t1 = time.perf_counter()
            c.cmd("x")
            worst = max(worst, time.perf_counter() - t1)
        left = c.cmd("stats")
        print(f"{args.timers} due at once: longest echo while they ran "
              f"{worst * 1000:.1f} ms ({left})")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
