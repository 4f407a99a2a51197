// A signalling proxy for the tests: forwards HTTP and WebSockets to a `yakk signal`, and can
// tamper with what the server relays to the page (one sealed message, one base64 character
// changed: still valid base64 of the same length, so only the AEAD tag can tell).

import http from "node:http";
import net from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";

/** Starts the proxy on 127.0.0.1; `tamper`: alter the first YAKK2_SEALED message to clients. */
export async function proxy(upstream, { tamper = false, staticDir = null } = {}) {
  const state = { tampered: 0 };
  const server = http.createServer((req, res) => {
    if (staticDir && !req.url.startsWith("/ws")) {
      // Development: the page from a folder (web/dist) in front of a yakk built without it.
      const name = req.url === "/" ? "index.html" : req.url.slice(1).split("?")[0];
      const types = { html: "text/html", js: "text/javascript", css: "text/css" };
      try {
        const body = readFileSync(join(staticDir, name.replace(/\.\./g, "")));
        res.writeHead(200, { "content-type": types[name.split(".").pop()] || "application/octet-stream" });
        res.end(body);
      } catch {
        res.writeHead(404);
        res.end();
      }
      return;
    }
    const up = http.request(
      { host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  // Upgraded sockets are no longer the HTTP server's: `close` ends them itself, or it would
  // wait for the page to close its WebSocket.
  const upgraded = new Set();
  server.on("upgrade", (req, socket, head) => {
    const up = net.connect(upstream.port, upstream.host, () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(raw + "\r\n");
      if (head.length) up.write(head);
      socket.pipe(up);
    });
    for (const s of [socket, up]) {
      upgraded.add(s);
      s.on("close", () => upgraded.delete(s));
    }
    up.on("error", () => socket.destroy());
    socket.on("error", () => up.destroy());
    // Server → client: the 101 response, then frames (unmasked), parsed to tamper with.
    let buf = Buffer.alloc(0);
    let headersDone = false;
    up.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (!headersDone) {
        const i = buf.indexOf("\r\n\r\n");
        if (i < 0) return;
        socket.write(buf.subarray(0, i + 4));
        buf = buf.subarray(i + 4);
        headersDone = true;
      }
      for (;;) {
        if (buf.length < 2) return;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          off = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          off = 10;
        }
        if (buf.length < off + len) return;
        const frame = Buffer.from(buf.subarray(0, off + len));
        buf = buf.subarray(off + len);
        if (tamper && state.tampered === 0) {
          const payload = frame.subarray(off);
          const text = payload.toString("latin1");
          if (text.includes('"Msg_type":"YAKK2_SEALED"')) {
            const at = text.indexOf('"Payload":"') + '"Payload":"'.length + 20;
            payload[at] = payload[at] === 0x41 ? 0x42 : 0x41; // 'A' <-> 'B'
            state.tampered++;
          }
        }
        socket.write(frame);
      }
    });
    up.on("end", () => socket.end());
    socket.on("end", () => up.end());
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    state,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((r) => {
        server.close(() => r());
        server.closeAllConnections?.();
        for (const s of upgraded) s.destroy();
      }),
  };
}
