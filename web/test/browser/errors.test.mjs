// What the page says when things go wrong: a wrong code (the sender burns it, the page says
// so), and a signalling proxy that tampers with a sealed message (refused, nothing sent).

import { test } from "node:test";
import assert from "node:assert/strict";
import { browser, cliSender, join, makeFile, screenshot, signal, tempDir, waitFor, yakk } from "./harness.mjs";
import { proxy } from "./proxy.mjs";

test("a wrong code burns the room, and the page says so", async (t) => {
  const dir = tempDir();
  const src = makeFile(dir, "secret.bin", 4096);
  const { server, sender, b } = await cliSender(t, [src]);
  const { room } = await sender.event("code");
  const page = await b.page();
  await page.goto(`${server.origin}/#${room}-wrong-guess`);
  const error = await waitFor(page, "error", 30000);
  const text = await error.textContent();
  assert.match(text, /wrong code/i);
  assert.match(text, /burned/i);
  await screenshot(page, "error-wrong-code");
  const { code: exit } = await sender.exited;
  assert.equal(exit, 3, sender.stderr);
  assert.ok(sender.events.some((e) => e.event === "burned"));
  // The room is gone: the right code no longer works either.
  const again = await b.context.newPage();
  const { code } = sender.events.find((e) => e.event === "code");
  await again.goto(`${server.origin}/#${code}`);
  assert.match(await (await waitFor(again, "error", 30000)).textContent(), /no such room/i);
  assert.equal(b.cspViolations().length, 0, b.cspViolations().join("\n"));
});

test("a tampering signalling proxy is caught, and nothing is sent", async (t) => {
  const dir = tempDir();
  const src = makeFile(dir, "secret.bin", 4096);
  const server = await signal();
  const px = await proxy({ host: server.host, port: server.port }, { tamper: true });
  const sender = yakk(["filesend", "--json", "-s", server.ws, src]);
  const b = await browser();
  t.after(async () => {
    sender.kill();
    server.proc.kill();
    await px.close();
    await b.close();
  });
  const { code } = await sender.event("code");
  const page = await b.page();
  await page.goto(`${px.origin}/#${code}`);
  const text = await (await waitFor(page, "error", 30000)).textContent();
  assert.equal(px.state.tampered, 1);
  assert.match(text, /tampered/i);
  await screenshot(page, "error-tampered");
  // The sender heard of it from the page's YAKK2_ABORT "sealed" (within seconds: without the
  // notice it would only give up on the peer connection, after 10 s, saying nothing of
  // tampering) and never started a transfer.
  const warning = await sender.event("warning", 5000);
  assert.match(warning.message, /tampered/i);
  assert.ok(!sender.events.some((e) => e.event === "start"));
});

test("the sender going away mid-transfer is reported, and nothing is offered to save", { timeout: 120_000 }, async (t) => {
  const dir = tempDir();
  const src = makeFile(dir, "big.bin", 400 << 20, 9);
  const { server, sender, b } = await cliSender(t, [src]);
  const { code } = await sender.event("code", 60000);
  const page = await b.page();
  await page.goto(`${server.origin}/#${code}`);
  await waitFor(page, "offer", 30000);
  await page.getByTestId("accept").click();
  await waitFor(page, "progress", 30000);
  sender.kill();
  const text = await (await waitFor(page, "error", 60000)).textContent();
  assert.match(text, /went away|closed|failed/i);
  assert.equal(await page.getByTestId("download").count(), 0);
  await screenshot(page, "error-peer-gone");
});

test("a wrong code against the page's room: the page burns it, the CLI hears it was wrong", async (t) => {
  const dir = tempDir();
  const src = makeFile(dir, "mine.bin", 4096);
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
  await page.getByTestId("pick").setInputFiles(src);
  await waitFor(page, "code", 30000);
  const code = (await page.getByTestId("code-text").textContent()).trim();
  const room = code.split("-")[0];
  receiver = yakk(["filereceive", "--json", "--yes", "-s", server.ws, "-o", join(dir, "out")], { env: { YAKK_CODE: `${room}-wrong-guess` } });
  const { code: exit } = await receiver.exited;
  assert.equal(exit, 3, receiver.stderr);
  const text = await (await waitFor(page, "error", 30000)).textContent();
  assert.match(text, /wrong code/i);
  assert.match(text, /burned/i);
  await screenshot(page, "error-burned-owner");
});
