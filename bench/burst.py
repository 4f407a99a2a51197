#!/usr/bin/env python3
"""Bursts of short connections through one yakk tunnel, for one or more yakk builds.

    python3 bench/burst.py --yakk OLD --yakk NEW [--rounds 10] [--connections 200]

For each build, alternating build by build: start an echo server, `yakk server` and
`yakk client` on 127.0.0.1 (embedded signalling server), then open N connections at once;
each sends 20,000 + 37*i bytes, shuts its write side and must get the same bytes back
within --timeout seconds. Prints, per round, the wall time and how many connections
failed and how (refused/reset while sending, wrong or missing reply, timeout).

Loopback only; every process it starts is stopped at the end of its round.
"""

import argparse
import json
import os
import signal
import socket
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


def echo_server(stop):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    srv.settimeout(0.2)

    def serve(c):
        with c:
            try:
                while True:
                    x = c.recv(65536)
                    if not x:
                        break
                    c.sendall(x)
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass

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


def run_round(yakk, n, timeout, logdir):
    stop = threading.Event()
    target = echo_server(stop)
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
    cfg = ap.parse_args()
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


if __name__ == "__main__":
    sys.exit(main())
