// The live page under load: 500 hosts × 8 GPUs, each host sending a frame once a second
// (hmonitor-load's simulated agents into a real hmonitor-hub), the page open in Chromium.
// Measured from a Chromium trace (main thread's RunTask events) over a window:
//   - busy: share of main-thread time spent in tasks (decoding frames, drawing, style, layout)
//   - p95 of each second's longest task, and the longest task seen
// for the page as built (in-place updates) and for its peer, `?naive=1` (every view rebuilt
// on every animation frame), interleaved, several runs each; medians reported.
//
//   node bench/bench.mjs [--hosts 500] [--gpus 8] [--runs 3] [--seconds 30] [--nice] [--driver cdp|pw]
//                        [--feed live|replay]
// Needs release binaries (cargo build --release -p hmonitor-hub -p hmonitor-bench) and the built page.
// --nice runs the hub and the load generator at the lowest CPU priority, each in a scheduler
// autogroup of its own. The browser is driven over the DevTools protocol with nothing but
// tracing and evaluation enabled (`--driver pw`, or a mode such as `cards:pw`: through
// Playwright, whose instrumentation costs the browser time; see `Cdp`).
// --feed replay records the hub's feed first, stops the load generator and plays the feed back
// to the page (bench/replay.mjs): the browser then has the machine to itself, as it would in a
// lab where the hub and the agents run elsewhere.
// Where the time goes: BENCH_PHASES=1 (the rendering phases per frame, and of the longest
// tenth of the tasks); BENCH_BREAKDOWN=1 (trace events of the longest tasks by thread time;
// 2: layout roots; 3: paint and layout details; 4: the longest by wall time, with each phase's
// wall and thread time; 5: what other threads and processes ran during the longest tasks by
// wall time); BENCH_PROFILE=1 (a JavaScript CPU profile of the window, self time per
// function; build the page with `npx vite build --minify false` for readable names);
// BENCH_TRACE=FILE and BENCH_PROFILE_OUT=FILE (the last run's raw trace, for Perfetto, and
// CPU profile).

import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { parseArgs } from "node:util";
import { CHROMIUM_ARGS, launch, Proc, repo, until } from "../tests/harness.mjs";
import { record, serve } from "./replay.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const { values: o } = parseArgs({
  options: {
    hosts: { type: "string", default: "500" },
    gpus: { type: "string", default: "8" },
    runs: { type: "string", default: "3" },
    // The p95 is over each second's longest task: over 10 s that is simply the longest one.
    seconds: { type: "string", default: "30" },
    modes: { type: "string", default: "cards,naive" },
    // How the browser is driven: "cdp" (the DevTools protocol over a pipe, nothing enabled but
    // tracing and evaluation) or "pw" (Playwright). A mode may name its own: `cards:pw`.
    driver: { type: "string", default: "cdp" },
    // The hub and the load generator at the lowest CPU priority, as if they ran on other
    // machines (on this 2-core VM they otherwise take cores from the browser in mid-task).
    nice: { type: "boolean", default: false },
    // "live": the page on the hub while the load generator runs. "replay": the hub's feed for
    // the simulated hosts recorded first, then played back to the page with the simulation
    // stopped, as on a browser machine that does not also run it (bench/replay.mjs).
    feed: { type: "string", default: "live" },
    // A debug hub reads frontend/dist at run time (no rebuild after each page change).
    "hub-bin": { type: "string" },
  },
});
const HOSTS = Number(o.hosts), SECONDS = Number(o.seconds), RUNS = Number(o.runs);
if (!["live", "replay"].includes(o.feed)) throw new Error(`--feed ${o.feed}: expected live or replay`);
/** Longest wait for the page to show every host before the window starts (the naive peer may never). */
const LOAD_MS = 30000;
const rel = join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "release");
const TOKEN = "bench-token";

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pctl = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
};

function bundleGzip() {
  const dir = join(repo, "frontend/dist/assets");
  let total = 0;
  for (const f of readdirSync(dir)) if (/\.(js|css)$/.test(f)) total += gzipSync(readFileSync(join(dir, f)), { level: 9 }).length;
  total += gzipSync(readFileSync(join(repo, "frontend/dist/index.html")), { level: 9 }).length;
  return total;
}

const URLS = {
  cards: "/",
  table: "/?view=table",
  naive: "/?naive=1",
};

/** Self time per function of a CPU profile, the 30 largest, printed (BENCH_PROFILE=1). */
function printProfile(profile) {
  // The profile itself, for a look at the longest tasks only (its times match the trace's).
  if (process.env.BENCH_PROFILE_OUT) writeFileSync(process.env.BENCH_PROFILE_OUT, JSON.stringify(profile));
  const self = new Map();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const dt = profile.timeDeltas;
  for (let i = 0; i < profile.samples.length; i++) {
    const n = byId.get(profile.samples[i]);
    const k = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber}`;
    self.set(k, (self.get(k) ?? 0) + (dt[i] ?? 0) / 1000);
  }
  console.error([...self].sort((a, b) => b[1] - a[1]).slice(0, 30).map(([k, v]) => `${v.toFixed(1)} ms ${k}`).join("\n"));
}

const TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline"];
const VIEWPORT = { width: 1400, height: 900 };

/**
 * The DevTools protocol over Chromium's pipe (--remote-debugging-pipe: commands on fd 3,
 * replies and events on fd 4, each a JSON text ended by NUL), with nothing enabled but what
 * the bench asks for. Playwright, by contrast, enables network events in the page and in its
 * workers: every WebSocket message the feed worker receives is then also base64-encoded in
 * the worker and relayed by the browser's main thread to the test process, work a person's
 * browser never does, done on the same two cores as the page (BENCHMARKS.md).
 */
class Cdp {
  constructor(proc) {
    this.out = proc.stdio[3];
    this.id = 0;
    this.pending = new Map();
    this.waiters = [];
    // A browser that dies fails what waits on it instead of leaving the bench hanging.
    proc.on("exit", (code, signal) => {
      for (const p of this.pending.values()) p.rej(new Error(`chromium exited (${signal ?? code}) during ${p.method}`));
      this.pending.clear();
    });
    let buf = Buffer.alloc(0);
    proc.stdio[4].on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      for (let i; (i = buf.indexOf(0)) >= 0; buf = buf.subarray(i + 1)) this.#got(JSON.parse(buf.subarray(0, i).toString("utf8")));
    });
  }
  send(method, params = {}, sessionId = undefined) {
    const id = ++this.id;
    this.out.write(JSON.stringify({ id, method, params, sessionId }) + "\0");
    return new Promise((res, rej) => this.pending.set(id, { res, rej, method }));
  }
  /** The next event `method`'s params. */
  next(method) {
    return new Promise((res) => this.waiters.push({ method, res }));
  }
  #got(m) {
    if (m.id !== undefined) {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.error) p.rej(new Error(`${p.method}: ${m.error.message}`));
      else p.res(m.result);
      return;
    }
    if (m.method === "Runtime.exceptionThrown") this.onException?.(m.params);
    const k = this.waiters.findIndex((w) => w.method === m.method);
    if (k >= 0) this.waiters.splice(k, 1)[0].res(m.params);
  }
}

/** A fresh Chromium on `url`, driven over the pipe; see `Cdp`. */
async function recordCdp(url) {
  const dir = mkdtempSync(join(tmpdir(), "hmon-bench-chromium-"));
  const proc = spawn(
    process.env.CHROMIUM ?? "/usr/bin/chromium",
    [...CHROMIUM_ARGS, "--headless", "--remote-debugging-pipe", `--user-data-dir=${dir}`, `--window-size=${VIEWPORT.width},${VIEWPORT.height}`, "about:blank"],
    { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] },
  );
  const exited = new Promise((r) => proc.on("exit", r));
  const cdp = new Cdp(proc);
  try {
    const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: true });
    const errors = [];
    cdp.onException = (e) => errors.push(e.exceptionDetails?.exception?.description ?? e.exceptionDetails?.text);
    await cdp.send("Runtime.enable", {}, sessionId);
    await cdp.send("Emulation.setDeviceMetricsOverride", { ...VIEWPORT, deviceScaleFactor: 1, mobile: false }, sessionId);
    await cdp.send("Page.navigate", { url }, sessionId);
    const evaluate = async (expression) => (await cdp.send("Runtime.evaluate", { expression, returnByValue: true }, sessionId)).result.value;
    // The naive peer may never catch up with the feed: measure it anyway after 30 s.
    await until("every host on the page", async () =>
      String(await evaluate("document.querySelector('#summary')?.textContent ?? ''")).includes(`${HOSTS} hosts up`), LOAD_MS).catch(() => {});
    await sleep(2000); // settle: the first snapshot's burst is not steady state
    if (process.env.BENCH_PROFILE) {
      await cdp.send("Profiler.enable", {}, sessionId);
      await cdp.send("Profiler.setSamplingInterval", { interval: 100 }, sessionId);
      await cdp.send("Profiler.start", {}, sessionId);
    }
    await cdp.send("Tracing.start", { traceConfig: { includedCategories: TRACE_CATEGORIES }, transferMode: "ReturnAsStream" });
    const s0 = await evaluate("({ ...window.__hmon })");
    const t0 = Date.now();
    await sleep(SECONDS * 1000);
    const wall = Date.now() - t0;
    const s1 = await evaluate("({ ...window.__hmon })");
    const done = cdp.next("Tracing.tracingComplete");
    await cdp.send("Tracing.end");
    const { stream } = await done;
    const parts = [];
    for (;;) {
      const r = await cdp.send("IO.read", { handle: stream, size: 1 << 22 });
      parts.push(r.base64Encoded ? Buffer.from(r.data, "base64") : Buffer.from(r.data));
      if (r.eof) break;
    }
    await cdp.send("IO.close", { handle: stream });
    if (process.env.BENCH_PROFILE) printProfile((await cdp.send("Profiler.stop", {}, sessionId)).profile);
    const rows = await evaluate("document.querySelectorAll('tr.gpu').length");
    return { trace: JSON.parse(Buffer.concat(parts).toString("utf8")), s0, s1, wall, rows, errors };
  } finally {
    proc.kill("SIGKILL");
    await exited;
    // Chromium's other processes may still be writing the profile for a moment after the
    // browser's own exit: retry rather than fail the bench on ENOTEMPTY.
    rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
  }
}

/** The same through Playwright (its instrumentation included), for comparison: `cards:pw`. */
async function recordPlaywright(url) {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: VIEWPORT });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    await until("every host on the page", async () =>
      (await page.textContent("#summary")).includes(`${HOSTS} hosts up`), LOAD_MS).catch(() => {});
    await page.waitForTimeout(2000);
    let cdp = null;
    if (process.env.BENCH_PROFILE) {
      cdp = await page.context().newCDPSession(page);
      await cdp.send("Profiler.enable");
      await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
      await cdp.send("Profiler.start");
    }
    await browser.startTracing(page, { categories: TRACE_CATEGORIES });
    const s0 = await page.evaluate(() => ({ ...window.__hmon }));
    const t0 = Date.now();
    await page.waitForTimeout(SECONDS * 1000);
    const wall = Date.now() - t0;
    const s1 = await page.evaluate(() => ({ ...window.__hmon }));
    const trace = JSON.parse((await browser.stopTracing()).toString());
    if (cdp) printProfile((await cdp.send("Profiler.stop")).profile);
    const rows = await page.$$eval("tr.gpu", (r) => r.length);
    return { trace, s0, s1, wall, rows, errors };
  } finally {
    await browser.close();
  }
}

async function measure(server, mode) {
  // `cards` in the default driver; `cards:pw` through Playwright.
  const [name, driver = o.driver] = mode.split(":");
  const { trace, s0, s1, wall, rows, errors } = await (driver === "pw" ? recordPlaywright : recordCdp)(server.url(URLS[name]));
  const events = trace.traceEvents ?? trace;
  // BENCH_TRACE=FILE: the raw trace, for chrome://tracing or Perfetto (the last run's).
  if (process.env.BENCH_TRACE) writeFileSync(process.env.BENCH_TRACE, JSON.stringify(trace));
  const mains = new Set(
    events.filter((e) => e.ph === "M" && e.name === "thread_name" && e.args?.name === "CrRendererMain").map((e) => `${e.pid}:${e.tid}`),
  );
  // One renderer holds the page; the others (if any) are idle. Take the busiest main thread.
  const byThread = new Map();
  for (const e of events) {
    if (e.ph !== "X" || e.name !== "RunTask" || !mains.has(`${e.pid}:${e.tid}`)) continue;
    const k = `${e.pid}:${e.tid}`;
    if (!byThread.has(k)) byThread.set(k, []);
    byThread.get(k).push(e);
  }
  const tasks = [...byThread.values()].sort(
    (a, b) => b.reduce((s, e) => s + e.dur, 0) - a.reduce((s, e) => s + e.dur, 0))[0] ?? [];
  // reduce, not Math.min(...xs): a saturated page has more tasks than the call stack has room for.
  const start = tasks.reduce((m, e) => Math.min(m, e.ts), Infinity);
  // Only the part of each task inside the traced window counts (a peer that cannot keep up
  // has tasks longer than the window).
  let w0 = Infinity, w1 = -Infinity;
  for (const e of events) if (e.ts > 0) { w0 = Math.min(w0, e.ts); w1 = Math.max(w1, e.ts + (e.dur ?? 0)); }
  const inside = (e) => Math.max(0, Math.min(e.ts + e.dur, w1) - Math.max(e.ts, w0)) / (e.dur || 1);
  const busyUs = tasks.reduce((s, e) => s + e.dur * inside(e), 0);
  // Thread time (tdur): what the page itself used, without the time another process held
  // the core (this is a 2-core machine shared with the hub and the load generator).
  const cpuUs = tasks.reduce((s, e) => s + (e.tdur ?? e.dur) * inside(e), 0);
  const perSecondCpu = new Map();
  for (const e of tasks) {
    const sec = Math.floor((e.ts - start) / 1e6);
    perSecondCpu.set(sec, Math.max(perSecondCpu.get(sec) ?? 0, (e.tdur ?? e.dur) / 1000));
  }
  const perSecond = new Map();
  for (const e of tasks) {
    const sec = Math.floor((e.ts - start) / 1e6);
    perSecond.set(sec, Math.max(perSecond.get(sec) ?? 0, e.dur / 1000));
  }
  if (process.env.BENCH_PHASES) {
    const main = tasks[0] ? `${tasks[0].pid}:${tasks[0].tid}` : "";
    const by = new Map();
    let frames = 0;
    for (const e of events) {
      if (e.ph !== "X" || `${e.pid}:${e.tid}` !== main) continue;
      if (e.name === "Layerize") frames++;
      if (!/^(FireAnimationFrame|Layout|PrePaint|Layerize|Commit|UpdateLayoutTree|HandlePostMessage|MinorGC)$/.test(e.name)) continue;
      by.set(e.name, (by.get(e.name) ?? 0) + (e.tdur ?? e.dur) / 1000);
    }
    const paintTop = events.filter((e) => e.ph === "X" && `${e.pid}:${e.tid}` === main && e.name === "Paint" && e.args?.data?.nodeName === "#document");
    by.set("Paint", paintTop.reduce((s, e) => s + (e.tdur ?? e.dur) / 1000, 0));
    // The same for the longest tenth of the tasks (by thread time): what the tail is made of.
    const top = [...tasks].sort((a, b) => (b.tdur ?? b.dur) - (a.tdur ?? a.dur)).slice(0, Math.max(1, Math.floor(tasks.length / 10)));
    const inTop = new Map();
    const mainEv = events.filter((e) => e.ph === "X" && `${e.pid}:${e.tid}` === main && e.name !== "RunTask");
    mainEv.sort((a, b) => a.ts - b.ts);
    for (const t of top)
      for (const e of mainEv) {
        if (e.ts < t.ts) continue;
        if (e.ts > t.ts + t.dur) break;
        if (!/^(FireAnimationFrame|Layout|PrePaint|Layerize|Commit|UpdateLayoutTree|HandlePostMessage|MinorGC|MajorGC|PaintImage|HitTest|ParseHTML|TimerFire)$/.test(e.name) && !(e.name === "Paint" && e.args?.data?.nodeName === "#document")) continue;
        inTop.set(e.name, (inTop.get(e.name) ?? 0) + (e.tdur ?? e.dur) / 1000);
      }
    const topMs = top.reduce((s, t) => s + (t.tdur ?? t.dur) / 1000, 0) / top.length;
    console.error(`  ${mode} longest tenth (${top.length} tasks, ${topMs.toFixed(2)} ms thread each): ` + [...inTop].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${(v / top.length).toFixed(2)}`).join(", "));
    console.error(`  ${mode} phases per rendered frame (${frames} frames): ` + [...by].map(([k, v]) => `${k} ${(v / frames).toFixed(2)}`).join(", ") + ` | total ${([...by].reduce((s, [, v]) => s + v, 0) / frames).toFixed(2)} ms`);
  }
  if (process.env.BENCH_BREAKDOWN) {
    console.error("page stats (ms over the window):", JSON.stringify(Object.fromEntries(Object.keys(s1).map((k) => [k, +(k === "maxFlushMs" ? s1[k] : s1[k] - s0[k]).toFixed(1)]))));
    const main = tasks[0] ? `${tasks[0].pid}:${tasks[0].tid}` : "";
    const by = new Map();
    for (const e of events) {
      if (e.ph !== "X" || `${e.pid}:${e.tid}` !== main || e.name === "RunTask") continue;
      by.set(e.name, (by.get(e.name) ?? 0) + (e.dur ?? 0) / 1000);
    }
    console.error([...by].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join("\n"));
    if (process.env.BENCH_BREAKDOWN === "5") {
      // What else ran (other threads, other Chromium processes) while the longest tasks waited.
      const tname = new Map(), pname = new Map();
      for (const e of events) {
        if (e.ph === "M" && e.name === "thread_name") tname.set(`${e.pid}:${e.tid}`, e.args?.name);
        if (e.ph === "M" && e.name === "process_name") pname.set(e.pid, e.args?.name);
      }
      const tops = events.filter((e) => e.ph === "X" && (e.name === "RunTask" || e.name === "ThreadControllerImpl::RunTask" || e.name.startsWith("ThreadPool_RunTask")));
      const agg = new Map();
      for (const e of events) {
        if (e.ph !== "X") continue;
        const k = `${e.pid}:${e.tid}`;
        const n = `${pname.get(e.pid) ?? e.pid}/${tname.get(k) ?? e.tid}`;
        if (!/CrBrowserMain|DedicatedWorker/.test(n)) continue;
        const key = `${n} ${e.name} ${JSON.stringify(e.args?.src_func ?? e.args?.data?.functionName ?? e.args?.src_file ?? e.args ?? "").slice(0, 120)}`;
        agg.set(key, (agg.get(key) ?? 0) + (e.tdur ?? e.dur) / 1000);
      }
      console.error([...agg].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, v]) => `   ${v.toFixed(0)} ms ${k}`).join("\n"));
      for (const t of [...tasks].sort((a, b) => b.dur - a.dur).slice(0, 5)) {
        const other = new Map();
        for (const e of tops) {
          const k = `${e.pid}:${e.tid}`;
          if (k === main) continue;
          const ov = Math.min(e.ts + e.dur, t.ts + t.dur) - Math.max(e.ts, t.ts);
          if (ov <= 0) continue;
          const n = `${pname.get(e.pid) ?? e.pid}/${tname.get(k) ?? e.tid}`;
          other.set(n, (other.get(n) ?? 0) + (ov / e.dur) * (e.tdur ?? e.dur) / 1000);
        }
        console.error(`long task by wall ${(t.dur / 1000).toFixed(1)} ms (thread ${(t.tdur / 1000).toFixed(1)}); others' thread time in it: ` +
          [...other].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", "));
      }
    }
    if (process.env.BENCH_BREAKDOWN === "4")
      for (const t of [...tasks].sort((a, b) => b.dur - a.dur).slice(0, 5)) {
        console.error(`long task by wall ${(t.dur / 1000).toFixed(1)} ms (thread ${(t.tdur / 1000).toFixed(1)}):`);
        for (const e of events)
          if (e.ph === "X" && `${e.pid}:${e.tid}` === main && e !== t && e.ts >= t.ts && e.ts <= t.ts + t.dur && e.dur > 1000)
            console.error(`   ${e.name} wall ${(e.dur / 1000).toFixed(1)} thread ${((e.tdur ?? 0) / 1000).toFixed(1)}`);
      }
    for (const t of [...tasks].sort((a, b) => (b.tdur ?? b.dur) - (a.tdur ?? a.dur)).slice(0, 4)) {
      const kids = new Map();
      for (const e of events) {
        if (e.ph !== "X" || `${e.pid}:${e.tid}` !== main || e === t || e.ts < t.ts || e.ts > t.ts + t.dur) continue;
        kids.set(e.name, (kids.get(e.name) ?? 0) + (e.tdur ?? e.dur ?? 0) / 1000);
      }
      if (process.env.BENCH_BREAKDOWN === "3")
        for (const e of events)
          if (/^(Paint|Layout|PrePaint|Layerize|FunctionCall|FireAnimationFrame)$/.test(e.name) && `${e.pid}:${e.tid}` === main && e.ts >= t.ts && e.ts <= t.ts + t.dur)
            console.error("  ", e.name, ((e.tdur ?? e.dur) / 1000).toFixed(2), JSON.stringify(e.args?.data ?? e.args?.beginData ?? {}).slice(0, 200));
      if (process.env.BENCH_BREAKDOWN === "2")
        for (const e of events)
          if (e.name === "Layout" && `${e.pid}:${e.tid}` === main && e.ts >= t.ts && e.ts <= t.ts + t.dur)
            console.error("  Layout", ((e.tdur ?? e.dur) / 1000).toFixed(1), JSON.stringify(e.args?.beginData), JSON.stringify(e.args?.endData?.layoutRoots ?? e.args?.endData).slice(0, 300));
      console.error(`long task ${(t.tdur / 1000).toFixed(1)} ms:`, [...kids].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", "));
    }
  }
  return {
    mode,
    busy: Math.min(1, busyUs / 1000 / wall),
    cpu: Math.min(1, cpuUs / 1000 / wall),
    p95LongestCpu: pctl([...perSecondCpu.values()], 95),
    p95Longest: pctl([...perSecond.values()], 95),
    maxTask: tasks.reduce((m, e) => Math.max(m, e.dur / 1000), 0),
    tasks: tasks.length,
    decodeShare: (s1.decodeMs - s0.decodeMs) / wall,
    workerDecodeShare: (s1.workerDecodeMs - s0.workerDecodeMs) / wall,
    drawShare: (s1.flushMs - s0.flushMs) / wall,
    eventsPerS: ((s1.events - s0.events) * 1000) / wall,
    gpuRowsInDom: rows,
    errors: errors.length,
  };
}

const data = mkdtempSync(join(tmpdir(), "hmon-bench-"));
/**
 * With --nice, runs `bin` at the lowest CPU priority, in a session (so a scheduler autogroup) of
 * its own whose nice is 19 too. Linux's autogroups share the CPU equally between sessions
 * whatever the nice values inside them, and Chromium starts in a session of its own: a plain
 * `nice` ranked the hub below this script only, not below the browser.
 */
const niced = (bin, args) =>
  o.nice
    ? ["setsid", ["sh", "-c", 'echo 19 > /proc/self/autogroup || echo "--nice: autogroup nice not set" >&2; exec nice -n 19 "$0" "$@"', bin, ...args]]
    : [bin, args];
const hub = new Proc(
  ...niced(o["hub-bin"] ?? join(rel, "hmonitor-hub"), ["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--interval", "1s", "--data-dir", data]),
  { ...process.env, HMON_TOKEN: TOKEN, HMON_LOG: "warn,hmonitor_hub=info" },
);
const load = [];
let replay = null;
try {
  hub.addr = (await hub.ready(/hub listening on ([0-9.:]+)/))[1];
  hub.url = (p) => `http://${hub.addr}${p}`;
  const l = new Proc(
    ...niced(join(rel, "hmonitor-load"), ["--hub", `ws://${hub.addr}`, "--token", TOKEN, "--agents", String(HOSTS), "--gpus", o.gpus, "--rate", "1",
     "--ramp", "5", "--warmup", "0", "--duration", "3600"]),
    process.env,
  );
  load.push(l);
  await until("every simulated host up", async () => {
    const h = await (await fetch(hub.url("/healthz"))).json();
    return h.hosts_up >= HOSTS;
  }, 60000);
  let server = hub;
  if (o.feed === "replay") {
    // Long enough for the page to load, settle and be measured, from each run's own start.
    const seconds = LOAD_MS / 1000 + 2 + SECONDS + 10;
    console.error(`recording ${seconds} s of the hub's feed…`);
    // Both feeds, at the same time: batched (the page's worker) and one event per message
    // (the naive peer, which has no worker).
    const paths = ["/api/live?batch=250", "/api/live"];
    const recs = await Promise.all(paths.map((p) => record(`ws://${hub.addr}${p}`, seconds)));
    const mb = recs.flat().reduce((s, m) => s + m.data.length, 0) / 1e6;
    console.error(`recorded ${recs.map((r) => r.length).join(" and ")} messages, ${mb.toFixed(0)} MB; load generator stopped`);
    for (const l of load) await l.kill();
    load.length = 0;
    server = replay = await serve(hub.url("/"), Object.fromEntries(paths.map((p, k) => [p, recs[k]])), join(repo, "frontend/dist"));
  }
  const results = [];
  for (let r = 0; r < RUNS; r++) {
    for (const mode of o.modes.split(",")) {
      const m = await measure(server, mode);
      console.error(`run ${r + 1} ${mode}: busy ${(m.busy * 100).toFixed(1)} % (thread time ${(m.cpu * 100).toFixed(1)} %), p95 longest by thread time ${m.p95LongestCpu.toFixed(1)} ms, p95 longest ${m.p95Longest.toFixed(1)} ms, max ${m.maxTask.toFixed(1)} ms, ${m.tasks} tasks, ${m.gpuRowsInDom} GPU rows in DOM, decode ${(m.decodeShare * 100).toFixed(1)} % (worker ${(m.workerDecodeShare * 100).toFixed(1)} %), draw ${(m.drawShare * 100).toFixed(1)} %, ${m.eventsPerS.toFixed(0)} events/s`);
      results.push(m);
    }
  }
  const summary = {};
  for (const mode of o.modes.split(",")) {
    const rs = results.filter((x) => x.mode === mode);
    summary[mode] = {
      busy_pct: +(median(rs.map((x) => x.busy)) * 100).toFixed(1),
      p95_longest_task_ms: +median(rs.map((x) => x.p95Longest)).toFixed(1),
      thread_time_pct: +(median(rs.map((x) => x.cpu)) * 100).toFixed(1),
      p95_longest_task_thread_ms: +median(rs.map((x) => x.p95LongestCpu)).toFixed(1),
      max_task_ms: +median(rs.map((x) => x.maxTask)).toFixed(1),
      decode_pct: +(median(rs.map((x) => x.decodeShare)) * 100).toFixed(1),
      worker_decode_pct: +(median(rs.map((x) => x.workerDecodeShare)) * 100).toFixed(1),
      draw_pct: +(median(rs.map((x) => x.drawShare)) * 100).toFixed(1),
      events_per_s: +median(rs.map((x) => x.eventsPerS)).toFixed(0),
      runs: rs.length,
      page_errors: rs.reduce((s, x) => s + x.errors, 0),
    };
  }
  console.log(JSON.stringify({ hosts: HOSTS, gpus: Number(o.gpus), seconds: SECONDS, feed: o.feed, bundle_gzip_bytes: bundleGzip(), chromium_args: CHROMIUM_ARGS.length, results: summary }, null, 2));
} finally {
  await replay?.close();
  for (const l of load) await l.kill();
  await hub.kill();
  rmSync(data, { recursive: true, force: true });
}
