// What the page knows: each host's latest state from /api/live, and per GPU the recent
// utilization and memory samples for the sparklines (from frames already received).
//
// The feed is read twice over, cheaply: the feed worker (`Feed`) reads what it needs of every
// LiveEvent (`digest.ts`) and sends the page a `Brief` of each host (the figures the summary,
// sorting and filters need, and the sparkline samples) with the event's raw bytes. The page
// decodes those bytes in full only for a host it draws, that is one on screen. At 500 hosts a
// second that is a dozen full decodes a second instead of five hundred.

import { fromBinary } from "@bufbuild/protobuf";
import { ErrorKind, HostStatus, LiveEventSchema, type HostState } from "./gen/gpu_pb";
import { digest, type GpuDigest, type HostDigest } from "./digest";
import type { Filters } from "./filters";

/** Samples kept per GPU: 5 minutes at the default 1 s interval. */
export const SPARK_POINTS = 300;

/** A GPU at or above this temperature (°C) is shown as hot. */
export const HOT_C = 85;

export class Ring {
  readonly t = new Float64Array(SPARK_POINTS);
  readonly util = new Float64Array(SPARK_POINTS);
  readonly mem = new Float64Array(SPARK_POINTS);
  n = 0;
  head = 0;
  push(t: number, util: number | undefined, mem: number | undefined) {
    this.t[this.head] = t;
    this.util[this.head] = util ?? NaN;
    this.mem[this.head] = mem ?? NaN;
    this.head = (this.head + 1) % SPARK_POINTS;
    if (this.n < SPARK_POINTS) this.n++;
  }
  /** Oldest first, as uPlot wants; NaN (unavailable) becomes null, a gap. */
  series(): [number[], (number | null)[], (number | null)[]] {
    const t: number[] = [], u: (number | null)[] = [], m: (number | null)[] = [];
    const start = (this.head - this.n + SPARK_POINTS) % SPARK_POINTS;
    for (let i = 0; i < this.n; i++) {
      const j = (start + i) % SPARK_POINTS;
      t.push(this.t[j] / 1000);
      u.push(Number.isNaN(this.util[j]) ? null : this.util[j]);
      m.push(Number.isNaN(this.mem[j]) ? null : this.mem[j]);
    }
    return [t, u, m];
  }
}

export type GpuState = "free" | "settling" | "held" | "busy" | "hot" | "lost" | "error" | "unknown" | "down";

/**
 * The hub's verdict on one GPU: listed in its host's `free_gpus` ("free"), in its
 * `settling_gpus` ("settling": free by the definition but not idle for the hub's whole settle
 * time yet), or in neither (undefined).
 */
export type Verdict = "free" | "settling" | undefined;

/** A host's verdicts, GPU index → the hub's word on it. */
export function verdicts(s: { freeGpus: readonly number[]; settlingGpus: readonly number[] }): Map<number, Verdict> {
  const v = new Map<number, Verdict>();
  for (const id of s.settlingGpus) v.set(id, "settling");
  // A GPU in both lists (no hub sends that) counts as free: the hub's own answer to "is it free".
  for (const id of s.freeGpus) v.set(id, "free");
  return v;
}

/**
 * The page's own thresholds. They can only narrow the hub's verdict (`HostState.free_gpus`):
 * a GPU the hub does not list as free is never free on the page, whatever they say (one it lists
 * as settling, `HostState.settling_gpus`, is at most settling).
 */
export interface Thresholds {
  /** MiB of memory in use under which a GPU may count as free. */
  memMiB: number;
  /** Utilization percent at or under which a GPU may count as free (the hub's rule: ≤ 5 %). */
  util: number;
}

/** What a GPU's state is read from: a decoded report's GPU (BigInt memory) or a digest's. */
export interface GpuFigures {
  errKind: ErrorKind;
  temp?: number;
  memUsed?: bigint | number;
  utilization?: number;
  hold?: { untilMs: bigint | number };
}

/** Whether a hold is still on at `now` (Unix ms): one whose end has come is over. */
export function holdActive(h: { untilMs: bigint | number } | undefined, now: number): boolean {
  return h !== undefined && Number(h.untilMs) > now;
}

/**
 * A GPU's state on the page. `verdict`: "free" when the hub lists it in its host's `free_gpus`
 * (no compute process, under 1 GiB in use, idle for the hub's settle time, not held, readable);
 * only such a GPU can be free here, and only when it passes the page's thresholds too.
 * "settling" when the hub lists it in `settling_gpus` (all of that but not idle for the whole
 * settle time yet: a job just ended, or the hub just started watching): shown as settling when it
 * passes the page's thresholds, as in use when it does not (it would not be free here either).
 */
export function gpuState(g: GpuFigures, up: boolean, th: Thresholds, verdict: Verdict, now = Date.now()): GpuState {
  if (!up) return "down";
  if (g.errKind === ErrorKind.LOST) return "lost";
  if (g.errKind !== ErrorKind.NONE) return "error";
  if (holdActive(g.hold, now)) return "held";
  if (g.temp !== undefined && g.temp >= HOT_C) return "hot";
  if (g.memUsed === undefined || g.utilization === undefined) return "unknown";
  const passes = Number(g.memUsed) < th.memMiB * 1024 * 1024 && g.utilization <= th.util;
  if (!passes || verdict === undefined) return "busy";
  return verdict;
}

export const STATE_LABEL: Record<GpuState, string> = {
  free: "free",
  settling: "settling",
  held: "held",
  busy: "in use",
  hot: "hot",
  lost: "lost",
  error: "error",
  unknown: "unavailable",
  down: "host down",
};

/** What a state's label means, for its tooltip (where the state itself says nothing more). */
export const STATE_TITLE: Partial<Record<GpuState, string>> = {
  settling: "idle, free once idle for the hub's settle time",
};

/** Per-host figures for the summary, sorting and filtering; recomputed on each change. */
export interface Facts {
  up: boolean;
  free: number;
  /** Not free (yet): idle, but not for the hub's whole settle time. */
  settling: number;
  held: number;
  busy: number;
  gpus: number;
  utilSum: number;
  utilN: number;
  memUsed: number;
  memTotal: number;
  users: Set<string>;
}

export interface Match {
  host: boolean;
  gpus: Set<number> | null; // null: every GPU
}

function lower(s: string | undefined) {
  return (s ?? "").toLowerCase();
}

function hostText(s: HostDigest): string {
  const i = s.info;
  return lower(`${s.id} ${i?.hostname ?? ""} ${s.addr} ${i?.ip ?? ""}`);
}

function gpuText(g: GpuDigest): string {
  let s = lower(`${g.name} ${g.uuid} gpu${g.id}`);
  for (const p of g.procs) s += ` ${lower(p.username)} ${lower(p.basename)} ${lower(p.container)}`;
  if (g.hold) s += ` ${lower(g.hold.username)}`;
  return s;
}

/** The parts of the view's settings that decide which hosts and GPUs are shown. */
export type Selection = Pick<Filters, "q" | "host" | "user" | "mine" | "me" | "free">;

/** Which of a host's GPUs the filters keep; `host: false` hides the whole host. */
export function match(s: HostDigest, f: Selection, th: Thresholds): Match {
  const up = s.status === HostStatus.UP;
  if (f.host) {
    const id = lower(s.id), hn = lower(s.info?.hostname);
    const wanted = f.host.toLowerCase().split(",").map((x) => x.trim()).filter(Boolean);
    if (!wanted.some((w) => id.includes(w) || hn.includes(w))) return { host: false, gpus: null };
  }
  const users: string[] = [];
  if (f.user) users.push(f.user);
  if (f.mine && f.me) users.push(f.me);
  const q = f.q.trim().toLowerCase();
  const hostHit = q !== "" && hostText(s).includes(q);
  if (!users.length && !f.free && (!q || hostHit)) return { host: true, gpus: null };
  const keep = new Set<number>();
  const verdict = verdicts(s), now = Date.now();
  for (const g of s.info?.gpus ?? []) {
    // A user's GPUs: those they run a process on, and those they hold (as the hub's `user=`).
    const holder = holdActive(g.hold, now) ? g.hold?.username : undefined;
    if (users.length && !users.every((u) => holder === u || g.procs.some((p) => p.username === u))) continue;
    if (f.free && gpuState(g, up, th, verdict.get(g.id), now) !== "free") continue;
    if (q && !hostHit && !gpuText(g).includes(q)) continue;
    keep.add(g.id);
  }
  return { host: keep.size > 0, gpus: keep };
}

export function facts(s: HostDigest, th: Thresholds): Facts {
  const up = s.status === HostStatus.UP;
  const f: Facts = { up, free: 0, settling: 0, held: 0, busy: 0, gpus: 0, utilSum: 0, utilN: 0, memUsed: 0, memTotal: 0, users: new Set() };
  const verdict = verdicts(s), now = Date.now();
  for (const g of s.info?.gpus ?? []) {
    f.gpus++;
    const st = gpuState(g, up, th, verdict.get(g.id), now);
    if (st === "free") f.free++;
    else if (st === "settling") f.settling++;
    else if (st === "held") f.held++;
    else if (st === "busy" || st === "hot") f.busy++;
    if (!up) continue;
    if (g.utilization !== undefined) {
      f.utilSum += g.utilization;
      f.utilN++;
    }
    if (g.memUsed !== undefined) f.memUsed += g.memUsed;
    if (g.memTotal !== undefined) f.memTotal += g.memTotal;
    for (const p of g.procs) if (p.username) f.users.add(p.username);
  }
  return f;
}

/** What the page learns of one host from one LiveEvent. */
export type Brief = HostBrief | { kind: "removed"; id: string };

export interface HostBrief {
  kind: "host";
  id: string;
  status: HostStatus;
  lastSeenMs: number;
  f: Facts;
  m: Match;
  /**
   * Sparkline samples of new reports, one block each: the report's time (ms), its number
   * of GPUs, then (GPU index, util %, memory %) per GPU.
   */
  samples: Float64Array | null;
  /** The host's last LiveEvent, for drawing it; null when only the figures changed (new filters). */
  bytes: ArrayBuffer | null;
}

/**
 * Decodes the feed and keeps each host's latest state, so that new filters can be applied to
 * every host without the feed. Runs in the feed worker (or on the page for `?naive=1`).
 */
export class Feed {
  private readonly hosts = new Map<string, HostDigest>();
  constructor(
    private sel: Selection,
    private th: Thresholds,
  ) {}

  private brief(s: HostDigest, bytes: ArrayBuffer | null, samples: Float64Array | null): HostBrief {
    return {
      kind: "host", id: s.id, status: s.status, lastSeenMs: s.lastSeenMs,
      f: facts(s, this.th), m: match(s, this.sel, this.th), samples, bytes,
    };
  }

  /** The brief of one LiveEvent; null when it changes nothing (a reconnect's snapshot again). */
  apply(buf: ArrayBuffer): Brief | null {
    const e = digest(new Uint8Array(buf));
    if (e.case === "host") {
      const s = e.value;
      const old = this.hosts.get(s.id);
      if (old && s.seq === old.seq && s.status === old.status && s.info && old.info &&
          s.info.timestampMs === old.info.timestampMs) return null;
      this.hosts.set(s.id, s);
      let samples: Float64Array | null = null;
      if ((!old || s.seq !== old.seq) && s.status === HostStatus.UP && s.info) {
        const gpus = s.info.gpus;
        samples = new Float64Array(2 + 3 * gpus.length);
        samples[0] = s.info.timestampMs || Date.now();
        samples[1] = gpus.length;
        gpus.forEach((g, k) => {
          samples![2 + 3 * k] = g.id;
          samples![3 + 3 * k] = g.utilization ?? NaN;
          samples![4 + 3 * k] =
            g.memUsed !== undefined && g.memTotal ? (g.memUsed / g.memTotal) * 100 : NaN;
        });
      }
      return this.brief(s, buf, samples);
    }
    if (e.case === "status") {
      const h = this.hosts.get(e.value.id);
      if (!h) return null;
      h.status = e.value.status;
      h.lastSeenMs = e.value.lastSeenMs;
      // The page's copy of the event says the old status: `status` and `lastSeenMs` override it.
      return this.brief(h, null, null);
    }
    if (e.case === "removed") {
      return this.hosts.delete(e.value) ? { kind: "removed", id: e.value } : null;
    }
    return null;
  }

  /** New filters or thresholds: every host's figures again. */
  refilter(sel: Selection, th: Thresholds): Brief[] {
    this.sel = sel;
    this.th = th;
    return [...this.hosts.values()].map((h) => this.brief(h, null, null));
  }
}

export interface HostRec {
  readonly id: string;
  status: HostStatus;
  lastSeenMs: number;
  f: Facts;
  m: Match;
  /** GPU index → samples. */
  rings: Map<number, Ring>;
  /** Bumped on every change, so views know what to redraw. */
  version: number;
  /** The last LiveEvent of this host, decoded when drawn. */
  bytes: ArrayBuffer | null;
  /** Its decoded form, and which bytes it came from (a new report makes it stale). */
  decoded: { from: ArrayBuffer; s: HostState } | null;
}

/** The host's latest report, decoded on first use after each new one. */
export function stateOf(r: HostRec): HostState | undefined {
  if (!r.bytes) return r.decoded?.s;
  if (r.decoded?.from !== r.bytes) {
    const e = fromBinary(LiveEventSchema, new Uint8Array(r.bytes)).event;
    if (e.case !== "host") return undefined;
    r.decoded = { from: r.bytes, s: e.value };
  }
  const s = r.decoded.s;
  s.status = r.status;
  s.lastSeenMs = BigInt(r.lastSeenMs);
  return s;
}

export class Store {
  readonly hosts = new Map<string, HostRec>();
  /** Hosts changed since the views last looked. */
  readonly dirty = new Set<string>();
  /** Host set changed (added/removed), so lists and order need a look. */
  structure = true;

  apply(b: Brief) {
    if (b.kind === "removed") {
      if (this.hosts.delete(b.id)) {
        this.dirty.add(b.id);
        this.structure = true;
      }
      return;
    }
    let rec = this.hosts.get(b.id);
    if (!rec) {
      rec = { id: b.id, status: b.status, lastSeenMs: b.lastSeenMs, f: b.f, m: b.m, rings: new Map(), version: 0, bytes: null, decoded: null };
      this.hosts.set(b.id, rec);
      this.structure = true;
    }
    rec.status = b.status;
    rec.lastSeenMs = b.lastSeenMs;
    rec.f = b.f;
    rec.m = b.m;
    if (b.bytes) rec.bytes = b.bytes;
    rec.version++;
    const x = b.samples;
    if (x) {
      for (let at = 0; at + 1 < x.length; at += 2 + 3 * x[at + 1]) {
        const t = x[at], end = Math.min(x.length, at + 2 + 3 * x[at + 1]);
        for (let k = at + 2; k + 2 < end; k += 3) {
          let r = rec.rings.get(x[k]);
          if (!r) rec.rings.set(x[k], (r = new Ring()));
          r.push(t, x[k + 1], x[k + 2]);
        }
      }
    }
    this.dirty.add(b.id);
  }
}
