// The live page: a feed worker holds the WebSocket to /api/live and sends a brief of each
// host (model.ts); the page keeps them in a store and updates keyed views in place, once per
// animation frame, decoding a host's report only to draw it.

import "uplot/dist/uPlot.min.css";
import "./style.css";
import { HostStatus } from "./gen/gpu_pb";
import { bytes } from "./fmt";
import { load, save, type Filters } from "./filters";
import { Feed, Store, type Selection, type Thresholds } from "./model";
import type { ToPage, ToWorker } from "./feed.worker";
import { installHistory } from "./history";
import { installFreeNow } from "./freenow";
import { installAlerts } from "./alerts";
import { HostView, sparkFrame } from "./view";
import { txt } from "./dom";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const params = new URLSearchParams(location.search);
/** `?naive=1`: rebuild every view on every frame (the benchmark's peer; never for real use). */
const NAIVE = params.get("naive") === "1";
/** Most time per animation frame spent drawing; the rest waits for the next frame. */
const BUDGET_MS = 2;
/** Most views drawn per animation frame (a card, or a few table rows); the rest wait for the next frames. */
const MAX_VIEWS_PER_FRAME = { cards: 1, table: 4 };
/** Most GPU rows of a card drawn per animation frame: an 8-GPU card takes two frames. */
const ROWS_PER_FRAME = 4;

// The filters act as they change; the form is never submitted (no inline handler: the hub's
// Content-Security-Policy allows no inline script).
$("filters").addEventListener("submit", (e) => e.preventDefault());

// The hub exchanges `?token=` for an HttpOnly cookie and sends the browser to the URL without
// it. Served by something else (a proxy, the benchmark's replay), the page does the same itself,
// so the token does not stay in the address bar, the history or a shared link either way.
const token = params.get("token");
if (token) {
  document.cookie = `hmon_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
  params.delete("token");
  const q = params.toString();
  history.replaceState(null, "", `${location.pathname}${q ? `?${q}` : ""}${location.hash}`);
}

const store = new Store();
/** Time spent applying the feed (`decodeMs`) and drawing, read by the benchmark (frontend/bench). */
const stats = { decodeMs: 0, workerDecodeMs: 0, events: 0, flushMs: 0, flushes: 0, maxFlushMs: 0, factsMs: 0, drawMs: 0, summaryMs: 0 };
(window as unknown as { __hmon: typeof stats }).__hmon = stats;
const views = new Map<string, HostView>();
let f: Filters = load();
let th: Thresholds = { memMiB: f.fmem, util: f.futil };

const main = $<HTMLElement>("hosts");
const table = document.createElement("table");
table.className = "compact";
table.innerHTML =
  "<thead><tr><th>host</th><th>status</th><th>address</th><th>GPUs (util %)</th><th>free</th><th>util</th><th>GPU memory</th><th>users</th><th>seen</th></tr></thead>";
const tbody = document.createElement("tbody");
table.append(tbody);

function container(): HTMLElement {
  return f.view === "cards" ? main : tbody;
}

// Views off screen are not drawn; they are drawn when they come near the viewport. Cards and
// rows have `content-visibility: auto`, so the browser already tracks which are near the
// viewport and says so with `contentvisibilityautostatechange`; listening to that costs nothing
// per frame, where an IntersectionObserver over 500 targets cost a few ms on every frame.
// Browsers without the event get the IntersectionObserver.
function onVisibility(e: HTMLElement, visible: boolean) {
  const id = e.dataset.host;
  const v = id && views.get(id);
  if (!v || v.element(f.view) !== e) return;
  selfVisible.set(e, visible);
  v.onScreen = visible && chunkVisible(e);
  if (v.onScreen) {
    store.dirty.add(v.id);
    schedule();
  }
}
/** What each view's own `content-visibility` last said (until it says, visible). */
const selfVisible = new WeakMap<HTMLElement, boolean>();
/** Whether the chunk holding a card is rendered (see `placeChunks`). */
const chunkShown = new WeakMap<HTMLElement, boolean>();
function chunkVisible(e: HTMLElement): boolean {
  const c = e.parentElement;
  return !c || !c.classList.contains("chunk") || chunkShown.get(c) !== false;
}
function onChunkVisibility(c: HTMLElement, visible: boolean) {
  chunkShown.set(c, visible);
  for (const e of c.children as HTMLCollectionOf<HTMLElement>) {
    const v = views.get(e.dataset.host ?? "");
    if (!v) continue;
    v.onScreen = visible && selfVisible.get(e) !== false;
    if (v.onScreen) store.dirty.add(v.id);
  }
  if (visible) schedule();
}
const hasCvEvent = "oncontentvisibilityautostatechange" in document.body;
const io = hasCvEvent
  ? null
  : new IntersectionObserver(
      (entries) => {
        for (const e of entries) onVisibility(e.target as HTMLElement, e.isIntersecting);
      },
      { rootMargin: "300px 0px" },
    );
const listening = new WeakSet<HTMLElement>();
const vis = {
  observe(e: HTMLElement) {
    if (io) io.observe(e);
    else if (!listening.has(e)) {
      listening.add(e);
      e.addEventListener("contentvisibilityautostatechange", (ev) =>
        onVisibility(e, !(ev as Event & { skipped: boolean }).skipped),
      );
    }
  },
  unobserve(e: HTMLElement) {
    io?.unobserve(e);
  },
};

let pending = false;
/** The card whose drawing goes on in the next frame. */
let partial: string | null = null;
let reorder = true;
let summaryDue = true;

function schedule() {
  if (!pending) {
    pending = true;
    requestAnimationFrame(flush);
  }
}

function sortKey(v: HostView): number {
  const x = v.f;
  if (!x) return 0;
  switch (f.sort) {
    case "free": return -x.free;
    case "util": return x.utilN ? -x.utilSum / x.utilN : 1;
    case "mem": return -x.memUsed;
    case "status": return x.up ? 1 : 0;
    default: return 0;
  }
}

function place() {
  const list: HostView[] = [];
  for (const v of views.values()) if (v.m.host) list.push(v);
  list.sort((a, b) => sortKey(a) - sortKey(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (f.view === "cards" && !io) placeChunks(list);
  else {
    for (const c of chunks) c.remove();
    chunks.length = 0;
    placeIn(container(), list);
  }
  $<HTMLElement>("empty").hidden = list.length > 0 || store.hosts.size === 0;
}

/**
 * Cards go in chunks of CHUNK, each chunk with `content-visibility: auto` of its own: the
 * browser's work on each frame (layout, pre-paint, paint and layerization walk the document)
 * then passes ~20 chunks and the cards of the one or two on screen, not 500 cards.
 */
const CHUNK = 25;
const chunks: HTMLElement[] = [];
function placeChunks(list: HostView[]) {
  const n = Math.ceil(list.length / CHUNK);
  while (chunks.length < n) {
    const c = document.createElement("div");
    c.className = "chunk";
    c.addEventListener("contentvisibilityautostatechange", (ev) => {
      if (ev.target === c) onChunkVisibility(c, !(ev as Event & { skipped: boolean }).skipped);
    });
    main.append(c);
    chunks.push(c);
  }
  while (chunks.length > n) {
    const c = chunks.pop()!;
    for (const e of c.children as HTMLCollectionOf<HTMLElement>) {
      const v = views.get(e.dataset.host ?? "");
      if (v) v.onScreen = false;
    }
    c.remove();
  }
  for (let k = 0; k < n; k++) placeIn(chunks[k], list.slice(k * CHUNK, (k + 1) * CHUNK));
}

/** Puts the views' elements into `c` in this order, moving as few as it can. */
function placeIn(c: HTMLElement, list: HostView[]) {
  const wanted = new Set<HTMLElement>();
  let ref = c.firstElementChild;
  for (const v of list) {
    const e = v.element(f.view);
    wanted.add(e);
    if (e === ref) {
      ref = ref.nextElementSibling;
    } else {
      c.insertBefore(e, ref);
      vis.observe(e);
      // Until the browser says it is skipped (off screen), a newly placed view counts as seen;
      // the event only reports changes, and a moved element may not change state.
      if (!io) {
        selfVisible.set(e, true);
        const on = chunkVisible(e);
        if (on && !v.onScreen) store.dirty.add(v.id);
        v.onScreen = on;
      }
    }
  }
  // What is left after the wanted ones is filtered out (or placed in another chunk next).
  for (const e of [...c.children] as HTMLElement[]) {
    if (!wanted.has(e)) {
      vis.unobserve(e);
      e.remove();
      const v = views.get(e.dataset.host ?? "");
      if (v) v.onScreen = false;
    }
  }
}

function flush() {
  const t0 = performance.now();
  try {
    draw(t0);
  } finally {
    const d = performance.now() - t0;
    stats.flushMs += d;
    stats.maxFlushMs = Math.max(stats.maxFlushMs, d);
    stats.flushes++;
  }
}

function draw(t0: number) {
  pending = false;
  sparkFrame(NAIVE ? Infinity : 1, NAIVE ? Infinity : ROWS_PER_FRAME);
  const now = Date.now();
  if (store.structure) {
    store.structure = false;
    hostCount = -1; // the host list for the filter's suggestions is due
    for (const [id, v] of views) {
      if (!store.hosts.has(id)) {
        vis.unobserve(v.card);
        vis.unobserve(v.row);
        v.destroy();
        views.delete(id);
      }
    }
    for (const id of store.hosts.keys()) {
      if (!views.has(id)) {
        views.set(id, new HostView(id));
        store.dirty.add(id);
      }
    }
    reorder = true;
  }
  if (NAIVE) {
    // The peer: throw every view away and build it again.
    for (const v of views.values()) {
      vis.unobserve(v.card);
      vis.unobserve(v.row);
      v.destroy();
    }
    views.clear();
    for (const [id, r] of store.hosts) {
      const v = new HostView(id);
      views.set(id, v);
      v.f = r.f;
      v.m = r.m;
      v.onScreen = true;
      v.element(f.view);
      v.draw(r, f.view, th, now);
    }
    store.dirty.clear();
    main.replaceChildren();
    if (f.view === "table") main.append(table);
    tbody.replaceChildren();
    const c = container();
    for (const v of [...views.values()].filter((v) => v.m.host).sort((a, b) => sortKey(a) - sortKey(b) || (a.id < b.id ? -1 : 1)))
      c.append(v.element(f.view));
    summary();
    return;
  }
  // Facts and filter membership first (cheap, no DOM): they decide order and visibility.
  for (const id of store.dirty) {
    const r = store.hosts.get(id), v = views.get(id);
    if (!r || !v) continue;
    // The figures come with each brief (computed in the feed worker).
    if (v.factsFor === r.version) continue;
    v.factsFor = r.version;
    const wasHost = v.m.host;
    const before = v.f ? sortKey(v) : NaN;
    v.f = r.f;
    v.m = r.m;
    if (wasHost !== v.m.host || (f.sort !== "id" && before !== sortKey(v))) reorder = true;
    summaryDue = true;
  }
  if (reorder) {
    reorder = false;
    place();
  }
  const t1 = performance.now();
  stats.factsMs += t1 - t0;
  // Then drawing, within the frame budget; what is left goes to the next frame.
  let drawn = 0;
  // A card left half drawn in the last frame comes first.
  const order = partial ? [partial, ...store.dirty] : store.dirty;
  partial = null;
  for (const id of order) {
    const r = store.hosts.get(id), v = views.get(id);
    store.dirty.delete(id);
    if (!r || !v || !v.m.host || !v.onScreen || v.drawn === r.version) continue;
    v.draw(r, f.view, th, now);
    if (v.drawn !== r.version) {
      // Part of a card: the rest in the next frame.
      store.dirty.add(id);
      partial = id;
      drawn++;
      break;
    }
    // One visible view per frame: the browser's style, layout and paint of the frame then
    // cover one card, not a batch's worth (about 16 ms of rendering for 3–4 cards here).
    if (++drawn >= MAX_VIEWS_PER_FRAME[f.view] || performance.now() - t0 > BUDGET_MS) break;
  }
  const t2 = performance.now();
  stats.drawMs += t2 - t1;
  // The summary gets a frame of its own when cards were drawn in this one.
  if (summaryDue && (!drawn || performance.now() - lastSummary > 1000)) summary();
  stats.summaryMs += performance.now() - t2;
  if (store.dirty.size || (summaryDue && drawn)) schedule();
}

let lastSummary = 0;
let hostCount = -1;
function summary() {
  const t = performance.now();
  if (t - lastSummary < 250) {
    // At most four times a second; the last change is still shown, a moment later.
    setTimeout(schedule, 260);
    return;
  }
  lastSummary = t;
  summaryDue = false;
  let up = 0, down = 0, free = 0, settling = 0, held = 0, busy = 0, gpus = 0, mem = 0, memT = 0;
  const users = new Set<string>();
  const hostIds: string[] = [];
  for (const v of views.values()) {
    const x = v.f;
    hostIds.push(v.id);
    if (!x) continue;
    if (x.up) up++;
    else down++;
    free += x.free;
    settling += x.settling;
    held += x.held;
    busy += x.busy;
    gpus += x.gpus;
    mem += x.memUsed;
    memT += x.memTotal;
    for (const u of x.users) users.add(u);
  }
  const s = $<HTMLElement>("summary");
  if (!s.querySelector("[data-k]")) {
    s.textContent = "";
    // Built once; then only the texts change.
    for (const k of ["hosts", "gpus", "mem", "users"]) {
      if (s.firstChild) s.append(" · ");
      const b = document.createElement("span");
      b.dataset.k = k;
      s.append(b);
    }
  }
  const part = (k: string, text: string) => txt(s.querySelector(`[data-k="${k}"]`) as HTMLElement, text);
  part("hosts", `${up} host${up === 1 ? "" : "s"} up, ${down} down`);
  // Settling (idle, not for the hub's whole settle time yet) is not free: said apart, when any.
  part("gpus", `${free} GPUs free, ${settling ? `${settling} settling, ` : ""}${held ? `${held} held, ` : ""}${busy} busy, ${gpus} total`);
  // No GPU reported its memory (no GPUs, no driver): unavailable, not "0 B / 0 B".
  part("mem", memT > 0 ? `GPU memory ${bytes(mem)} / ${bytes(memT)} in use` : "GPU memory n/a");
  part("users", `${users.size} active user${users.size === 1 ? "" : "s"}`);
  datalist("userlist", [...users].sort());
  // Host names change only with the set of hosts.
  if (hostIds.length !== hostCount) {
    hostCount = hostIds.length;
    datalist("hostlist", hostIds.sort());
  }
}

const listKeys = new Map<string, string>();
function datalist(id: string, values: string[]) {
  const k = values.join("\n");
  if (listKeys.get(id) === k) return;
  listKeys.set(id, k);
  $<HTMLDataListElement>(id).replaceChildren(
    ...values.map((v) => {
      const o = document.createElement("option");
      o.value = v;
      return o;
    }),
  );
}

// --- controls ----------------------------------------------------------------------------

const q = $<HTMLInputElement>("f-q"), host = $<HTMLInputElement>("f-host"), user = $<HTMLInputElement>("f-user");
const mine = $<HTMLInputElement>("f-mine"), me = $<HTMLInputElement>("f-me"), free = $<HTMLInputElement>("f-free");
const fmem = $<HTMLInputElement>("f-fmem"), futil = $<HTMLInputElement>("f-futil");
const sort = $<HTMLSelectElement>("f-sort"), viewSel = $<HTMLSelectElement>("f-view");

function toControls() {
  q.value = f.q; host.value = f.host; user.value = f.user; mine.checked = f.mine; me.value = f.me;
  free.checked = f.free; fmem.value = String(f.fmem); futil.value = String(f.futil);
  sort.value = f.sort; viewSel.value = f.view;
}

function fromControls() {
  const n = (e: HTMLInputElement, d: number) => (e.value !== "" && Number(e.value) >= 0 ? Number(e.value) : d);
  const before = f.view;
  f = {
    q: q.value, host: host.value.trim(), user: user.value.trim(), mine: mine.checked, me: me.value.trim(),
    free: free.checked, fmem: n(fmem, f.fmem), futil: n(futil, f.futil),
    sort: sort.value as Filters["sort"], view: viewSel.value as Filters["view"],
  };
  th = { memMiB: f.fmem, util: f.futil };
  save(f);
  // Which hosts and GPUs the filters keep is worked out where the feed is decoded.
  refilter(selection(f), th);
  freeNow.rethreshold();
  if (before !== f.view) setView();
  for (const id of store.hosts.keys()) store.dirty.add(id);
  for (const v of views.values()) v.drawn = v.factsFor = -1;
  reorder = true;
  schedule();
}

function setView() {
  main.replaceChildren();
  chunks.length = 0;
  tbody.replaceChildren();
  for (const v of views.values()) {
    vis.unobserve(v.card);
    vis.unobserve(v.row);
    v.onScreen = false;
  }
  if (f.view === "table") main.append(table);
  main.dataset.view = f.view;
}

toControls();
setView();
const freeNow = installFreeNow($("freenow"), () => th);
// Whom to tell when GPUs free up defaults to "I am".
installAlerts($("alerts"), () => f.me);
installHistory(main);
for (const e of [q, host, user, me, fmem, futil]) e.addEventListener("input", fromControls);
for (const e of [mine, free, sort, viewSel]) e.addEventListener("change", fromControls);

// Relative times ("last seen 5 min ago") move without frames: refresh them now and then.
setInterval(() => {
  const now = Date.now();
  for (const [id, r] of store.hosts) {
    if (r.status !== HostStatus.UP) views.get(id)?.refreshSeen(r, f.view, now);
  }
}, 5000);

// --- the hub's own health --------------------------------------------------------------------

// What the live feed cannot say: the hub is up but part of it is not (history cannot be
// written). Asked now and then; live monitoring goes on meanwhile.
const health = $<HTMLElement>("health");
async function checkHealth() {
  try {
    const r = await fetch(new URL("healthz", location.href), { credentials: "same-origin" });
    if (!r.ok) return;
    const h = (await r.json()) as { status?: string; history?: { unavailable?: string | null } };
    const why = h.history?.unavailable;
    health.hidden = !why;
    health.textContent = why ? `History unavailable: ${why}. Live views go on; agents keep their samples until it is back.` : "";
  } catch {
    // The socket's own status line says when the hub cannot be reached.
  }
}
void checkHealth();
setInterval(() => void checkHealth(), 15000);

// --- the socket ----------------------------------------------------------------------------

const conn = $<HTMLElement>("conn");
const wsUrl = new URL("api/live", location.href);
wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
// The cookie goes with the upgrade request: no token in the socket's URL either.
wsUrl.search = "";
let retryTimer: ReturnType<typeof setInterval> | undefined;

function closed(retryInMs: number, everConnected: boolean) {
  document.body.classList.add("offline");
  conn.hidden = false;
  const until = Date.now() + retryInMs;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    conn.textContent = `${everConnected ? "Connection lost" : "Cannot reach the hub"}: reconnecting${left ? ` in ${left} s` : "…"}`;
  };
  tick();
  clearInterval(retryTimer);
  retryTimer = setInterval(tick, 1000);
}

function opened() {
  clearInterval(retryTimer);
  conn.hidden = true;
  document.body.classList.remove("offline");
}

function selection(x: Filters): Selection {
  return { q: x.q, host: x.host, user: x.user, mine: x.mine, me: x.me, free: x.free };
}

let refilter: (sel: Selection, th: Thresholds) => void;

if (NAIVE) {
  // The peer decodes on the main thread too, as a page without a worker would.
  const feed = new Feed(selection(f), th);
  refilter = (sel, th) => {
    for (const b of feed.refilter(sel, th)) store.apply(b);
  };
  const connect = (delay: number) => {
    const ws = new WebSocket(wsUrl);
    ws.binaryType = "arraybuffer";
    ws.onopen = opened;
    ws.onmessage = (m) => {
      const t = performance.now();
      const b = feed.apply(m.data as ArrayBuffer);
      if (b) store.apply(b);
      stats.decodeMs += performance.now() - t;
      stats.events++;
      schedule();
    };
    ws.onclose = () => {
      closed(delay, true);
      setTimeout(() => connect(Math.min(delay * 2, 15000)), delay);
    };
  };
  connect(500);
} else {
  const worker = new Worker(new URL("./feed.worker.ts", import.meta.url), { type: "module" });
  const tell = (m: ToWorker) => worker.postMessage(m);
  refilter = (sel, th) => tell({ kind: "filters", sel, th });
  worker.onmessage = (m: MessageEvent<ToPage>) => {
    const d = m.data;
    if (d.kind === "briefs") {
      const t = performance.now();
      for (const b of d.briefs) store.apply(b);
      stats.decodeMs += performance.now() - t;
      stats.events += d.briefs.length;
      schedule();
    } else if (d.kind === "stats") {
      stats.workerDecodeMs = d.decodeMs;
    } else if (d.kind === "open") {
      opened();
    } else {
      closed(d.retryInMs, d.everConnected);
    }
  };
  worker.onerror = (e) => console.error("live feed worker failed", e.message);
  tell({ kind: "start", url: wsUrl.href, sel: selection(f), th });
}
