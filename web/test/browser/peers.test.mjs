// Browser ↔ browser through `yakk signal` (one page opens the room, the other opens its link),
// and folders both ways between the CLI and the page.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, statSync } from "node:fs";
import { browser, cliSender, join, makeFile, saveDownloads, screenshot, sha256, signal, tempDir, waitFor, yakk } from "./harness.mjs";

test("browser → browser, 20 MiB", { timeout: 300_000 }, async (t) => {
  const dir = tempDir();
  const src = makeFile(dir, "between-browsers.bin", 20 << 20, 11);
  const server = await signal();
  const a = await browser();
  const b = await browser();
  t.after(async () => {
    server.proc.kill();
    await a.close();
    await b.close();
  });
  const sender = await a.page();
  await sender.goto(`${server.origin}/`);
  await sender.getByTestId("pick").setInputFiles(src);
  await waitFor(sender, "code", 30000);
  const link = await sender.getByTestId("link").getAttribute("href");
  const receiver = await b.page();
  await receiver.goto(link);
  await waitFor(receiver, "offer", 30000);
  const started = Date.now();
  await receiver.getByTestId("accept").click();
  await waitFor(receiver, "done", 240000);
  await waitFor(sender, "done", 30000);
  const secs = (Date.now() - started) / 1000;
  const saved = await saveDownloads(receiver, join(dir, "out"));
  assert.equal(await sha256(saved["between-browsers.bin"]), await sha256(src));
  console.log(`browser → browser 20 MiB: ${secs.toFixed(2)} s (${((20 << 20) / 1e6 / secs).toFixed(1)} MB/s)`);
  assert.equal(a.cspViolations().length + b.cspViolations().length, 0);
});

function tree(dir) {
  makeFile(dir, "album/a.bin", 300_000, 21);
  makeFile(dir, "album/deeper/b.bin", 1_500_000, 22);
  makeFile(dir, "album/deeper/empty.txt", 0, 23);
  mkdirSync(join(dir, "album", "nothing-here"), { recursive: true });
  return join(dir, "album");
}

test("a folder, CLI → browser: one download per file", async (t) => {
  const dir = tempDir();
  const folder = tree(dir);
  const { server, sender, b } = await cliSender(t, [folder]);
  const { code } = await sender.event("code");
  const page = await b.page();
  await page.goto(`${server.origin}/#${code}`);
  const offer = await waitFor(page, "offer", 30000);
  const listed = await offer.textContent();
  for (const name of ["album/a.bin", "album/deeper/b.bin", "album/deeper/empty.txt", "album/nothing-here/"]) assert.ok(listed.includes(name), `${name} in ${listed}`);
  await screenshot(page, "offer-folder");
  await page.getByTestId("accept").click();
  await waitFor(page, "done", 60000);
  await screenshot(page, "done-folder");
  const saved = await saveDownloads(page, join(dir, "out"));
  assert.deepEqual(Object.keys(saved).sort(), ["album/a.bin", "album/deeper/b.bin", "album/deeper/empty.txt"]);
  for (const [name, path] of Object.entries(saved)) assert.equal(await sha256(path), await sha256(join(dir, name)), name);
  assert.equal((await sender.exited).code, 0, sender.stderr);
});

test("a folder, browser → CLI: the tree arrives as it was", async (t) => {
  const dir = tempDir();
  const folder = tree(dir);
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
  await page.getByTestId("pick-folder").setInputFiles(folder);
  await waitFor(page, "code", 30000);
  const code = (await page.getByTestId("code-text").textContent()).trim();
  const out = join(dir, "out");
  receiver = yakk(["filereceive", "--json", "--yes", "-s", server.ws, "-o", out], { env: { YAKK_CODE: code } });
  await waitFor(page, "done", 60000);
  assert.equal((await receiver.exited).code, 0, receiver.stderr);
  for (const name of ["album/a.bin", "album/deeper/b.bin", "album/deeper/empty.txt"]) {
    assert.equal(await sha256(join(out, name)), await sha256(join(dir, name)), name);
  }
  // A file input lists files only: an empty folder cannot be picked (dropping one sends it).
  assert.ok(statSync(join(out, "album", "deeper")).isDirectory());
  assert.deepEqual(readdirSync(join(out, "album")).sort(), ["a.bin", "deeper"]);
});

test("standard input (yakk filesend -), size unknown until its end", async (t) => {
  const dir = tempDir();
  const src = makeFile(dir, "piped.bin", 3 << 20, 31);
  const { server, sender, b } = await cliSender(t, ["--name", "piped.bin", "-"]);
  const { readFileSync } = await import("node:fs");
  sender.child.stdin.end(readFileSync(src));
  const { code } = await sender.event("code");
  const page = await b.page();
  await page.goto(`${server.origin}/#${code}`);
  const offer = await waitFor(page, "offer", 30000);
  assert.match(await offer.textContent(), /size unknown/);
  await page.getByTestId("accept").click();
  await waitFor(page, "done", 60000);
  const saved = await saveDownloads(page, join(dir, "out"));
  assert.equal(await sha256(saved["piped.bin"]), await sha256(src));
  assert.equal((await sender.exited).code, 0, sender.stderr);
});
