#!/usr/bin/env python3
"""Bursts of short connections through one yakk tunnel, for one or more yakk builds.

    python3 bench/burst.py --yakk OLD --yakk NEW [--rounds 10] [--connections 200]

For each build, alternating build by build: start an echo server, `yakk server` and
`yakk client` on 127.0.0.1 (embedded signalling server), then open N connections at once;
each sends 20,000 + 37*i bytes, shuts its write side and must get the same bytes back
within --timeout seconds. Prints, per round, the wall time and how many connections
failed and how (refused/reset while sending, wrong or missing reply, timeout).

With --broken-off K, each round instead breaks off K downloads through the tunnel (reads
4 MiB of an endless one, then resets the connection, as a browser does) and after each one
times 3 echo connections (64 KiB): a tunnel that a broken-off download damaged makes the
connections after it slow (or fail).

Loopback only; every process it starts is stopped at the end of its round.
"""
import statistics

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_on_loopback(stop, serve):
    """Calls `serve(connection)` on a thread for every connection to a new port on 127.0.0.1,
    until `stop`; returns the port."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    srv.settimeout(0.2)

    def run():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(c,), daemon=True).start()
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def echo(c, first=b""):
    """Sends back `first`, then what `c` sends, until it shuts its side."""
    with c:
        try:
            c.sendall(first)
            while True:
                x = c.recv(65536)
                if not x:
                    break
                c.sendall(x)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def download_or_echo(c):
    """The first byte chooses: `D`, sends without end; else echoes (that byte too)."""
    try:
        first = c.recv(1)
    except OSError:
        c.close()
        return
    if first != b"D":
        echo(c, first)
        return
    with c:
        block = bytes(65536)
        try:
            while True:
                c.sendall(block)
        except OSError:
            pass


def broken_off(port, timeout):
    """One download read for 4 MiB, then reset by its client; an error text or None."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(b"D")
        got = 0
        while got < (4 << 20):
            x = s.recv(262144)
            if not x:
                return "download ended"
            got += len(x)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    except OSError as e:
        return f"download: {e}"
    return None


def timed_echo(port, i, timeout):
    """(seconds, outcome) of one echo connection of 64 KiB that starts with `E`."""
    data = b"E" + bytes((i * 7 + j) % 251 for j in range(65536))
    t0 = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        back = bytearray()
        while True:
            x = s.recv(65536)
            if not x:
                break
            back += x
        s.close()
    except socket.timeout:
        return time.time() - t0, "timeout"
    except OSError:
        return time.time() - t0, "reset"
    return time.time() - t0, ("ok" if bytes(back) == data else "wrong reply")


def one_connection(port, i, timeout):
    data = bytes((i * 7 + j) % 251 for j in range(20000 + i * 37))
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        return "send failed"
    back = bytearray()
    try:
        while True:
            x = s.recv(65536)
            if not x:
                break
            back += x
    except socket.timeout:
        return "timeout"
    except OSError:
        return "reset"
    finally:
        s.close()
    if bytes(back) == data:
        return "ok"
    return "no reply" if not back else "wrong reply"


def wait_json(proc, event, deadline):
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == event:
            return ev
    return None


def run_round(yakk, n, timeout, logdir, downloads=0):
    stop = threading.Event()
    target = serve_on_loopback(stop, download_or_echo if downloads else echo)
    listen = free_port()
    procs = []
    try:
        env = dict(os.environ, YAKK_PASSWORD="burst-bench-pw")
        owner = subprocess.Popen(
            [yakk, "server", "-p", str(target), "--json", "--ice-ip", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(logdir, "owner.err"), "w"),
            text=True, env=env)
        procs.append(owner)
        code = wait_json(owner, "code", time.time() + 15)
        if not code:
            return None, "owner gave no code"
        joiner = subprocess.Popen(
            [yakk, "client", "-p", str(listen), "--json", "--ice-ip", "127.0.0.1", code["code"]],
            stdout=subprocess.PIPE, stderr=open(os.path.join(logdir, "joiner.err"), "w"),
            text=True, env=env)
        procs.append(joiner)
        if not wait_json(joiner, "listening", time.time() + 20):
            return None, "joiner not listening"
        if downloads:
            echoes = []
            for k in range(downloads):
                err = broken_off(listen, timeout)
                if err:
                    return None, err
                echoes += [timed_echo(listen, 3 * k + j, timeout) for j in range(3)]
            return echoes, None
        results = [None] * n

        def worker(i):
            results[i] = one_connection(listen, i, timeout)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 30)
        return (time.time() - t0, Counter(r or "unfinished" for r in results)), None
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        stop.set()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yakk", action="append", required=True, help="a yakk binary (repeatable)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per connection")
    ap.add_argument("--broken-off", type=int, default=0, metavar="K",
                    help="per round, K broken-off downloads, each followed by 3 timed echoes")
    cfg = ap.parse_args()
    if cfg.broken_off:
        return main_broken_off(cfg)
    totals = {y: Counter() for y in cfg.yakk}
    with tempfile.TemporaryDirectory(prefix="yakk-burst-") as logdir:
        for r in range(cfg.rounds):
            for y in cfg.yakk:
                res, err = run_round(y, cfg.connections, cfg.timeout, logdir)
                if err:
                    print(f"round {r + 1} {y}: {err}", flush=True)
                    totals[y]["setup failed"] += 1
                    continue
                secs, counts = res
                totals[y].update(counts)
                bad = {k: v for k, v in counts.items() if k != "ok"}
                print(f"round {r + 1} {y}: {secs:.2f} s, {counts['ok']}/{cfg.connections} ok {bad or ''}", flush=True)
    print()
    for y, c in totals.items():
        total = sum(v for k, v in c.items() if k != "setup failed")
        bad = {k: v for k, v in c.items() if k != "ok"}
        print(f"{y}: {c['ok']}/{total} connections ok; failures: {bad or 'none'}")
    return 0


def main_broken_off(cfg):
    times = {y: [] for y in cfg.yakk}
    outcomes = {y: Counter() for y in cfg.yakk}
    with tempfile.TemporaryDirectory(prefix="yakk-burst-") as logdir:
        for r in range(cfg.rounds):
            for y in cfg.yakk:
                echoes, err = run_round(y, 0, cfg.timeout, logdir, cfg.broken_off)
                if err:
                    print(f"round {r + 1} {y}: {err}", flush=True)
                    outcomes[y]["round failed"] += 1
                    continue
                times[y] += [t for t, _ in echoes]
                outcomes[y].update(o for _, o in echoes)
                slow = sum(1 for t, _ in echoes if t >= 2.5)
                print(f"round {r + 1} {y}: echoes after broken-off downloads: "
                      f"max {max(t for t, _ in echoes):.2f} s, {slow} of {len(echoes)} took 2.5 s or more",
                      flush=True)
    print()
    for y in cfg.yakk:
        t = times[y]
        if not t:
            print(f"{y}: no round finished")
            continue
        slow = sum(1 for x in t if x >= 2.5)
        print(f"{y}: {outcomes[y]['ok']}/{len(t)} echoes ok, median {statistics.median(t) * 1000:.0f} ms, "
              f"max {max(t):.2f} s, {slow} took 2.5 s or more; {dict(outcomes[y])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
