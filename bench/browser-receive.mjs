// CLI → browser, measured: `yakk filesend` offers a file of BENCH_MIB MiB (default 100) through
// `yakk signal`, a headless Chromium page accepts it, and this prints the transfer's rate, the
// selected path's round trip at connect, the UDP datagrams received and dropped for a full
// socket (`RcvbufErrors`) in the test's network namespace, and the CPU seconds of each process
// during the transfer. With BENCH_JS_PROFILE=1 it also prints where the page's main thread spent
// its time (the profile is written to BENCH_OUT, default /tmp/page.cpuprofile). With
// BENCH_PAGES=N, N senders and N pages of one browser transfer at once and the rate is their sum
// (what several peer connections, as lanes would be, get together).
//
//   cd web && YAKK_BIN=../target/release/yakk sh test/browser/run.sh ../bench/browser-receive.mjs
//
// A benchmark, not a test: it asserts only that the transfer finished.
import { test } from "node:test";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { cliSender, makeFile, tempDir, waitFor, yakk } from "../web/test/browser/harness.mjs";

/** CPU ticks (1/100 s) of every process, by pid, with its name. */
function cpuByProcess() {
  const out = new Map();
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const type = /--type=([\w-]+)/.exec(readFileSync(`/proc/${pid}/cmdline`, "utf8"))?.[1];
      const service = /--utility-sub-type=([\w.]+)/.exec(readFileSync(`/proc/${pid}/cmdline`, "utf8"))?.[1];
      out.set(pid, { name: [name, type, service].filter(Boolean).join(" "), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // The process ended meanwhile.
    }
  }
  return out;
}

/** The machine's busy and total CPU ticks over all cores (`/proc/stat`). */
function machineTicks() {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], total };
}

/** The namespace's UDP counters (`/proc/net/snmp`). */
function udpCounters() {
  const lines = readFileSync("/proc/net/snmp", "utf8")
    .split("\n")
    .filter((l) => l.startsWith("Udp:"));
  const names = lines[0].split(" ");
  const values = lines[1].split(" ");
  return Object.fromEntries(names.map((n, i) => [n, Number(values[i])]));
}

const size = Number(process.env.BENCH_MIB ?? 100) << 20;
const pages = Number(process.env.BENCH_PAGES ?? 1);
test("CLI → browser, measured", { timeout: 900_000 }, async (t) => {
  const dir = tempDir();
  const src = makeFile(dir, "payload.bin", size, size);
  const { server, sender, b } = await cliSender(t, [src]);
  const senders = [sender];
  for (let i = 1; i < pages; i++) {
    const more = yakk(["filesend", "--json", "-s", server.ws, src]);
    t.after(() => more.kill());
    senders.push(more);
  }
  const tabs = [];
  for (const s of senders) {
    const { code } = await s.event("code");
    const page = tabs.length === 0 ? await b.page() : await b.context.newPage();
    await page.goto(`${server.origin}/#${code}`);
    await waitFor(page, "offer", 30000);
    tabs.push(page);
  }
  const page = tabs[0];
  const cdp = await page.context().newCDPSession(page);
  const profiling = process.env.BENCH_JS_PROFILE === "1";
  if (profiling) {
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: 500 });
    await cdp.send("Profiler.start");
  }
  const u0 = udpCounters();
  const before = cpuByProcess();
  const m0 = machineTicks();
  const t0 = Date.now();
  await Promise.all(tabs.map((p) => p.getByTestId("accept").click()));
  const ends = await Promise.all(tabs.map((p) => waitFor(p, "done", 600000).then(() => Date.now())));
  const after = cpuByProcess();
  const m1 = machineTicks();
  const u1 = udpCounters();
  const conn = await sender.event("connected").catch(() => null);
  console.log(`round trip at connect: ${conn?.rtt_ms?.toFixed(2)} ms`);
  const secs = (Math.max(...ends) - t0) / 1000;
  if (pages > 1) console.log(`each page: ${ends.map((e) => ((e - t0) / 1000).toFixed(2)).join(", ")} s`);
  console.log(`machine busy ${((100 * (m1.busy - m0.busy)) / (m1.total - m0.total)).toFixed(0)} % of ${availableParallelism()} cores`);
  console.log(`transfer ${secs.toFixed(2)} s, ${((pages * size) / 1e6 / secs).toFixed(1)} MB/s${pages > 1 ? ` (${pages} pages together)` : ""}, udp in ${u1.InDatagrams - u0.InDatagrams}, RcvbufErrors ${u1.RcvbufErrors - u0.RcvbufErrors}`);
  const rows = [];
  for (const [pid, a] of after) {
    const d = a.ticks - (before.get(pid)?.ticks ?? 0);
    if (d > 5) rows.push([d / 100, a.name, pid]);
  }
  rows.sort((x, y) => y[0] - x[0]);
  for (const r of rows.slice(0, 12)) console.log(`${r[0].toFixed(2)} s  ${r[1]} (${r[2]})`);
  if (profiling) {
    const { profile } = await cdp.send("Profiler.stop");
    writeFileSync(process.env.BENCH_OUT ?? "/tmp/page.cpuprofile", JSON.stringify(profile));
    const self = new Map();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const dt = profile.timeDeltas;
    profile.samples.forEach((id, i) => {
      const n = byId.get(id);
      const key = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber}`;
      self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0));
    });
    const total = [...self.values()].reduce((a, b) => a + b, 0);
    const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25);
    console.log(`page main thread: ${(total / 1e6).toFixed(2)} s sampled`);
    for (const [k, v] of top) console.log(`${(v / 1e3).toFixed(0).padStart(7)} ms ${((100 * v) / total).toFixed(1).padStart(5)} %  ${k}`);
  }
});
