// Browser → CLI: the page opens a room (code, link and QR), the person picks a file, and
// `yakk filereceive` with the page's code saves it with the source's SHA-256.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browser, join, makeFile, screenshot, sha256, signal, tempDir, waitFor, yakk } from "./harness.mjs";

async function browserToCli(t, size, { shots = false } = {}) {
  const dir = tempDir();
  const src = makeFile(dir, "from-browser.bin", size, size + 7);
  const server = await signal();
  const b = await browser();
  let receiver = null;
  t.after(async () => {
    receiver?.kill();
    server.proc.kill();
    await b.close();
  });
  const page = await b.page();
  await page.goto(`${server.origin}/`);
  await waitFor(page, "pick", 10000).catch(() => {});
  if (shots) await screenshot(page, "landing");
  await page.getByTestId("pick").setInputFiles(src);
  await waitFor(page, "code", 30000);
  const code = (await page.getByTestId("code-text").textContent()).trim();
  assert.match(code, /^[0-9]+-[a-z]+-[a-z]+$/);
  const link = await page.getByTestId("link").getAttribute("href");
  assert.equal(link, `${server.origin}/#${code}`);
  if (shots) await screenshot(page, "code");
  const out = join(dir, "out");
  receiver = yakk(["filereceive", "--json", "--yes", "-s", server.ws, "-o", out], { env: { YAKK_CODE: code } });
  const started = Date.now();
  await receiver.event("start", 60000);
  await waitFor(page, "done", 600000);
  const { code: exit } = await receiver.exited;
  assert.equal(exit, 0, receiver.stderr);
  const secs = (Date.now() - started) / 1000;
  if (shots) await screenshot(page, "sent");
  assert.equal(await sha256(join(out, "from-browser.bin")), await sha256(src));
  console.log(`browser → CLI ${size / 1048576} MiB: ${secs.toFixed(2)} s (${(size / 1e6 / secs).toFixed(1)} MB/s)`);
}

test("browser → CLI, 1 MiB", async (t) => {
  await browserToCli(t, 1 << 20);
});

test("browser → CLI, 100 MiB", { timeout: 900_000 }, async (t) => {
  await browserToCli(t, 100 << 20, { shots: true });
});
