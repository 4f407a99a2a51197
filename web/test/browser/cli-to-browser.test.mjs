// CLI → browser: `yakk filesend` offers a file through `yakk signal`, the page (the code in its
// URL fragment) accepts it, and the saved download has the source's SHA-256.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browser, cliSender, join, makeFile, saveDownloads, screenshot, sha256, signal, tempDir, waitFor, yakk } from "./harness.mjs";

async function cliToBrowser(t, size, { shots = false } = {}) {
  const dir = tempDir();
  const src = makeFile(dir, "payload.bin", size, size);
  const { server, sender, b } = await cliSender(t, [src]);
  const { code } = await sender.event("code");
  const page = await b.page();
  const started = Date.now();
  await page.goto(`${server.origin}/#${code}`);
  // The code leaves the address bar at once.
  assert.equal(new URL(page.url()).hash, "");
  await waitFor(page, "offer", 30000);
  const offered = Date.now();
  assert.match(await page.getByTestId("offer").textContent(), /payload\.bin/);
  if (shots) await screenshot(page, "offer");
  await page.getByTestId("accept").click();
  const accepted = Date.now();
  if (shots) {
    await waitFor(page, "progress", 30000).catch(() => {});
    await screenshot(page, "progress");
  }
  await waitFor(page, "done", 600000);
  const done = Date.now();
  if (shots) await screenshot(page, "done");
  const saved = await saveDownloads(page, join(dir, "out"));
  assert.equal(await sha256(saved["payload.bin"]), await sha256(src));
  const { code: exit } = await sender.exited;
  assert.equal(exit, 0, sender.stderr);
  const secs = (done - accepted) / 1000;
  console.log(
    `CLI → browser ${size / 1048576} MiB: page to offer ${offered - started} ms, transfer ${secs.toFixed(2)} s (${(size / 1e6 / secs).toFixed(1)} MB/s)`,
  );
  if (b.logs.some((l) => l.startsWith("pageerror"))) console.log(b.logs.join("\n"));
}

test("CLI → browser, 1 MiB", async (t) => {
  await cliToBrowser(t, 1 << 20);
});

test("CLI → browser, 100 MiB", { timeout: 900_000 }, async (t) => {
  await cliToBrowser(t, 100 << 20, { shots: true });
});

test("CLI → CLI, 100 MiB (the baseline the browser is compared with)", { timeout: 600_000 }, async (t) => {
  const dir = tempDir();
  const size = 100 << 20;
  const src = makeFile(dir, "payload.bin", size, size);
  const server = await signal();
  const sender = yakk(["filesend", "--json", "-s", server.ws, src]);
  let receiver = null;
  t.after(() => {
    sender.kill();
    receiver?.kill();
    server.proc.kill();
  });
  const { code } = await sender.event("code");
  const out = join(dir, "out");
  receiver = yakk(["filereceive", "--json", "--yes", "-s", server.ws, "-o", out], { env: { YAKK_CODE: code } });
  const done = await receiver.event("done", 300000);
  assert.equal((await receiver.exited).code, 0, receiver.stderr);
  assert.equal(await sha256(join(out, "payload.bin")), await sha256(src));
  console.log(`CLI → CLI 100 MiB: transfer ${done.elapsed_secs.toFixed(2)} s (${(size / 1e6 / done.elapsed_secs).toFixed(1)} MB/s)`);
});
