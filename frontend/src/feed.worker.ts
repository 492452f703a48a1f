// The live feed, off the page's main thread: this worker holds the WebSocket to /api/live,
// decodes each LiveEvent (one per binary message) and hands the page the decoded events in
// batches, at most every BATCH_MS. At 500 hosts × 1 frame/s that is four messages a second to
// the main thread instead of five hundred, and no decoding there.

import { fromBinary } from "@bufbuild/protobuf";
import { LiveEventSchema, type LiveEvent } from "./gen/gpu_pb";

export type ToPage =
  | { kind: "events"; events: LiveEvent[] }
  | { kind: "open" }
  | { kind: "closed"; retryInMs: number; everConnected: boolean }
  | { kind: "stats"; decodeMs: number; messages: number };

const BATCH_MS = 250;
const CHUNK = 16;
const post = (m: ToPage) => (self as unknown as Worker).postMessage(m);

let url = "";
let delay = 500;
let everConnected = false;
let queue: LiveEvent[] = [];
let timer: ReturnType<typeof setTimeout> | null = null;
let decodeMs = 0;
let messages = 0;

function flush() {
  timer = null;
  // In small messages: the page reads each in its own short task, so a frame can be drawn
  // between two of them instead of waiting behind one long one.
  for (let i = 0; i < queue.length; i += CHUNK) post({ kind: "events", events: queue.slice(i, i + CHUNK) });
  queue = [];
  post({ kind: "stats", decodeMs, messages });
}

function connect() {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    delay = 500;
    everConnected = true;
    post({ kind: "open" });
  };
  ws.onmessage = (m) => {
    if (!(m.data instanceof ArrayBuffer)) return;
    const t = performance.now();
    try {
      queue.push(fromBinary(LiveEventSchema, new Uint8Array(m.data)));
    } catch (e) {
      console.warn("undecodable live event", e);
    }
    decodeMs += performance.now() - t;
    messages++;
    timer ??= setTimeout(flush, BATCH_MS);
  };
  ws.onclose = () => {
    // Backoff with jitter: many pages must not knock on a restarted hub at the same instant.
    const wait = Math.round(delay * (0.75 + Math.random() * 0.5));
    delay = Math.min(delay * 2, 15000);
    post({ kind: "closed", retryInMs: wait, everConnected });
    setTimeout(connect, wait);
  };
}

self.onmessage = (m: MessageEvent<{ url: string }>) => {
  if (url) return;
  url = m.data.url;
  connect();
};
