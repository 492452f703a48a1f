// The live feed, off the page's main thread: this worker holds the WebSocket to
// /api/live?batch=BATCH_MS (each message a LiveBatch of the events of up to BATCH_MS), reads
// what a brief needs of each LiveEvent (`digest.ts`) and keeps every host's latest (`Feed`).
// After each message it hands the page a `Brief` per host that changed: the figures the
// summary, sorting and filters need, the sparkline samples, and the event's raw bytes,
// transferred (not copied), which the page decodes in full only for the hosts it draws. New
// filters come from the page and are applied here to every host.

import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Feed, type Brief, type Selection, type Thresholds } from "./model";

export type ToPage =
  | { kind: "briefs"; briefs: Brief[] }
  | { kind: "open" }
  | { kind: "closed"; retryInMs: number; everConnected: boolean }
  | { kind: "stats"; decodeMs: number; messages: number };

export type ToWorker =
  | { kind: "start"; url: string; sel: Selection; th: Thresholds }
  | { kind: "filters"; sel: Selection; th: Thresholds };

/** How long the hub gathers events into one message: the page's updates come at this pace. */
const BATCH_MS = 250;
/** Briefs per message: the page reads each message in its own short task. */
const CHUNK = 64;

let feed: Feed | null = null;
let url = "";
let delay = 500;
let everConnected = false;
/** Host id → its brief waiting for the next batch: a newer one replaces an older one. */
let queue = new Map<string, Brief>();
let decodeMs = 0;
let messages = 0;

function send(briefs: Brief[]) {
  for (let i = 0; i < briefs.length; i += CHUNK) {
    const part = briefs.slice(i, i + CHUNK);
    const transfer: ArrayBuffer[] = [];
    for (const b of part) {
      if (b.kind === "host" && b.bytes) transfer.push(b.bytes);
    }
    (self as unknown as Worker).postMessage({ kind: "briefs", briefs: part } satisfies ToPage, transfer);
  }
}

function flush() {
  send([...queue.values()]);
  queue = new Map();
  post({ kind: "stats", decodeMs, messages });
}

function post(m: ToPage) {
  (self as unknown as Worker).postMessage(m);
}

function enqueue(b: Brief) {
  const old = queue.get(b.id);
  // A host's older brief still waiting is replaced, but its event bytes and samples are kept
  // when the newer one has none (a status change after a report in the same batch).
  if (old?.kind === "host" && b.kind === "host") {
    if (!b.bytes) b.bytes = old.bytes;
    if (!b.samples) b.samples = old.samples;
    else if (old.samples) b.samples = concatSamples(old.samples, b.samples);
  }
  queue.delete(b.id);
  queue.set(b.id, b);
}

/** Two reports' samples in one batch: both go to the sparkline. */
function concatSamples(a: Float64Array, b: Float64Array): Float64Array {
  const c = new Float64Array(a.length + b.length);
  c.set(a);
  c.set(b, a.length);
  return c;
}

function connect() {
  const u = new URL(url);
  u.searchParams.set("batch", String(BATCH_MS));
  const ws = new WebSocket(u);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    delay = 500;
    everConnected = true;
    post({ kind: "open" });
  };
  ws.onmessage = (m) => {
    if (!(m.data instanceof ArrayBuffer) || !feed) return;
    messages++;
    const t = performance.now();
    try {
      // LiveBatch: field 1, each a LiveEvent's bytes as the hub encoded them.
      const r = new BinaryReader(new Uint8Array(m.data));
      while (r.pos < r.len) {
        const [field, wt] = r.tag();
        if (field !== 1 || wt !== WireType.LengthDelimited) {
          r.skip(wt, field);
          continue;
        }
        // A copy of its own: each host's bytes are handed to the page separately.
        const ev = r.bytes().slice().buffer;
        try {
          const b = feed.apply(ev);
          if (b) enqueue(b);
        } catch (e) {
          console.warn("undecodable live event", e);
        }
      }
    } catch (e) {
      console.warn("undecodable live batch", e);
    }
    decodeMs += performance.now() - t;
    // The hub already gathered this message's events over BATCH_MS: on to the page now.
    flush();
  };
  ws.onclose = () => {
    // Backoff with jitter: many pages must not knock on a restarted hub at the same instant.
    const wait = Math.round(delay * (0.75 + Math.random() * 0.5));
    delay = Math.min(delay * 2, 15000);
    post({ kind: "closed", retryInMs: wait, everConnected });
    setTimeout(connect, wait);
  };
}

self.onmessage = (m: MessageEvent<ToWorker>) => {
  const d = m.data;
  if (d.kind === "start") {
    if (feed) return;
    feed = new Feed(d.sel, d.th);
    url = d.url;
    connect();
  } else if (feed) {
    for (const b of feed.refilter(d.sel, d.th)) enqueue(b);
    // Now, not with the next message: the person who typed is waiting for it.
    flush();
  }
};
