// Where the page comes from: `yakk signal` on 127.0.0.2 and on localhost, and an owner's
// embedded signalling server at the link `yakk filesend --qr` shows, on the machine's LAN
// address (here the test namespace's 10.222.0.1): plain HTTP there is not a secure context
// (no File System Access API), the case of a phone scanning the QR code. Chromium counts all of
// 127.0.0.0/8 as potentially trustworthy (the Secure Contexts spec), so 127.0.0.2 is a secure
// context like localhost.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { browser, join, makeFile, saveDownloads, sha256, signal, tempDir, waitFor, yakk, yakkBin } from "./harness.mjs";

async function receiveAt(t, origin, opts = {}) {
  const dir = tempDir();
  const src = makeFile(dir, "here.bin", 2 << 20, 5);
  const server = opts.server ?? null;
  const sender = opts.sender ?? yakk(["filesend", "--json", "-s", server.ws, src]);
  const b = await browser();
  t.after(async () => {
    sender.kill();
    server?.proc.kill();
    await b.close();
  });
  const ev = await sender.event("code");
  const url = typeof origin === "function" ? origin(ev) : `${origin}/#${ev.code}`;
  const page = await b.page();
  await page.goto(url);
  await waitFor(page, "offer", 30000);
  const secure = await page.evaluate(() => window.isSecureContext);
  const disk = await page.getByTestId("accept-disk").isVisible();
  await page.getByTestId("accept").click();
  await waitFor(page, "done", 60000);
  const saved = await saveDownloads(page, join(dir, "out"));
  assert.equal(await sha256(saved["here.bin"]), await sha256(opts.src ?? src));
  assert.equal((await sender.exited).code, 0, sender.stderr);
  assert.equal(b.cspViolations().length, 0, b.cspViolations().join("\n"));
  return { secure, disk, page };
}

test("the page on 127.0.0.2 (a loopback address other than localhost)", async (t) => {
  const server = await signal("127.0.0.2");
  const r = await receiveAt(t, server.origin, { server });
  assert.equal(r.secure, true, "Chromium trusts all of 127.0.0.0/8");
});

test("the page on localhost: a secure context, which may also save to disk", async (t) => {
  const server = await signal("127.0.0.1");
  const r = await receiveAt(t, `http://localhost:${server.port}`, { server });
  assert.equal(r.secure, true);
  assert.equal(r.disk, true, "the File System Access API is offered on localhost");
});

test("the owner's embedded server serves the page at the link of its code", async (t) => {
  const dir = tempDir();
  const src = makeFile(dir, "here.bin", 2 << 20, 5);
  // No -s: the owner runs the signalling server in its own process and prints the page's link.
  const sender = yakk(["filesend", "--json", src]);
  const r = await receiveAt(t, (ev) => {
    assert.match(ev.url, /^http:\/\/[0-9.]+:[0-9]+\/#[0-9]+-[a-z]+-[a-z]+$/);
    assert.ok(ev.code.startsWith(ev.url.split("#")[1]));
    return ev.url;
  }, { sender, src });
  assert.equal(r.secure, false, "a LAN address over plain HTTP");
  assert.equal(r.disk, false, "no save-to-disk offer outside a secure context");
});

test("filesend --qr draws the page's link", () => {
  const dir = tempDir();
  const src = makeFile(dir, "qr.bin", 10);
  const out = spawnSync(yakkBin(), ["filesend", "--qr", src], { timeout: 3000, encoding: "utf8", killSignal: "SIGKILL" });
  assert.match(out.stderr, /Or open in a browser:\n +http:\/\/[0-9.]+:[0-9]+\/#[0-9]+-[a-z]+-[a-z]+\n/);
  assert.match(out.stderr, /[▀▄█]{10}/);
});
