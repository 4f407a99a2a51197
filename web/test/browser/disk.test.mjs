// Saving to disk as data arrives (File System Access API, secure contexts): the page writes
// each chunk to a FileSystemWritableFileStream, so its memory stays bounded whatever the
// size. A native save dialog cannot be driven headless: the test stands in for the person's
// choice with a file of the origin-private file system (a real FileSystemFileHandle), then
// reads it back and compares hashes. The page's JS heap is sampled during the transfer.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browser, cliSender, makeFile, sha256, signal, tempDir, standInSaveDialog, waitFor, yakk } from "./harness.mjs";

async function heapSampler(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  let max = 0;
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const { metrics } = await cdp.send("Performance.getMetrics");
      const used = metrics.find((m) => m.name === "JSHeapUsedSize")?.value ?? 0;
      max = Math.max(max, used);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return async () => {
    stop = true;
    await loop;
    return max;
  };
}

async function receive(t, size, disk) {
  const dir = tempDir();
  const src = makeFile(dir, "large.bin", size, 77);
  const { server, sender, b } = await cliSender(t, [src]);
  const page = await b.page();
  await standInSaveDialog(page);
  const { code } = await sender.event("code");
  await page.goto(`http://localhost:${server.port}/#${code}`);
  await waitFor(page, "offer", 30000);
  const heap = await heapSampler(page);
  await page.getByTestId(disk ? "accept-disk" : "accept").click();
  await waitFor(page, "done", 600000);
  const maxHeap = await heap();
  if (disk) {
    assert.equal(await page.getByTestId("download").count(), 0, "saved to disk, not kept in the page");
    const digest = await page.evaluate(async () => {
      const f = await (await (await navigator.storage.getDirectory()).getFileHandle("large.bin")).getFile();
      const d = await crypto.subtle.digest("SHA-256", await f.arrayBuffer());
      return [...new Uint8Array(d)].map((x) => x.toString(16).padStart(2, "0")).join("");
    });
    assert.equal(digest, await sha256(src));
  }
  assert.equal((await sender.exited).code, 0, sender.stderr);
  return maxHeap;
}

test("64 MiB saved to disk as it arrives: the page's heap stays small", { timeout: 600_000 }, async (t) => {
  const heap = await receive(t, 64 << 20, true);
  console.log(`save to disk, 64 MiB: peak JS heap ${(heap / 1048576).toFixed(1)} MiB`);
  assert.ok(heap < 48 << 20, `peak JS heap ${heap}`);
});

test("64 MiB kept in the page (Blob parts): the JS heap for comparison", { timeout: 600_000 }, async (t) => {
  const heap = await receive(t, 64 << 20, false);
  console.log(`kept in the page, 64 MiB: peak JS heap ${(heap / 1048576).toFixed(1)} MiB`);
});
