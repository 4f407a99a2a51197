// A code used with the wrong command: the page joins a port-forwarding room (`yakk server`)
// as if it were a file sender's. What comes back is not the file protocol, and the page says so
// and asks whether the code was made for sending files.

import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { browser, signal, waitFor, yakk } from "./harness.mjs";

test("the code of a port-forwarding room: the page says the other side does not speak the file protocol", async (t) => {
  // The shared service greets whoever connects, as an SSH or mail server does, and waits.
  const conns = [];
  const service = net.createServer((c) => {
    conns.push(c);
    c.write("SSH-2.0-not-a-file-sender\r\n");
  });
  await new Promise((r) => service.listen(0, "127.0.0.1", r));
  const server = await signal();
  const owner = yakk(["server", "-p", String(service.address().port), "--json", "-s", server.ws]);
  const b = await browser();
  t.after(async () => {
    owner.kill();
    server.proc.kill();
    service.close();
    for (const c of conns) c.destroy();
    await b.close();
  });
  const { code } = await owner.event("code");
  const page = await b.page();
  await page.goto(`${server.origin}/#${code}`);
  const text = await (await waitFor(page, "error", 30000)).textContent();
  assert.match(text, /does not speak yakk's file protocol/);
  assert.match(text, /made for sending files/);
});
