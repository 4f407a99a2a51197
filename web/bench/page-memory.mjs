// The page's memory while it receives a large file from `yakk filesend` (issue: "the page's
// memory stays bounded while receiving a 1 GiB file"). A benchmark, not part of the test suite:
// it moves YAKK_PAGE_MIB MiB (default 1024) once per way of keeping the file, and prints what it
// measured.
//
//   cd web && YAKK_BIN=../target/release/yakk sh test/browser/run.sh bench/page-memory.mjs
//   YAKK_PAGE_MIB=256 YAKK_PAGE_MODES=disk ...   # smaller, or one way only (disk, blob)
//
// Sampled every 250 ms while the file arrives:
// - the page's JS heap (DevTools' Performance.getMetrics);
// - the resident memory (VmRSS) of the renderer process that runs the page, and of every
//   Chromium process together (the browser process keeps Blob data; the network and GPU
//   processes are counted too).
// At the end: the bytes Chromium's blob storage spilled into the profile (Blob way).
//
// Ways: `disk` is "Accept and save to disk as it arrives" (File System Access API; a file of the
// origin-private file system stands in for the save dialog's choice, as in disk.test.mjs), and
// `blob` is "Accept" (kept in the browser as Blob parts, offered as a download once verified).

import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { browser, makeFile, signal, tempDir, standInSaveDialog, waitFor, yakk } from "../test/browser/harness.mjs";

const MIB = Number(process.env.YAKK_PAGE_MIB || 1024);
const MODES = (process.env.YAKK_PAGE_MODES || "disk,blob").split(",").filter(Boolean);
const SAMPLE_MS = 250;
/** The saved file is compared with the source slice by slice (SHA-256 of each), so that the
 * check itself never holds more than a slice in the page. */
const SLICE = 64 << 20;

/** Pid → [parent pid, command line, VmRSS bytes] of every process we may read. */
function processes() {
  const out = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const status = readFileSync(`/proc/${d}/status`, "utf8");
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
      const cmd = readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " ");
      out.set(Number(d), [ppid, cmd, rss]);
    } catch {
      // The process ended while we looked.
    }
  }
  return out;
}

/** Resident memory of this process's Chromium descendants: all of them, and the renderers'. */
function chromiumRss() {
  const procs = processes();
  const ours = (pid) => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
      if (p === process.pid) return true;
      p = procs.get(p)?.[0] ?? 0;
    }
    return false;
  };
  let all = 0;
  let renderer = 0;
  let profile = null;
  for (const [pid, [, cmd, rss]] of procs) {
    if (!/chrom/i.test(cmd) || !ours(pid)) continue;
    all += rss;
    if (cmd.includes("--type=renderer")) renderer += rss;
    profile ??= /--user-data-dir=(\S+)/.exec(cmd)?.[1] ?? null;
  }
  return { all, renderer, profile };
}

function duBytes(dir) {
  let n = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += duBytes(p);
    else if (e.isFile()) n += statSync(p).size;
  }
  return n;
}

/** Samples until stopped; returns the peaks. */
async function sampler(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  const peak = { heap: 0, renderer: 0, all: 0 };
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const { metrics } = await cdp.send("Performance.getMetrics");
      peak.heap = Math.max(peak.heap, metrics.find((m) => m.name === "JSHeapUsedSize")?.value ?? 0);
      const rss = chromiumRss();
      peak.renderer = Math.max(peak.renderer, rss.renderer);
      peak.all = Math.max(peak.all, rss.all);
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
    }
  })();
  return async () => {
    stop = true;
    await loop;
    return peak;
  };
}

/** The source's size, then the SHA-256 of each SLICE of it, as the page computes them. */
function sliceDigests(path) {
  const fd = openSync(path, "r");
  const buf = Buffer.alloc(SLICE);
  const out = [statSync(path).size];
  for (;;) {
    let n = 0;
    while (n < SLICE) {
      const k = readSync(fd, buf, n, SLICE - n, null);
      if (k === 0) break;
      n += k;
    }
    if (n === 0) break;
    out.push(createHash("sha256").update(buf.subarray(0, n)).digest("hex"));
    if (n < SLICE) break;
  }
  closeSync(fd);
  return out;
}

const mib = (n) => (n / 1048576).toFixed(1);

for (const mode of MODES) {
  test(`${MIB} MiB from the CLI, kept by way of "${mode}": the page's memory`, { timeout: 1_800_000 }, async (t) => {
    assert.ok(mode === "disk" || mode === "blob", `YAKK_PAGE_MODES: no way "${mode}"`);
    const dir = tempDir();
    const size = MIB * 1048576;
    const src = makeFile(dir, "large.bin", size, 91);
    assert.equal(statSync(src).size, size);
    const server = await signal();
    const sender = yakk(["filesend", "--json", "-s", server.ws, src]);
    const b = await browser();
    t.after(async () => {
      sender.kill();
      server.proc.kill();
      await b.close();
    });
    const page = await b.page();
    await standInSaveDialog(page);
    const { code } = await sender.event("code");
    await page.goto(`http://localhost:${server.port}/#${code}`);
    await waitFor(page, "offer", 30000);
    const before = chromiumRss();
    const peaks = await sampler(page);
    const started = Date.now();
    await page.getByTestId(mode === "disk" ? "accept-disk" : "accept").click();
    await waitFor(page, "done", 1_700_000);
    const seconds = (Date.now() - started) / 1000;
    const peak = await peaks();
    const { profile } = chromiumRss();
    const spilled = profile ? duBytes(join(profile, "Default", "blob_storage")) : NaN;
    if (mode === "disk") {
      // The page saved the file, not kept it: compare what is on disk with the source.
      assert.equal(await page.getByTestId("download").count(), 0, "saved to disk, not kept in the page");
      const digests = await page.evaluate(async (slice) => {
        const f = await (await (await navigator.storage.getDirectory()).getFileHandle("large.bin")).getFile();
        const out = [f.size];
        for (let at = 0; at < f.size; at += slice) {
          const h = await crypto.subtle.digest("SHA-256", await f.slice(at, at + slice).arrayBuffer());
          out.push([...new Uint8Array(h)].map((x) => x.toString(16).padStart(2, "0")).join(""));
        }
        return out;
      }, SLICE);
      assert.deepEqual(digests, sliceDigests(src));
    } else {
      assert.equal(await page.getByTestId("download").count(), 1, "one verified download offered");
    }
    assert.equal((await sender.exited).code, 0, sender.stderr);
    console.log(
      `page memory, ${MIB} MiB, ${mode}: ${(size / seconds / 1e6).toFixed(1)} MB/s (${seconds.toFixed(1)} s); ` +
        `peak JS heap ${mib(peak.heap)} MiB; renderer RSS ${mib(before.renderer)} -> peak ${mib(peak.renderer)} MiB; ` +
        `all Chromium processes ${mib(before.all)} -> peak ${mib(peak.all)} MiB; ` +
        `blob storage on disk ${Number.isNaN(spilled) ? "?" : mib(spilled)} MiB`,
    );
  });
}
