// Shared by the browser tests: the yakk binary, `yakk signal`, `yakk filesend`/`filereceive`,
// and a headless Chromium with a fresh profile. Everything listens on loopback; run the tests
// with `npm run test:browser` (run.sh puts them in a network namespace of their own).

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../../..");

/** The yakk binary: YAKK_BIN, else the debug (then release) build in the target folder. */
export function yakkBin() {
  if (process.env.YAKK_BIN) return process.env.YAKK_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(repo, "target");
  for (const p of [join(target, "debug", "yakk"), join(target, "release", "yakk")]) if (existsSync(p)) return p;
  throw new Error("no yakk binary: build it (cargo build -p yakk) or set YAKK_BIN");
}

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** Where screenshots go when YAKK_WEB_SCREENSHOTS=1 (docs/web, shown in the README). */
export async function screenshot(page, name) {
  if (process.env.YAKK_WEB_SCREENSHOTS !== "1") return;
  const dir = join(repo, "docs", "web");
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}

export function freePort(host = "127.0.0.1") {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once("error", rej);
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const children = new Set();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Spawns a yakk command; collects stdout lines (JSON events with --json) and stderr. */
export function yakk(args, opts = {}) {
  const child = spawn(yakkBin(), args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn", ...(opts.env || {}) } });
  children.add(child);
  const events = [];
  const waiters = [];
  let stderr = "";
  let buf = "";
  child.stdout.on("data", (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let ev = null;
      try {
        ev = JSON.parse(line);
      } catch {
        ev = { event: "text", line };
      }
      events.push(ev);
      for (const w of [...waiters]) w();
    }
  });
  child.stderr.on("data", (d) => {
    stderr += d;
    if (process.env.YAKK_TEST_VERBOSE) process.stderr.write(d);
  });
  const exited = new Promise((res) => child.on("exit", (code, signal) => { children.delete(child); res({ code, signal }); for (const w of [...waiters]) w(); }));
  return {
    child,
    events,
    get stderr() {
      return stderr;
    },
    exited,
    /** The first event named `name` (waits for it). */
    async event(name, ms = 30000) {
      const until = Date.now() + ms;
      for (;;) {
        const e = events.find((x) => x.event === name);
        if (e) return e;
        if (child.exitCode !== null) throw new Error(`yakk ${args[0]} exited (${child.exitCode}) without a ${name} event: ${stderr}\n${JSON.stringify(events)}`);
        if (Date.now() > until) throw new Error(`no ${name} event from yakk ${args[0]} within ${ms} ms: ${stderr}`);
        await new Promise((r) => { waiters.push(r); setTimeout(r, 200); });
        waiters.length = 0;
      }
    },
    kill() {
      if (child.exitCode === null) child.kill("SIGKILL");
    },
  };
}

/** `yakk signal` on host:port; resolves once it answers /hello. */
export async function signal(host = "127.0.0.1") {
  const port = await freePort(host);
  const proc = yakk(["signal", "--listen", `${host}:${port}`]);
  const until = Date.now() + 15000;
  for (;;) {
    try {
      const r = await fetch(`http://${host}:${port}/hello`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > until) throw new Error(`yakk signal did not start: ${proc.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const server = { proc, host, port, origin: `http://${host}:${port}`, ws: `ws://${host}:${port}` };
  if (process.env.YAKK_WEB_DEV === "1") {
    // Development: the page from web/dist through a proxy, in front of a yakk built without it.
    const { proxy } = await import("./proxy.mjs");
    const p = await proxy({ host, port }, { staticDir: join(repo, "web", "dist") });
    server.origin = p.origin;
  }
  return server;
}

/** A file of `size` pseudo-random bytes (deterministic per seed); returns its path. */
export function makeFile(dir, name, size, seed = 1) {
  const path = join(dir, name);
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, "w");
  const block = Buffer.alloc(1 << 20);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < block.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    block.writeUInt32LE(x >>> 0, i);
  }
  let left = size;
  let n = 0;
  while (left > 0) {
    const k = Math.min(left, block.length);
    block.writeUInt32LE(n++, 0);
    writeSync(fd, block, 0, k);
    left -= k;
  }
  closeSync(fd);
  return path;
}

export function sha256(path) {
  return new Promise((res, rej) => {
    const h = createHash("sha256");
    createReadStream(path).on("data", (d) => h.update(d)).on("end", () => res(h.digest("hex"))).on("error", rej);
  });
}

/** Folders made by `tempDir`, removed when the test file's process exits. */
const tempDirs = [];
process.on("exit", () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** A new folder under the system's temporary folder, removed when the test file is done. */
export function tempDir(prefix = "yakk-web-") {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** A headless Chromium with a fresh profile; `close()` removes the profile. */
export async function browser() {
  const profile = tempDir("yakk-chromium-");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 900, height: 760 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // No multicast DNS: host candidates carry their addresses rather than `.local` names
      // announced on 224.0.0.251.
      "--disable-features=WebRtcHideLocalIpsWithMdns",
    ],
  });
  const logs = [];
  context.on("page", (p) => watchPage(p, logs));
  for (const p of context.pages()) watchPage(p, logs);
  return {
    context,
    logs,
    /** Console reports of Content-Security-Policy violations (there must be none). */
    cspViolations: () => logs.filter((l) => /Content.Security.Policy/i.test(l)),
    async page() {
      const existing = context.pages().find((p) => p.url() === "about:blank");
      return existing ?? (await context.newPage());
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

function watchPage(page, logs) {
  page.on("console", (m) => logs.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
}

/**
 * A `yakk signal`, a `yakk filesend --json -s <it> ...args` and a headless Chromium, all
 * stopped when the test `t` ends.
 */
export async function cliSender(t, args) {
  const server = await signal();
  const sender = yakk(["filesend", "--json", "-s", server.ws, ...args]);
  const b = await browser();
  t.after(async () => {
    sender.kill();
    server.proc.kill();
    await b.close();
  });
  return { server, sender, b };
}

/**
 * Stands in for the person's choice in the save dialog, which a headless browser cannot show:
 * `showSaveFilePicker` gives a file of the origin-private file system (a real
 * FileSystemFileHandle) named as suggested.
 */
export async function standInSaveDialog(page) {
  await page.addInitScript(() => {
    window.showSaveFilePicker = async (o) => (await navigator.storage.getDirectory()).getFileHandle(o.suggestedName, { create: true });
  });
}

/** Waits for one of the page's states (`data-testid` visible); fails early on the error box. */
export async function waitFor(page, testid, ms = 60000) {
  const target = page.getByTestId(testid);
  const error = page.getByTestId("error");
  const until = Date.now() + ms;
  for (;;) {
    if (await target.isVisible()) return target;
    if (testid !== "error" && (await error.isVisible())) throw new Error(`the page shows an error: ${await error.textContent()}`);
    if (Date.now() > until) throw new Error(`no ${testid} within ${ms} ms; status: ${await page.getByTestId("status").textContent()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Clicks each download link of the done state and saves the files into `dir`; returns their paths by name. */
export async function saveDownloads(page, dir) {
  const links = page.getByTestId("download");
  const n = await links.count();
  const out = {};
  for (let i = 0; i < n; i++) {
    const link = links.nth(i);
    const name = await link.getAttribute("data-name");
    const [dl] = await Promise.all([page.waitForEvent("download"), link.click()]);
    const path = join(dir, name);
    mkdirSync(dirname(path), { recursive: true });
    await dl.saveAs(path);
    out[name] = path;
  }
  return out;
}

export { writeFileSync, join };
