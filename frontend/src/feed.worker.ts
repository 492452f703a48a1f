// The live feed, off the page's main thread: this worker holds the WebSocket to /api/live and
// hands the page the LiveEvents (one per binary message) as raw bytes, transferred, in batches
// at most every BATCH_MS. At 500 hosts × 1 frame/s that is a few messages a second to the main
// thread instead of five hundred. The page decodes them (store.applyBytes): decoded messages
// sent from here cost the page a structured clone of the same objects, and its minor GCs.

export type ToPage =
  | { kind: "bytes"; bufs: ArrayBuffer[] }
  | { kind: "open" }
  | { kind: "closed"; retryInMs: number; everConnected: boolean }
  | { kind: "stats"; decodeMs: number; messages: number };

const BATCH_MS = 250;
const CHUNK = 16;
const post = (m: ToPage) => (self as unknown as Worker).postMessage(m);

let url = "";
let delay = 500;
let everConnected = false;
let queue: ArrayBuffer[] = [];
let timer: ReturnType<typeof setTimeout> | null = null;
let decodeMs = 0;
let messages = 0;

function flush() {
  timer = null;
  // In small messages: the page reads each in its own short task, so a frame can be drawn
  // between two of them instead of waiting behind one long one.
  // Raw bytes, transferred (not copied): the page decodes them itself. A structured clone of
  // decoded messages allocated the same objects on the page and more (the clone's own), and
  // the page's minor GCs sat in its longest tasks.
  for (let i = 0; i < queue.length; i += CHUNK) {
    const bufs = queue.slice(i, i + CHUNK);
    (self as unknown as Worker).postMessage({ kind: "bytes", bufs } satisfies ToPage, bufs);
  }
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
    queue.push(m.data);
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
