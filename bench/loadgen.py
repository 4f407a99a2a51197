#!/usr/bin/env python3
"""Traffic helper for bench/run.py: a target server and the clients that talk to it.

Runs as a separate process so that it can be started inside a network namespace
(`ip netns exec ykbA python3 loadgen.py target ...`). Standard library only.

The target server reads one mode byte at the start of each connection:
  E  echo everything back until EOF
  S  u64 N follows: read N bytes, then reply with b"K" + two f64 (monotonic time of the first
     and of the last byte received)
  D  u32 ms follows: count bytes for that long from the first byte, then reply with b"K" + u64
     bytes + f64 seconds between the first and the last byte counted; then drain until EOF
Every client prints one JSON object on stdout.
"""
import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import sys
import threading
import time

CHUNK = 1 << 20
BUF = memoryview(os.urandom(CHUNK))


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise EOFError("connection closed early")
        out += b
    return bytes(out)


# ---------------------------------------------------------------- target server

def serve_conn(s):
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = recv_exact(s, 1)
        buf = bytearray(CHUNK)
        if mode == b"E":
            while True:
                n = s.recv_into(buf)
                if n == 0:
                    break
                s.sendall(memoryview(buf)[:n])
            s.shutdown(socket.SHUT_WR)
        elif mode == b"S":
            (total,) = struct.unpack("!Q", recv_exact(s, 8))
            got, first, last = 0, None, None
            while got < total:
                n = s.recv_into(buf, min(CHUNK, total - got))
                if n == 0:
                    break
                last = time.monotonic()
                if first is None:
                    first = last
                got += n
            s.sendall(b"K" + struct.pack("!dd", first or 0.0, last or 0.0))
        elif mode == b"D":
            (ms,) = struct.unpack("!I", recv_exact(s, 4))
            got, first, last = 0, None, None
            while True:
                n = s.recv_into(buf)
                if n == 0:
                    break
                now = time.monotonic()
                if first is None:
                    first = now
                got += n
                last = now
                if now - first >= ms / 1000:
                    break
            s.sendall(b"K" + struct.pack("!Qd", got, (last or 0) - (first or 0)))
            while s.recv_into(buf):
                pass
        else:
            print(f"target: first byte {mode!r} names no mode (bytes lost on the way?); then {s.recv(40)!r}",
                  file=sys.stderr, flush=True)
    except (OSError, EOFError):
        pass
    finally:
        s.close()


def cmd_target(a):
    raise_nofile()
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((a.host, a.port))
    l.listen(4096)
    print(json.dumps({"listening": l.getsockname()[1]}), flush=True)
    while True:
        s, _ = l.accept()
        threading.Thread(target=serve_conn, args=(s,), daemon=True).start()


# ---------------------------------------------------------------- clients

def hostport(addr):
    h, p = addr.rsplit(":", 1)
    return h.strip("[]"), int(p)


def connect(addr, timeout):
    s = socket.create_connection(hostport(addr), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_n(addr, total, timeout, result, i):
    try:
        t0 = time.monotonic()
        s = connect(addr, timeout)
        s.sendall(b"S" + struct.pack("!Q", total))
        left = total
        while left > 0:
            k = min(left, CHUNK)
            s.sendall(BUF[:k])
            left -= k
        ack = recv_exact(s, 17)
        t1 = time.monotonic()
        first, last = struct.unpack("!dd", ack[1:])
        s.close()
        result[i] = {"ok": True, "t0": t0, "t1": t1, "first": first, "last": last}
    except Exception as e:  # noqa: BLE001 - reported to the harness
        result[i] = {"ok": False, "error": repr(e)}


def cmd_send(a):
    """Sends a.bytes in total over a.conns concurrent connections; prints MB/s."""
    raise_nofile()
    per = a.bytes // a.conns
    result = [None] * a.conns
    threads = [threading.Thread(target=send_n, args=(a.addr, per, a.timeout, result, i), daemon=True)
               for i in range(a.conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.timeout)
    t1 = time.monotonic()
    ok = [r for r in result if r and r["ok"]]
    errors = [r["error"] for r in result if r and not r["ok"]]
    if len(ok) < a.conns and not errors:
        errors.append("timeout")
    out = {"conns": a.conns, "bytes": per * len(ok), "ok": len(ok), "errors": errors[:3],
           "seconds": t1 - t0}
    if ok:
        span = max(r["t1"] for r in ok) - min(r["t0"] for r in ok)
        out["seconds"] = span
        out["mbps"] = per * len(ok) / span / 1e6
    print(json.dumps(out), flush=True)


def cmd_stream(a):
    """Sends as fast as it can for a.seconds over one connection; the target counts (mode D)."""
    if a.cc:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, a.cc.encode())
        s.settimeout(a.timeout)
        s.connect(hostport(a.addr))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        s = connect(a.addr, a.timeout)
    s.settimeout(a.timeout)
    s.sendall(b"D" + struct.pack("!I", int(a.seconds * 1000)))
    reply = {}

    def reader():
        try:
            ack = recv_exact(s, 17)
            got, secs = struct.unpack("!Qd", ack[1:])
            reply.update(bytes=got, seconds=secs)
        except Exception as e:  # noqa: BLE001
            reply.update(error=repr(e))

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    deadline = time.monotonic() + a.seconds + a.timeout
    try:
        while th.is_alive() and time.monotonic() < deadline:
            s.send(BUF[:CHUNK // 4])
    except OSError as e:
        if not reply:
            reply["error"] = repr(e)
    th.join(5)
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
    if "bytes" in reply and reply["seconds"] > 0:
        reply["mbps"] = reply["bytes"] / reply["seconds"] / 1e6
    print(json.dumps(reply), flush=True)


def cmd_latency(a):
    """Round trips of a.size bytes through the echo mode; prints percentiles in ms."""
    s = connect(a.addr, a.timeout)
    s.sendall(b"E")
    msg = os.urandom(a.size)
    times = []
    for _ in range(a.count):
        t = time.perf_counter()
        s.sendall(msg)
        recv_exact(s, a.size)
        times.append((time.perf_counter() - t) * 1000)
    s.close()
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    print(json.dumps({"count": a.count, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                      "max_ms": times[-1]}), flush=True)


def cmd_probe(a):
    """Connects (retrying until it works) and echoes one byte; prints the monotonic time."""
    deadline = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            s = connect(a.addr, 2)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            s.sendall(b"Ex")
            if recv_exact(s, 1) == b"x":
                t = time.monotonic()
                s.close()
                print(json.dumps({"ok": True, "t": t}), flush=True)
                return
        except (OSError, EOFError) as e:
            last = repr(e)
            time.sleep(0.002)
    print(json.dumps({"ok": False, "error": last}), flush=True)


async def _one_conn(addr, size, hold, opened, go, i=0):
    h, p = hostport(addr)
    r, w = await asyncio.open_connection(h, p)
    w.write(b"E")
    opened.append(1)
    await go.wait()
    # Each connection's bytes name it and their offset: data that reaches the wrong
    # connection, or arrives cut, shows where it came from.
    tag = b"".join(b"[%05d:%05d]" % (i, off) for off in range(0, size, 13))
    data = tag[:size]
    w.write(data)
    await w.drain()
    back = await r.readexactly(size)
    w.close()
    return back == data


async def _conns(a):
    opened = []
    go = asyncio.Event()
    tasks = [asyncio.create_task(_one_conn(a.addr, a.size, True, opened, go, i)) for i in range(a.conns)]
    t0 = time.monotonic()
    while len(opened) < a.conns and time.monotonic() - t0 < a.timeout:
        if all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    t_open = time.monotonic() - t0
    go.set()
    done, pending = await asyncio.wait(tasks, timeout=max(1, a.timeout - t_open))
    for t in pending:
        t.cancel()
    ok = sum(1 for t in done if not t.cancelled() and t.exception() is None and t.result())
    errs = [repr(t.exception()) for t in done if not t.cancelled() and t.exception() is not None]
    return {"conns": a.conns, "ok": ok, "open_s": t_open, "seconds": time.monotonic() - t0,
            "errors": errs[:3]}


def cmd_conns(a):
    """Opens a.conns connections at once, holds them all, then echoes a.size bytes on each."""
    raise_nofile()
    print(json.dumps(asyncio.run(_conns(a))), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("target")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.set_defaults(f=cmd_target)
    for name, f in (("send", cmd_send), ("stream", cmd_stream), ("latency", cmd_latency),
                    ("probe", cmd_probe), ("conns", cmd_conns)):
        p = sub.add_parser(name)
        p.add_argument("addr")
        p.add_argument("--bytes", type=int, default=1 << 30)
        p.add_argument("--conns", type=int, default=1)
        p.add_argument("--seconds", type=float, default=10)
        p.add_argument("--count", type=int, default=1000)
        p.add_argument("--size", type=int, default=64)
        p.add_argument("--timeout", type=float, default=120)
        p.add_argument("--cc", help="TCP congestion control for this connection (stream)")
        p.set_defaults(f=f)
    a = ap.parse_args()
    a.f(a)


if __name__ == "__main__":
    sys.exit(main())
