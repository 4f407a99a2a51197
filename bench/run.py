#!/usr/bin/env python3
"""yakk performance lab: one command, one report.

    python3 bench/run.py --quick      # smoke run: small sizes, short WAN runs (about a minute)
    python3 bench/run.py              # full run: 1 GiB transfers, 15 s per WAN condition

Writes bench/out/REPORT.md, bench/out/results.json and SVG charts in bench/out/.
Needs root for the WAN part (network namespaces `ykb*` with veth + tc netem); without root,
or with --no-wan, that part is skipped. Only loopback and the harness's own namespaces are used.
Every process has a deadline; everything the harness starts is stopped in `finally` (and
left-over `ykb*` namespaces from an earlier run are removed at start).
Standard library only (Python 3.11).
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOADGEN = os.path.join(HERE, "loadgen.py")
NS_A, NS_B = "ykbA", "ykbB"
IP_A, IP_B = "10.201.0.1", "10.201.0.2"
MB = 1e6

PROCS = []  # every process started, for cleanup
LOG_DIR = None


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

def tree_cpu(pid):
    """CPU seconds (user+sys, including reaped children) of pid and its live descendants."""
    tck = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        stats[int(d)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
            todo.extend(c for c, (pp, _) in stats.items() if pp == p)
    return total / tck


def tree_rss(pid):
    """Peak RSS in bytes of pid plus the current RSS of its live descendants."""
    total = 0
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                kids.setdefault(int(s[s.rfind(")") + 2:].split()[1]), []).append(int(d))
            except OSError:
                pass
    todo = [pid]
    while todo:
        p = todo.pop()
        # The process itself: its high-water mark (exact, kept by the kernel since exec).
        # Descendants (sshd's and socat's per-connection children): their current RSS.
        key = "VmHWM:" if p == pid else "VmRSS:"
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        todo.extend(kids.get(p, []))
    return total


class Proc:
    """A child process with a deadline, its stdout lines (parsed as JSON when they are), and
    its rusage (CPU seconds, peak RSS) once reaped."""

    def __init__(self, name, argv, ns=None, timeout=300, env=None, stdin_pipe=False):
        self.name = name
        full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        self.errpath = os.path.join(LOG_DIR, f"{name}.{len(PROCS)}.stderr")
        self.err = open(self.errpath, "wb")
        e = dict(os.environ)
        e.setdefault("RUST_LOG", "warn")
        e.update(env or {})
        self.t_start = time.monotonic()
        self.p = subprocess.Popen(full, stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=self.err, env=e, start_new_session=True)
        self.pid = self.p.pid
        self.deadline = self.t_start + timeout
        self.lines = []  # (monotonic time, parsed or raw line)
        self.cv = threading.Condition()
        self.rusage = None
        self.status = None
        self.peak_sampled = 0
        PROCS.append(self)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode(errors="replace").strip()
            try:
                v = json.loads(line)
            except ValueError:
                v = line
            with self.cv:
                self.lines.append((time.monotonic(), v))
                self.cv.notify_all()
        with self.cv:
            self.lines.append((time.monotonic(), None))
            self.cv.notify_all()

    def _sample(self):
        # Peak RSS of the whole process tree (sshd forks a child per connection).
        while self.rusage is None:
            try:
                self.peak_sampled = max(self.peak_sampled, tree_rss(self.pid))
            except Exception:  # noqa: BLE001
                pass
            if time.monotonic() > self.deadline:
                log(f"{self.name}: deadline passed, killing")
                self.kill()
            time.sleep(0.05)

    def wait_line(self, pred, timeout):
        """The first stdout line (time, value) for which pred(value) holds."""
        end = min(time.monotonic() + timeout, self.deadline)
        i = 0
        with self.cv:
            while True:
                while i < len(self.lines):
                    t, v = self.lines[i]
                    i += 1
                    if v is None:
                        raise RuntimeError(f"{self.name} exited before the expected output; "
                                           f"stderr: {self.tail()}")
                    if pred(v):
                        return t, v
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name}: expected output not seen in {timeout} s; "
                                       f"stderr: {self.tail()}")
                self.cv.wait(left)

    def event(self, name, timeout=30):
        return self.wait_line(lambda v: isinstance(v, dict) and v.get("event") == name, timeout)

    def json(self, timeout):
        return self.wait_line(lambda v: isinstance(v, dict), timeout)[1]

    def tail(self, n=600):
        try:
            with open(self.errpath, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def poll(self):
        if self.rusage is not None:
            return True
        try:
            pid, st, ru = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, st, ru = self.pid, 0, None
        if pid == 0:
            return False
        self.status = os.waitstatus_to_exitcode(st)
        self.p.returncode = self.status
        self.rusage = ru or resource.struct_rusage((0.0,) * 16)
        self.t_end = time.monotonic()
        self.err.close()
        return True

    def wait(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.poll():
                return self.status
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} did not exit within {timeout} s; stderr: {self.tail()}")

    def send_signal(self, sig):
        if self.rusage is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def stop(self, sig=signal.SIGINT, grace=3.0):
        if self.poll():
            return
        self.send_signal(sig)
        try:
            self.wait(grace)
        except RuntimeError:
            self.kill()
            self.wait(5)

    def cpu(self):
        return tree_cpu(self.pid)

    def stats(self):
        """CPU seconds and peak RSS (bytes) over the whole life; call after stop()."""
        ru = self.rusage
        # Not ru_maxrss: on Linux it inherits the high-water mark of the forking (Python)
        # process from before exec.
        peak = self.peak_sampled
        return {"cpu_s": (ru.ru_utime + ru.ru_stime) if ru else None, "peak_rss": peak}


def cleanup_procs():
    for p in reversed(PROCS):
        try:
            p.stop(signal.SIGTERM, 1.0)
        except Exception:  # noqa: BLE001
            p.kill()


def loadgen(name, args, ns=None, timeout=120):
    return Proc(name, [sys.executable, LOADGEN] + args, ns=ns, timeout=timeout)


def run_loadgen(name, args, ns=None, timeout=120):
    p = loadgen(name, args + ["--timeout", str(timeout)], ns=ns, timeout=timeout + 10)
    try:
        v = p.json(timeout + 5)
    finally:
        p.stop(signal.SIGTERM, 2)
    return v


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(addr, timeout, ns=None):
    """Waits until something accepts TCP connections on addr (host:port)."""
    end = time.monotonic() + timeout
    h, p = addr.rsplit(":", 1)
    while time.monotonic() < end:
        if ns:
            r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                                f"import socket;socket.create_connection(('{h}',{p}),1).close()"],
                               capture_output=True, timeout=5)
            if r.returncode == 0:
                return
        else:
            try:
                socket.create_connection((h, int(p)), 1).close()
                return
            except OSError:
                pass
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {addr} after {timeout} s")


# ---------------------------------------------------------------- tunnels

class Tunnel:
    """One way of carrying a TCP port: start() brings it up in front of a target port and
    returns the local entry address; a_procs/b_procs are the owner-side and joiner-side
    processes measured."""

    name = "?"

    def __init__(self, cfg):
        self.cfg = cfg
        self.a = []
        self.b = []
        self.t_join = None

    def start(self, target_port):
        raise NotImplementedError

    def stop(self):
        for p in self.b + self.a:
            p.stop()

    def cpu(self):
        return (sum(p.cpu() for p in self.a), sum(p.cpu() for p in self.b))


class Direct(Tunnel):
    name = "direct TCP"

    def start(self, port):
        self.t_join = time.monotonic()
        return f"127.0.0.1:{port}"


class Yakk(Tunnel):
    name = "yakk (yakk/2)"

    def __init__(self, cfg, ns_a=None, ns_b=None, ip_a="127.0.0.1", ip_b="127.0.0.1", lanes=None):
        super().__init__(cfg)
        self.ns_a, self.ns_b, self.ip_a, self.ip_b = ns_a, ns_b, ip_a, ip_b
        self.env = dict(cfg.yakk_env)
        if lanes:
            # Every stream striped over this many peer connections (--lanes).
            self.env["YAKK_LANES"] = str(lanes)
            self.name = f"yakk (yakk/2, {lanes} lanes)"

    def start(self, port):
        y = self.cfg.yakk
        owner = Proc("yakk-server", [y, "server", "-p", str(port), "--json", "--ice-ip", self.ip_a],
                     ns=self.ns_a, timeout=self.cfg.proc_timeout, env=self.env)
        self.a.append(owner)
        _, ev = owner.event("code", 20)
        self.t_join = time.monotonic()
        joiner = Proc("yakk-client", [y, "client", "-p", "0", "--json", "--ice-ip", self.ip_b,
                                      ev["code"]],
                      ns=self.ns_b, timeout=self.cfg.proc_timeout, env=self.env)
        self.b.append(joiner)
        t_conn, conn = joiner.event("connected", 30)
        self.connected = conn
        # From the joiner's start to its peer connection(s) up, every lane included.
        self.connect_ms = (t_conn - self.t_join) * 1000
        _, lst = joiner.event("listening", 10)
        return lst["address"]


class Ssh(Tunnel):
    def __init__(self, cfg, cipher=None):
        super().__init__(cfg)
        self.cipher = cipher
        self.name = "ssh -L" + (f" ({cipher})" if cipher else "")

    def start(self, port):
        d = tempfile.mkdtemp(prefix="ykb-ssh-", dir=self.cfg.tmp)
        os.chmod(d, 0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/host"], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/user"], check=True)
        shutil.copy(f"{d}/user.pub", f"{d}/authorized_keys")
        sport = free_port()
        with open(f"{d}/sshd_config", "w") as f:
            f.write(f"ListenAddress 127.0.0.1:{sport}\nHostKey {d}/host\n"
                    f"AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
                    f"PidFile {d}/sshd.pid\nStrictModes no\nAllowTcpForwarding yes\n")
        os.makedirs("/run/sshd", exist_ok=True)
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.a.append(Proc("sshd", [sshd, "-D", "-e", "-f", f"{d}/sshd_config"],
                           timeout=self.cfg.proc_timeout))
        wait_port(f"127.0.0.1:{sport}", 10)
        lport = free_port()
        self.t_join = time.monotonic()
        argv = ["ssh", "-N", "-T", "-i", f"{d}/user", "-p", str(sport),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
                "-L", f"127.0.0.1:{lport}:127.0.0.1:{port}"]
        if self.cipher:
            argv += ["-c", self.cipher]
        self.b.append(Proc("ssh", argv + [f"{os.environ.get('USER', 'root')}@127.0.0.1"],
                           timeout=self.cfg.proc_timeout))
        return f"127.0.0.1:{lport}"


class Socat(Tunnel):
    name = "socat (relay)"

    def start(self, port):
        lport = free_port()
        self.t_join = time.monotonic()
        p = Proc("socat", ["socat", f"TCP-LISTEN:{lport},bind=127.0.0.1,reuseaddr,fork,backlog=2048",
                           f"TCP:127.0.0.1:{port}"], timeout=self.cfg.proc_timeout)
        self.a.append(p)
        return f"127.0.0.1:{lport}"


class Dumbpipe(Tunnel):
    name = "dumbpipe (iroh QUIC)"

    def start(self, port):
        exe = self.cfg.dumbpipe
        lst = Proc("dumbpipe-listen", [exe, "listen-tcp", "--host", f"127.0.0.1:{port}"],
                   timeout=self.cfg.proc_timeout)
        self.a.append(lst)
        ticket = None
        end = time.monotonic() + 30
        while ticket is None and time.monotonic() < end:
            # The ticket is printed on stderr in the instruction "dumbpipe connect-tcp
            # TICKET" (after other long tokens such as the secret key): take the one there.
            toks = lst.tail(20000).split()
            for i, tok in enumerate(toks[:-1]):
                if tok == "connect-tcp" and len(toks[i + 1]) > 40 and toks[i + 1].isalnum():
                    ticket = toks[i + 1]
            if lst.poll():
                raise RuntimeError(f"dumbpipe listen exited: {lst.tail()}")
            time.sleep(0.05)
        if ticket is None:
            raise RuntimeError("dumbpipe printed no ticket")
        lport = free_port()
        self.t_join = time.monotonic()
        self.b.append(Proc("dumbpipe-connect", [exe, "connect-tcp", "--addr", f"127.0.0.1:{lport}",
                                                ticket], timeout=self.cfg.proc_timeout))
        return f"127.0.0.1:{lport}"


# ---------------------------------------------------------------- loopback port forwarding

def probe_echo(addr, timeout):
    """In this process (no interpreter start-up in the figure): connect, retrying until it
    works, and echo one byte through the target's echo mode."""
    h, p = addr.rsplit(":", 1)
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            s = socket.create_connection((h, int(p)), 2)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(max(0.1, end - time.monotonic()))
            s.sendall(b"Ex")
            if s.recv(1) == b"x":
                t = time.monotonic()
                s.close()
                return {"ok": True, "t": t}
            s.close()
        except OSError as e:
            last = repr(e)
        time.sleep(0.002)
    return {"ok": False, "error": last}


def bench_forward(cfg, tun, target_port):
    r = {"tool": tun.name}
    addr = tun.start(target_port)
    probe = probe_echo(addr, cfg.setup_timeout)
    if not probe.get("ok"):
        raise RuntimeError(f"no echo through {tun.name}: {probe}")
    r["setup_ms"] = (probe["t"] - tun.t_join) * 1000
    log(f"  {tun.name}: first byte echoed {r['setup_ms']:.0f} ms after the joiner started")
    lat = run_loadgen("latency", ["latency", addr, "--count", str(cfg.rtt_count), "--size", "64"],
                      timeout=60)
    r["rtt_p50_ms"], r["rtt_p99_ms"] = lat["p50_ms"], lat["p99_ms"]
    for conns, key in ((1, "one"), (16, "sixteen")):
        ca, cb = tun.cpu()
        v = run_loadgen(f"send{conns}", ["send", addr, "--bytes", str(cfg.size), "--conns", str(conns)],
                        timeout=cfg.xfer_timeout)
        ca2, cb2 = tun.cpu()
        if "mbps" not in v or v["ok"] < conns:
            r[f"{key}_error"] = f"{v.get('ok')}/{conns} finished: {v.get('errors')}"
            log(f"  {tun.name}: {conns} conns failed: {r[f'{key}_error']}")
            if "mbps" not in v:
                continue
        r[f"{key}_mbps"] = v["mbps"]
        r[f"{key}_cpu_a"], r[f"{key}_cpu_b"] = ca2 - ca, cb2 - cb
        # Peak RSS so far: through setup, latency and this transfer (for "one": one connection).
        r[f"{key}_rss_a"] = max((p.peak_sampled for p in tun.a), default=None)
        r[f"{key}_rss_b"] = max((p.peak_sampled for p in tun.b), default=None)
        log(f"  {tun.name}: {conns} conn(s) {v['mbps']:.0f} MB/s, CPU {ca2 - ca:.2f}+{cb2 - cb:.2f} s")
    if cfg.many and isinstance(tun, (Yakk, Direct)):
        v = run_loadgen("conns", ["conns", addr, "--conns", str(cfg.many), "--size", "1024"],
                        timeout=120)
        r["many"] = v
        log(f"  {tun.name}: {v['ok']}/{cfg.many} concurrent connections echoed in {v['seconds']:.1f} s")
    tun.stop()
    a = [p.stats() for p in tun.a]
    b = [p.stats() for p in tun.b]
    r["rss_a"] = max((s["peak_rss"] for s in a), default=None)
    r["rss_b"] = max((s["peak_rss"] for s in b), default=None)
    return r


# ---------------------------------------------------------------- files

def make_file(path, size):
    with open(path, "wb") as f:
        left = size
        block = os.urandom(1 << 20)
        while left > 0:
            k = min(left, len(block))
            f.write(block[:k])
            left -= k
            block = block[1:] + block[:1] if left % (64 << 20) == 0 else block


def watch_first_byte(d, stop, out):
    while not stop.is_set():
        for root, _, files in os.walk(d):
            for fn in files:
                try:
                    if os.path.getsize(os.path.join(root, fn)) > 0:
                        out.append(time.monotonic())
                        return
                except OSError:
                    pass
        time.sleep(0.002)


def received_ok(d, size):
    total = 0
    for root, _, files in os.walk(d):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    return total == size


def wait_idle(p, quiet=0.3, timeout=30):
    """Waits until a process stops using CPU (e.g. yakk filesend has hashed its file)."""
    end = time.monotonic() + timeout
    last = p.cpu()
    still = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        c = p.cpu()
        if c != last:
            last, still = c, time.monotonic()
        elif time.monotonic() - still >= quiet:
            return


def file_case(cfg, name, start_sender, start_receiver, src):
    # Write back what earlier steps left dirty (the source file just written, the previous
    # receiver's file), so that no case shares the disk with another's writeback.
    os.sync()
    out = tempfile.mkdtemp(prefix="ykb-recv-", dir=cfg.tmp)
    sender, infra = start_sender()
    stop, first = threading.Event(), []
    th = threading.Thread(target=watch_first_byte, args=(out, stop, first), daemon=True)
    th.start()
    t0 = time.monotonic()
    recv = start_receiver(out)
    try:
        status = recv.wait(cfg.xfer_timeout)
        t1 = time.monotonic()
    finally:
        stop.set()
        recv.stop()
        sender.stop(grace=10)
        for p in infra:
            p.stop(signal.SIGTERM)
    ok = status == 0 and received_ok(out, cfg.size)
    shutil.rmtree(out, ignore_errors=True)
    sa, rb = sender.stats(), recv.stats()
    r = {"tool": name, "ok": ok, "seconds": t1 - t0, "mbps": cfg.size / (t1 - t0) / MB if ok else None,
         "ttfb_ms": (first[0] - t0) * 1000 if first else None,
         "cpu_a": sa["cpu_s"], "cpu_b": rb["cpu_s"], "rss_a": sa["peak_rss"], "rss_b": rb["peak_rss"]}
    if not ok:
        r["error"] = f"exit {status}; stderr: {recv.tail(300)}"
    log(f"  {name}: {'ok' if ok else 'FAILED'} {t1 - t0:.2f} s"
        + (f", {r['mbps']:.0f} MB/s" if ok else f" {r.get('error')}"))
    return r


def bench_files(cfg):
    src_dir = tempfile.mkdtemp(prefix="ykb-src-", dir=cfg.tmp)
    src = os.path.join(src_dir, "payload.bin")
    log(f"writing a {cfg.size / 2**20:.0f} MiB file")
    make_file(src, cfg.size)
    results = []

    def yakk_sender():
        p = Proc("yakk-filesend", [cfg.yakk, "filesend", src, "--json", "--ice-ip", "127.0.0.1"],
                 timeout=cfg.proc_timeout)
        _, ev = p.event("code", 20)
        yakk_sender.code = ev["code"]
        wait_idle(p)  # it hashes the file first; that is not transfer time
        return p, []

    def yakk_receiver(out):
        return Proc("yakk-filereceive", [cfg.yakk, "filereceive", yakk_sender.code, "--yes", "-o", out,
                                         "--json", "--ice-ip", "127.0.0.1"], timeout=cfg.proc_timeout)

    port = [0]

    def socat_sender():
        port[0] = free_port()
        p = Proc("socat-send", ["socat", "-u", f"OPEN:{src},rdonly",
                                f"TCP-LISTEN:{port[0]},bind=127.0.0.1,reuseaddr"],
                 timeout=cfg.proc_timeout)
        wait_port_quiet(port[0])
        return p, []

    def socat_receiver(out):
        return Proc("socat-recv", ["socat", "-u", f"TCP:127.0.0.1:{port[0]}",
                                   f"CREATE:{out}/payload.bin"], timeout=cfg.proc_timeout)

    code = "7-yakk-bench"
    wh = {}

    def wormhole_sender():
        mp, tp = free_port(), free_port()
        twistd = shutil.which("twistd3") or shutil.which("twistd") or "twistd"
        wd = tempfile.mkdtemp(prefix="ykb-wh-", dir=cfg.tmp)
        mbox = Proc("wormhole-mailbox", [twistd, "-n", "--pidfile=", "--logfile=-", "wormhole-mailbox",
                                         f"--port=tcp:{mp}:interface=127.0.0.1",
                                         f"--channel-db={wd}/relay.sqlite",
                                         f"--usage-db={wd}/usage.sqlite"],
                    timeout=cfg.proc_timeout)
        relay = Proc("wormhole-transit", [twistd, "-n", "--pidfile=", "--logfile=-", "transitrelay",
                                          f"--port=tcp:{tp}:interface=127.0.0.1"],
                     timeout=cfg.proc_timeout)
        wait_port(f"127.0.0.1:{mp}", 20)
        wait_port(f"127.0.0.1:{tp}", 20)
        wh["args"] = ["--relay-url", f"ws://127.0.0.1:{mp}/v1", "--transit-helper",
                      f"tcp:127.0.0.1:{tp}"]
        p = Proc("wormhole-send", ["wormhole"] + wh["args"] + ["send", "--code", code, src],
                 timeout=cfg.proc_timeout)
        time.sleep(1.0)  # let it claim the nameplate
        return p, [mbox, relay]

    def wormhole_receiver(out):
        return Proc("wormhole-recv", ["wormhole"] + wh["args"] + ["receive", "--accept-file", "-o",
                                                                   f"{out}/payload.bin", code],
                    timeout=cfg.proc_timeout)

    cases = [("yakk filesend/filereceive", yakk_sender, yakk_receiver),
             ("plain TCP copy (socat)", socat_sender, socat_receiver)]
    if shutil.which("wormhole"):
        cases.append(("magic-wormhole (local mailbox + relay)", wormhole_sender, wormhole_receiver))
    for name, s, rcv in cases:
        try:
            results.append(file_case(cfg, name, s, rcv, src))
        except Exception as e:  # noqa: BLE001
            log(f"  {name}: FAILED {e}")
            results.append({"tool": name, "ok": False, "error": str(e)[:300]})
    shutil.rmtree(src_dir, ignore_errors=True)
    return results


def wait_port_quiet(port):
    # socat -u ... TCP-LISTEN: a probe connection would be taken as the transfer, so instead
    # wait for the listening socket to appear in /proc/net/tcp.
    hexport = f":{port:04X}"
    end = time.monotonic() + 10
    while time.monotonic() < end:
        with open("/proc/net/tcp") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 3 and parts[1].endswith(hexport) and parts[3] == "0A":
                    return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on {port}")


# ---------------------------------------------------------------- WAN emulation

def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


def ns_teardown():
    out = sh("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("ykb"):
            # Kill whatever still runs inside, then remove the namespace (and its devices).
            pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
    for dev in ("ykbA0", "ykbB0"):
        sh("ip", "link", "del", dev, check=False)


class Link:
    """The emulated link between namespaces ykbA and ykbB.

    With the kernel's netem (`sch_netem`): a veth pair with `tc qdisc ... netem` on both ends.
    Without it (this machine's kernel has none): two TUN devices joined by bench/netem, a small
    user-space emulator with the same model (delay each way, loss each way, rate, a deep queue)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.emu = None
        self.kind = None

    def up(self):
        ns_teardown()
        sh("ip", "netns", "add", NS_A)
        sh("ip", "netns", "add", NS_B)
        probe = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            sh("tc", "qdisc", "del", "dev", "lo", "root", check=False)
            self.kind = "veth + tc netem"
            sh("ip", "link", "add", "ykbA0", "netns", NS_A, "type", "veth", "peer", "name", "ykbB0",
               "netns", NS_B)
        else:
            if not os.access(self.cfg.netem, os.X_OK):
                raise RuntimeError("the kernel has no netem and bench/netem is not built: "
                                   "cargo build --release --manifest-path bench/netem/Cargo.toml")
            self.kind = "TUN + bench/netem (user space; the kernel has no sch_netem)"
            self.control = os.path.join(self.cfg.tmp, "netem.conf")
            with open(self.control, "w") as f:
                f.write("0 0 1000\n")
            self.emu = Proc("ykb-netem", [self.cfg.netem, "--a", "ykbA0", "--b", "ykbB0",
                                          "--control", self.control],
                            timeout=self.cfg.proc_timeout * 4, stdin_pipe=True)
            self.emu.wait_line(lambda v: v == "ready", 10)
            sh("ip", "link", "set", "ykbA0", "netns", NS_A)
            sh("ip", "link", "set", "ykbB0", "netns", NS_B)
        for ns, dev, ip in ((NS_A, "ykbA0", IP_A), (NS_B, "ykbB0", IP_B)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            # A deep device queue: the emulator, not the TUN queue (500 packets by default),
            # must be where packets wait, as with netem's `limit`.
            sh("ip", "-n", ns, "link", "set", dev, "mtu", "1500", "multicast", "on",
               "txqueuelen", "100000")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # A default route as on a real host (mDNS sockets join 224.0.0.251, which needs a
            # route; the link is the namespace's only way out anyway).
            sh("ip", "-n", ns, "route", "add", "default", "dev", dev)

    def set(self, rtt_ms, loss):
        if self.emu is None:
            for ns, dev in ((NS_A, "ykbA0"), (NS_B, "ykbB0")):
                # netem's default queue (1000 packets) is smaller than 1 Gbit x 100 ms.
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem",
                   "delay", f"{rtt_ms / 2}ms", "loss", f"{loss}%", "rate", "1gbit", "limit", "100000")
            return
        line = f"{rtt_ms / 2} {loss} 1000"
        with open(self.control + ".new", "w") as f:
            f.write(line + "\n")
        os.replace(self.control + ".new", self.control)
        self.emu.wait_line(lambda v: v == f"set {line}", 5)

    def down(self):
        if self.emu:
            self.emu.stop(signal.SIGTERM, 2)
        ns_teardown()


def wan_tcp(cfg, target_port, cc=None):
    extra = ["--cc", cc] if cc else []
    v = run_loadgen("wan-tcp", ["stream", f"{IP_A}:{target_port}", "--seconds", str(cfg.wan_seconds)]
                    + extra, ns=NS_B, timeout=cfg.wan_seconds + 30)
    return v


def default_cc():
    try:
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            return f.read().strip()
    except OSError:
        return "?"


def wan_yakk(cfg, target_port, lanes=None):
    tun = Yakk(cfg, ns_a=NS_A, ns_b=NS_B, ip_a=IP_A, ip_b=IP_B, lanes=lanes)
    try:
        addr = tun.start(target_port)
        v = run_loadgen("wan-yakk", ["stream", addr, "--seconds", str(cfg.wan_seconds)], ns=NS_B,
                        timeout=cfg.wan_seconds + 30)
    finally:
        tun.stop()
    v["rss_a"] = tun.a[0].stats()["peak_rss"] if tun.a else None
    v["rss_b"] = tun.b[0].stats()["peak_rss"] if tun.b else None
    v["lanes"] = (getattr(tun, "connected", None) or {}).get("lanes")
    v["connect_ms"] = getattr(tun, "connect_ms", None)
    return v


def wan_yakk_parallel(cfg, target_port, k):
    """k separate tunnels (k peer connections, so k SCTP associations, each with its own
    congestion window), one stream through each at the same time: what striping one
    connection over k associations could reach on this link. The sum is reported."""
    tuns = [Yakk(cfg, ns_a=NS_A, ns_b=NS_B, ip_a=IP_A, ip_b=IP_B) for _ in range(k)]
    try:
        addrs = [t.start(target_port) for t in tuns]
        got = [None] * k

        def one(i):
            try:
                got[i] = run_loadgen(f"wan-yakk-x{k}-{i}", ["stream", addrs[i], "--seconds",
                                                            str(cfg.wan_seconds)],
                                     ns=NS_B, timeout=cfg.wan_seconds + 30)
            except Exception as e:  # noqa: BLE001
                got[i] = {"error": str(e)[:200]}

        ths = [threading.Thread(target=one, args=(i,)) for i in range(k)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    finally:
        for t in tuns:
            t.stop()
    bad = [g for g in got if not g or "mbps" not in g]
    if bad:
        return {"error": f"{len(bad)} of {k} streams failed: {bad[0]}"}
    return {"mbps": sum(g["mbps"] for g in got), "streams": [g["mbps"] for g in got]}


def bench_wan(cfg):
    results = []
    link = Link(cfg)
    link.up()
    cfg.link_kind = link.kind
    cfg.cc_default = default_cc()
    target = loadgen("wan-target", ["target", "--host", "0.0.0.0", "--port", "5201"], ns=NS_A,
                     timeout=cfg.proc_timeout * 4)
    target.json(10)
    try:
        for rtt in cfg.rtts:
            for loss in cfg.losses:
                link.set(rtt, loss)
                row = {"rtt_ms": rtt, "loss": loss}
                cases = [("tcp", wan_tcp)]
                for v in cfg.wan_yakk.split(","):
                    if v == "default":
                        cases.append(("yakk", wan_yakk))
                    elif v:
                        n = int(v[len("lanes"):])
                        cases.append((f"yakk_{v}", lambda c, p, n=n: wan_yakk(c, p, lanes=n)))
                for k in cfg.wan_parallel:
                    cases.append((f"parallel_{k}", lambda c, p, k=k: wan_yakk_parallel(c, p, k)))
                if cfg.cc_default != "cubic":
                    cases.insert(1, ("tcp_cubic", lambda c, p: wan_tcp(c, p, "cubic")))
                for name, f in cases:
                    try:
                        v = f(cfg, 5201)
                    except Exception as e:  # noqa: BLE001
                        v = {"error": str(e)[:300]}
                    row[name] = v
                    log(f"  WAN {rtt} ms, {loss}% loss, {name}: "
                        + (f"{v['mbps']:.1f} MB/s" if "mbps" in v else f"FAILED {v.get('error')}")
                        + (f", connected after {v['connect_ms']:.0f} ms" if v.get("connect_ms") else ""))
                results.append(row)
    finally:
        target.stop(signal.SIGTERM)
        link.down()
    return results


# ---------------------------------------------------------------- report

def fmt(v, spec=".0f", none="–"):
    return none if v is None else format(v, spec)


def mib(b):
    return None if b is None else b / 2**20


def svg_bars(path, title, groups, series, unit, width=760):
    """Grouped horizontal bar chart. groups: [(label, {series: value})]."""
    colors = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"]
    bar_h, gap, left, top = 16, 12, 250, 40
    rows = sum(max(1, len(series)) * bar_h + gap for _ in groups)
    h = top + rows + 30 + 18 * len(series)
    vmax = max([v for _, d in groups for v in d.values() if v] + [1e-9])
    scale = (width - left - 90) / vmax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{esc(title)}</text>']
    y = top
    for label, d in groups:
        n = max(1, len(series))
        out.append(f'<text x="{left - 8}" y="{y + n * bar_h / 2 + 4}" text-anchor="end">{esc(label)}</text>')
        for i, s in enumerate(series):
            v = d.get(s)
            if v is not None:
                w = max(1, v * scale)
                out.append(f'<rect x="{left}" y="{y + i * bar_h}" width="{w:.1f}" height="{bar_h - 2}" '
                           f'fill="{colors[i % len(colors)]}"/>')
                out.append(f'<text x="{left + w + 4:.1f}" y="{y + i * bar_h + 12}">{v:.1f}</text>')
            else:
                out.append(f'<text x="{left + 4}" y="{y + i * bar_h + 12}" fill="#999">n/a</text>')
        y += n * bar_h + gap
    out.append(f'<text x="{left}" y="{y + 10}" fill="#555">{esc(unit)}</text>')
    for i, s in enumerate(series):
        yy = y + 24 + 18 * i
        out.append(f'<rect x="{left}" y="{yy - 10}" width="12" height="12" fill="{colors[i % len(colors)]}"/>')
        out.append(f'<text x="{left + 18}" y="{yy}">{esc(s)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def report(cfg, res, out_dir):
    L = []
    size_s = f"{cfg.size / 2**30:g} GiB" if cfg.size >= 2**30 else f"{cfg.size / 2**20:g} MiB"
    L.append(f"# yakk performance report\n")
    L.append(f"Run {res['started']} UTC on {res['machine']}, mode `{'quick' if cfg.quick else 'full'}`, "
             f"yakk `{res['yakk_version']}`, load average {res.get('load_start', 0):.1f} at the start and "
             f"{res.get('load_end', 0):.1f} at the end (other work on the machine). MB/s = 10^6 bytes/s. Compare figures within one run only: "
             f"on this shared 2-core machine they move by a third between runs. The load generator "
             f"(Python) runs on the same two cores as the tools.\n")
    fw = res.get("forward", [])
    if fw:
        L.append(f"## Port forwarding over loopback ({size_s} per throughput cell)\n")
        L.append("| tool | 1 conn MB/s | 16 conns MB/s | setup ms | RTT p50 / p99 ms | "
                 "CPU s, 1 conn (owner + joiner) | peak RSS MiB, 1 conn (owner / joiner) | "
                 "peak RSS MiB, whole session |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in fw:
            if "error" in r and "one_mbps" not in r:
                L.append(f"| {r['tool']} | failed: {esc(r['error'])[:120]} | | | | | | |")
                continue
            L.append(f"| {r['tool']} | {fmt(r.get('one_mbps'))} | {fmt(r.get('sixteen_mbps'))} | "
                     f"{fmt(r.get('setup_ms'))} | {fmt(r.get('rtt_p50_ms'), '.3f')} / "
                     f"{fmt(r.get('rtt_p99_ms'), '.3f')} | "
                     f"{fmt(r.get('one_cpu_a'), '.2f')} + {fmt(r.get('one_cpu_b'), '.2f')} | "
                     f"{fmt(mib(r.get('one_rss_a')), '.1f')} / {fmt(mib(r.get('one_rss_b')), '.1f')} | "
                     f"{fmt(mib(r.get('rss_a')), '.1f')} / {fmt(mib(r.get('rss_b')), '.1f')} |")
        many = [(r["tool"], r["many"]) for r in fw if r.get("many")]
        if many:
            L.append("")
            for t, m in many:
                L.append(f"- {t}: {m['ok']} of {m['conns']} concurrent connections opened, held and "
                         f"echoed 1 KiB each in {m['seconds']:.2f} s (all open after {m['open_s']:.2f} s)"
                         + (f"; errors: {m['errors']}" if m.get("errors") else "") + ".")
        L.append("\nSetup: from the start of the joining process (`yakk client`, `ssh -L`, "
                 "`dumbpipe connect-tcp`) to the first byte echoed back through the tunnel. "
                 "RTT: 64-byte messages echoed one at a time. Peak RSS, 1 conn: the peak through setup, "
                 "latency and the one-connection transfer (sampled every 50 ms); whole session: "
                 "also the 16-connection run"
                 + (" and the concurrent connections" if many else "") + ".")
        L.append("\n![forwarding throughput](forward.svg)\n")
        svg_bars(os.path.join(out_dir, "forward.svg"), f"Port forwarding over loopback, {size_s}",
                 [(r["tool"], {"1 connection": r.get("one_mbps"), "16 connections": r.get("sixteen_mbps")})
                  for r in fw], ["1 connection", "16 connections"], "MB/s")
    fl = res.get("files", [])
    if fl:
        L.append(f"## File transfer over loopback ({size_s})\n")
        L.append("| tool | MB/s | seconds | time to first byte ms | CPU s (sender + receiver) | "
                 "peak RSS MiB (sender / receiver) |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for r in fl:
            if not r.get("ok"):
                L.append(f"| {r['tool']} | failed: {esc(r.get('error', ''))[:150]} | | | | |")
                continue
            L.append(f"| {r['tool']} | {fmt(r['mbps'])} | {fmt(r['seconds'], '.2f')} | {fmt(r['ttfb_ms'])} | "
                     f"{fmt(r['cpu_a'], '.2f')} + {fmt(r['cpu_b'], '.2f')} | "
                     f"{fmt(mib(r['rss_a']), '.1f')} / {fmt(mib(r['rss_b']), '.1f')} |")
        L.append("\nTimed from the receiver's start (the sender already waiting; yakk's sender has "
                 "hashed the file by then) to the receiver's exit with the whole file on disk. "
                 "Time to first byte: until the first byte of the file appears in the output folder. "
                 "magic-wormhole uses a local mailbox server and transit relay.\n")
        L.append("![file transfer](files.svg)\n")
        svg_bars(os.path.join(out_dir, "files.svg"), f"File transfer over loopback, {size_s}",
                 [(r["tool"], {"MB/s": r.get("mbps")}) for r in fl], ["MB/s"], "MB/s")
    wan = res.get("wan", [])
    if wan:
        L.append(f"## Emulated WAN ({cfg.wan_seconds:g} s of one connection per cell)\n")
        L.append(f"Two network namespaces joined by {getattr(cfg, 'link_kind', '?')}: half the RTT "
                 "of delay each way, the loss rate on each direction, rate 1 Gbit, queue limit 100,000 "
                 "packets, MTU 1500. TCP: the load generator straight to the target across the link (kernel "
                 "defaults: its congestion control, and CUBIC set on the socket). yakk: owner in one namespace, joiner in the other, one forwarded "
                 "connection. Throughput is measured at the receiving end.\n")
        cc = getattr(cfg, "cc_default", "?")
        tcps = [k for k in ("tcp", "tcp_cubic") if any(k in w for w in wan)]
        yks = [k for k in wan[0] if k.startswith("yakk")]
        label = {"tcp": f"TCP ({cc}, default)", "tcp_cubic": "TCP (cubic)",
                 "yakk": "yakk (default, auto lanes)"}
        def lab(k):
            if k.startswith("yakk_lanes"):
                n = k[len('yakk_lanes'):]
                return f"yakk ({n} lane{'' if n == '1' else 's'})"
            return label.get(k, k)

        L.append("| RTT ms | loss % | " + " | ".join(f"{lab(k)} MB/s" for k in tcps + yks)
                 + " | yakk / TCP | target (50 ms) | yakk peak RSS MiB (owner / joiner) |")
        L.append("|---:|---:|" + "---:|" * len(tcps + yks) + "---|---|---:|")
        for w in wan:
            g = lambda k: w.get(k, {}).get("mbps")  # noqa: E731
            ratios, tgt = [], []
            need = 0.5 if w["loss"] == 0 else 0.4
            for y in yks:
                for t in tcps:
                    r = g(y) / g(t) if g(y) and g(t) else None
                    ratios.append(f"{lab(y).split(' ', 1)[1] if len(yks) > 1 else ''} vs {t}: "
                                  f"{fmt(r * 100 if r else None, '.0f')}%")
                    if w["rtt_ms"] == 50:
                        tgt.append(f"{'met' if r and r >= need else 'not met'}")
            rss = "; ".join(f"{fmt(mib(w[y].get('rss_a')), '.1f')} / {fmt(mib(w[y].get('rss_b')), '.1f')}"
                            for y in yks if y in w)
            L.append(f"| {w['rtt_ms']} | {w['loss']:g} | " + " | ".join(fmt(g(k), '.1f') for k in tcps + yks)
                     + f" | {'<br>'.join(ratios)} | "
                     + (f"≥{need:.0%}: " + ", ".join(tgt) if tgt else "") + f" | {rss} |")
        chose = [f"{w['rtt_ms']} ms: {w['yakk']['lanes']}" for w in wan
                 if w.get("yakk", {}).get("lanes") and w["loss"] == 0]
        if chose:
            L.append("\nLanes yakk chose by default (`--lanes auto`), by RTT: " + ", ".join(chose)
                     + ".")
        conn = [f"{lab(k)} {w[k]['connect_ms']:.0f} ms" for w in wan if w["rtt_ms"] == 50
                and w["loss"] == 0 for k in yks if w.get(k, {}).get("connect_ms")]
        if conn:
            L.append("\nAt 50 ms without loss, from the joiner's start to its peer connections up: "
                     + ", ".join(conn) + ".")
        errs = [(w["rtt_ms"], w["loss"], k, w[k]["error"]) for w in wan
                for k in w if isinstance(w[k], dict) and "error" in w[k]]
        for e in errs:
            L.append(f"\n- {e[0]} ms / {e[1]}% {e[2]}: {esc(e[3])[:200]}")
        par = [(w, k) for w in wan for k in w if k.startswith("parallel_")]
        if par:
            L.append("\nSeveral yakk tunnels at once (`--wan-parallel`), one stream each, sum of their "
                     "throughput (a diagnostic of striping over several associations):\n")
            for w, k in par:
                v = w[k]
                got = f"{v['mbps']:.1f} MB/s" if "mbps" in v else f"failed: {v.get('error')}"
                L.append(f"- {w['rtt_ms']} ms, {w['loss']:g}% loss, {k.split('_')[1]} tunnels: {got}")
        L.append("\n![WAN throughput](wan.svg)\n")
        svg_bars(os.path.join(out_dir, "wan.svg"), "Emulated WAN, one connection",
                 [(f"RTT {w['rtt_ms']} ms, loss {w['loss']:g}%",
                   {lab(k): w.get(k, {}).get("mbps") for k in tcps + yks}) for w in wan],
                 [lab(k) for k in tcps + yks], "MB/s")
    L.append("## Targets\n")
    L.extend(targets(cfg, res))
    L.append(f"\nRerun: `python3 bench/run.py{' --quick' if cfg.quick else ''}` "
             "(see bench/README.md).\n")
    text = "\n".join(L)
    with open(os.path.join(out_dir, "REPORT.md"), "w") as f:
        f.write(text)
    return text


def targets(cfg, res):
    out = []
    ys = [r for r in res.get("forward", []) if r["tool"].startswith("yakk")]
    yf = next((r for r in res.get("files", []) if r["tool"].startswith("yakk")), None)

    def line(what, ok, got):
        out.append(f"- {what}: **{'met' if ok else 'not met'}** ({got})")

    for y in ys:
        t = y["tool"]
        v = y.get("one_mbps")
        line(f"{t}: ≥250 MB/s through one connection", v and v >= 250, f"{fmt(v)} MB/s")
        v = y.get("setup_ms")
        line(f"{t}: setup under 150 ms on loopback", v and v < 150, f"{fmt(v)} ms")
        m = max(y.get("rss_a") or 0, y.get("rss_b") or 0)
        line(f"{t}: ≤60 MB RSS per peer (forwarding)", m and m <= 60e6, f"max {m / MB:.1f} MB")
        if y.get("many"):
            line(f"{t}: {cfg.many} concurrent connections", y["many"]["ok"] == cfg.many,
                 f"{y['many']['ok']} ok")
    if yf and yf.get("ok"):
        line("≥200 MB/s file transfer", yf["mbps"] >= 200, f"{yf['mbps']:.0f} MB/s")
        m = max(yf["rss_a"], yf["rss_b"])
        line("≤60 MB RSS per side (files)", m <= 60e6, f"max {m / MB:.1f} MB")
    for w in res.get("wan", []):
        if w["rtt_ms"] != 50:
            continue
        need = 0.5 if w["loss"] == 0 else 0.4
        for y in [k for k in w if k.startswith("yakk")]:
            v = w[y].get("mbps")
            for k, n in (("tcp", f"TCP {getattr(cfg, 'cc_default', '')} (default)"),
                         ("tcp_cubic", "TCP cubic")):
                if k in w:
                    t = w[k].get("mbps")
                    line(f"50 ms RTT, {w['loss']:g}% loss: {y} ≥{need:.0%} of {n}",
                         t and v and v / t >= need, f"{fmt(v, '.1f')} vs {fmt(t, '.1f')} MB/s")
    m = max([w[y].get(k) or 0 for w in res.get("wan", []) for y in w if y.startswith("yakk")
             for k in ("rss_a", "rss_b")] + [0])
    if m:
        line("≤100 MB per peer on the WAN runs", m <= 100e6, f"max {m / MB:.1f} MB")
    if cfg.quick:
        out.append("\n(Quick run: small sizes; the throughput targets are judged on a full run.)")
    return out


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, seconds")
    ap.add_argument("--yakk", default=os.environ.get("YAKK_BIN", os.path.join(REPO, "target/release/yakk")))
    ap.add_argument("--dumbpipe", default=shutil.which("dumbpipe") or os.path.join(HERE, "out/tools/bin/dumbpipe"))
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--netem", default=os.environ.get(
        "YKB_NETEM", os.path.join(HERE, "netem/target/release/ykb-netem")),
        help="the user-space link emulator (bench/netem), used when the kernel has no netem")
    ap.add_argument("--only", default="forward,files,wan", help="comma-separated parts to run")
    ap.add_argument("--tools", default="direct,yakk,ssh,ssh-aes,socat,dumbpipe")
    ap.add_argument("--size-mib", type=int, help="bytes per throughput cell, in MiB")
    ap.add_argument("--wan-seconds", type=float)
    ap.add_argument("--rtts", default="20,50,100")
    ap.add_argument("--losses", default="0,0.5")
    ap.add_argument("--many", type=int, help="concurrent connections through yakk (0: skip)")
    ap.add_argument("--no-wan", action="store_true")
    ap.add_argument("--yakk-env", action="append", default=[], metavar="K=V",
                    help="environment for the yakk processes (repeatable)")
    ap.add_argument("--wan-yakk", default="default,lanes1",
                    help="yakk variants on the WAN: default (its defaults: --lanes auto) and "
                         "lanesN (every stream striped over N peer connections, --lanes N)")
    ap.add_argument("--wan-parallel", default="", metavar="K,K",
                    help="also run K separate yakk tunnels at once on each WAN cell, one stream "
                         "each, and report their sum (a diagnostic of striping; not in the report "
                         "table)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every yakk cell that ran produced its figures (CI smoke)")
    ap.add_argument("--publish", action="store_true",
                    help="also copy the report to bench/REPORT.md and its charts to bench/img/")
    cfg = ap.parse_args()
    cfg.size = (cfg.size_mib or (32 if cfg.quick else 1024)) << 20
    cfg.wan_seconds = cfg.wan_seconds or (3 if cfg.quick else 15)
    cfg.rtts = [int(x) for x in cfg.rtts.split(",") if x]
    cfg.losses = [float(x) for x in cfg.losses.split(",") if x]
    cfg.wan_parallel = [int(x) for x in cfg.wan_parallel.split(",") if x]
    for v in cfg.wan_yakk.split(","):
        if v and v != "default" and not (v.startswith("lanes") and v[len("lanes"):].isdigit()):
            sys.exit(f"--wan-yakk: unknown variant {v!r} (default, lanesN)")
    cfg.many = cfg.many if cfg.many is not None else (100 if cfg.quick else 1000)
    cfg.rtt_count = 200 if cfg.quick else 1000
    cfg.xfer_timeout = 60 if cfg.quick else 240
    cfg.setup_timeout = 30
    cfg.proc_timeout = 600
    cfg.yakk_env = dict(kv.split("=", 1) for kv in cfg.yakk_env)
    parts = set(cfg.only.split(","))
    tools = cfg.tools.split(",")
    if not os.access(cfg.yakk, os.X_OK):
        sys.exit(f"no yakk binary at {cfg.yakk}: build it with "
                 "`cargo build --release -p yakk` or pass --yakk")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(cfg.out, exist_ok=True)
    global LOG_DIR
    LOG_DIR = os.path.join(cfg.out, "logs")
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    os.makedirs(LOG_DIR)
    cfg.tmp = tempfile.mkdtemp(prefix="ykb-run-")
    res = {"started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "machine": f"{os.cpu_count()} CPUs, {os.uname().release}",
           "yakk_version": subprocess.run([cfg.yakk, "--version"], capture_output=True, text=True,
                                          timeout=10).stdout.strip().splitlines()[0],
           "quick": cfg.quick, "size": cfg.size, "load_start": os.getloadavg()[0]}
    is_root = os.geteuid() == 0
    deadline = time.monotonic() + (300 if cfg.quick else 1800)

    def over():
        if time.monotonic() > deadline:
            log("overall time budget spent; skipping the rest")
            return True
        return False

    try:
        if is_root:
            ns_teardown()
        if "forward" in parts:
            target = loadgen("target", ["target"], timeout=cfg.proc_timeout * 4)
            tport = target.json(10)["listening"]
            res["forward"] = []
            makers = {"direct": lambda: Direct(cfg), "yakk": lambda: Yakk(cfg),
                      "ssh": lambda: Ssh(cfg), "ssh-aes": lambda: Ssh(cfg, "aes128-gcm@openssh.com"),
                      "socat": lambda: Socat(cfg), "dumbpipe": lambda: Dumbpipe(cfg)}
            for t in tools:
                if over():
                    break
                if t == "dumbpipe" and not os.access(cfg.dumbpipe, os.X_OK):
                    res["forward"].append({"tool": "dumbpipe", "error": "not installed (bench/setup.sh)"})
                    continue
                if t in ("ssh", "ssh-aes") and not shutil.which("ssh"):
                    continue
                tun = makers[t]()
                log(f"forwarding: {tun.name}")
                try:
                    res["forward"].append(bench_forward(cfg, tun, tport))
                except Exception as e:  # noqa: BLE001
                    log(f"  {tun.name}: FAILED {e}")
                    traceback.print_exc()
                    res["forward"].append({"tool": tun.name, "error": str(e)[:300]})
                finally:
                    tun.stop()
            target.stop(signal.SIGTERM)
        if "files" in parts and not over():
            log("file transfer")
            res["files"] = bench_files(cfg)
        if "wan" in parts and not cfg.no_wan and not over():
            if is_root and shutil.which("tc"):
                log("emulated WAN")
                res["wan"] = bench_wan(cfg)
            else:
                log("WAN emulation needs root and tc (iproute2): skipped")
    finally:
        cleanup_procs()
        if is_root:
            ns_teardown()
        shutil.rmtree(cfg.tmp, ignore_errors=True)
        res["load_end"] = os.getloadavg()[0]
        with open(os.path.join(cfg.out, "results.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
    text = report(cfg, res, cfg.out)
    if cfg.publish:
        img = os.path.join(HERE, "img")
        os.makedirs(img, exist_ok=True)
        for fn in os.listdir(cfg.out):
            if fn.endswith(".svg"):
                shutil.copy(os.path.join(cfg.out, fn), img)
                text = text.replace(f"]({fn})", f"](img/{fn})")
        with open(os.path.join(HERE, "REPORT.md"), "w") as f:
            f.write(text)
    print(text)
    if cfg.check:
        bad = check_yakk_cells(res)
        if bad:
            sys.exit("bench --check: " + "; ".join(bad))


def check_yakk_cells(res):
    """What went wrong in the yakk cells: a cell without its figures, or a failed transfer."""
    bad = []
    for r in res.get("forward", []):
        if not r["tool"].startswith("yakk"):
            continue
        if r.get("error"):
            bad.append(f"{r['tool']}: {r['error']}")
            continue
        for key in ("setup_ms", "rtt_p50_ms", "one_mbps", "sixteen_mbps"):
            if r.get(key) is None:
                bad.append(f"{r['tool']}: no {key}: {r.get('one_error') or r.get('sixteen_error') or ''}")
        many = r.get("many")
        if many and many.get("ok") != many.get("conns"):
            bad.append(f"{r['tool']}: {many.get('ok')}/{many.get('conns')} concurrent connections")
    for r in res.get("files", []):
        if r["tool"].startswith("yakk") and not r.get("ok"):
            bad.append(f"{r['tool']}: {r.get('error')}")
    return bad


if __name__ == "__main__":
    main()
