// The bench's recorded feed (`--feed replay`): the hub's /api/live stream for the 500 simulated
// hosts, recorded once and then played back to the browser byte for byte at its recorded pace,
// with the load generator stopped. In a lab the browser runs on a laptop and the hub and its
// agents elsewhere; on this 2-core machine the simulation otherwise takes a third of a core
// from the browser while it is measured. The page receives the same messages either way.

import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import WebSocket, { WebSocketServer } from "ws";

/**
 * Records `url` (a ws:// /api/live URL) for `seconds`: each message with its time from the
 * first. The first messages are the hub's snapshot of every host, as a new page gets them.
 */
export function record(url, seconds) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 64 << 20 });
    const msgs = [];
    let t0 = 0;
    ws.on("open", () => {
      t0 = performance.now();
      setTimeout(() => ws.close(), seconds * 1000);
    });
    ws.on("message", (data, isBinary) => {
      if (!isBinary) return reject(new Error("recording /api/live: a text message, expected binary"));
      msgs.push({ at: performance.now() - t0, data });
    });
    ws.on("error", reject);
    ws.on("close", () => (msgs.length ? resolve(msgs) : reject(new Error(`recording ${url}: no message in ${seconds} s`))));
  });
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml" };

/**
 * Serves the page: /api/live plays `recordings[path + search]` back to each connection from its
 * start (the socket closes at the end, as a hub going away would); the page's files come from
 * `dist` (the page as last built: a page change needs no hub rebuild); every other request is
 * passed to `hubUrl` (the history API). Resolves with the server's base URL and a `close`.
 */
export async function serve(hubUrl, recordings, dist) {
  const http = createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path === "/" || path.startsWith("/assets/")) {
      const file = join(dist, path === "/" ? "index.html" : normalize(path).replace(/^\/+/, ""));
      try {
        const body = await readFile(file);
        res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-cache" });
        res.end(body);
      } catch {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end(`replay: ${path} not in ${dist}`);
      }
      return;
    }
    try {
      const r = await fetch(new URL(req.url, hubUrl), {
        headers: { cookie: req.headers.cookie ?? "" },
        signal: AbortSignal.timeout(10000),
      });
      // Not content-encoding: fetch has already decompressed the body.
      const headers = {};
      for (const k of ["content-type", "cache-control", "etag"]) {
        const v = r.headers.get(k);
        if (v) headers[k] = v;
      }
      res.writeHead(r.status, headers);
      res.end(Buffer.from(await r.arrayBuffer()));
    } catch (e) {
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(`replay: ${e.message}`);
    }
  });
  const wss = new WebSocketServer({ noServer: true });
  const timers = new Set();
  http.on("upgrade", (req, socket, head) => {
    const u = new URL(req.url, "http://x");
    u.searchParams.delete("token");
    const msgs = recordings[u.pathname + u.search];
    if (!msgs) return socket.destroy();
    wss.handleUpgrade(req, socket, head, (ws) => {
      const t0 = performance.now();
      let i = 0;
      const next = () => {
        timers.delete(timer);
        if (ws.readyState !== WebSocket.OPEN) return; // the page went away
        // Every message due by now (a late timer sends what it owes at once, as TCP would).
        while (i < msgs.length && msgs[i].at <= performance.now() - t0) ws.send(msgs[i++].data, { binary: true });
        if (i >= msgs.length) return ws.close(1001, "end of the recording");
        timer = setTimeout(next, Math.max(0, msgs[i].at - (performance.now() - t0)));
        timers.add(timer);
      };
      let timer = setTimeout(next, 0);
      timers.add(timer);
    });
  });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  const { port } = http.address();
  return {
    url: (p) => `http://127.0.0.1:${port}${p}`,
    close() {
      for (const t of timers) clearTimeout(t);
      for (const c of wss.clients) c.terminate();
      wss.close();
      return new Promise((r) => http.close(r));
    },
  };
}
