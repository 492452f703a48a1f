// What the page knows: each host's latest state from /api/live, and per GPU the recent
// utilization and memory samples for the sparklines (from frames already received).

import { fromBinary } from "@bufbuild/protobuf";
import {
  ErrorKind,
  HostStatus,
  LiveEventSchema,
  type GPUInfo,
  type HostState,
  type LiveEvent,
} from "./gen/gpu_pb";

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

export interface HostRec {
  s: HostState;
  /** GPU index → samples. */
  rings: Map<number, Ring>;
  /** Bumped on every change, so views know what to redraw. */
  version: number;
}

export type GpuState = "free" | "busy" | "hot" | "lost" | "error" | "unknown" | "down";

export interface Thresholds {
  /** MiB of memory in use under which a GPU may count as free. */
  memMiB: number;
  /** Utilization percent under which a GPU may count as free. */
  util: number;
}

export function gpuState(g: GPUInfo, up: boolean, th: Thresholds): GpuState {
  if (!up) return "down";
  if (g.errKind === ErrorKind.LOST) return "lost";
  if (g.errKind !== ErrorKind.NONE) return "error";
  if (g.temp !== undefined && g.temp >= HOT_C) return "hot";
  if (g.memUsed === undefined || g.utilization === undefined) return "unknown";
  const free = Number(g.memUsed) < th.memMiB * 1024 * 1024 && g.utilization < th.util;
  return free ? "free" : "busy";
}

export const STATE_LABEL: Record<GpuState, string> = {
  free: "free",
  busy: "in use",
  hot: "hot",
  lost: "lost",
  error: "error",
  unknown: "unavailable",
  down: "host down",
};

export class Store {
  readonly hosts = new Map<string, HostRec>();
  /** Hosts changed since the views last looked. */
  readonly dirty = new Set<string>();
  /** Host set changed (added/removed), so lists and order need a look. */
  structure = true;

  /** Decodes on this thread (the `?naive=1` peer and tests of the decoder). */
  applyBytes(bytes: Uint8Array) {
    this.apply(fromBinary(LiveEventSchema, bytes));
  }

  apply(ev: LiveEvent) {
    const e = ev.event;
    if (e.case === "host") {
      const s = e.value;
      let rec = this.hosts.get(s.id);
      if (!rec) {
        rec = { s, rings: new Map(), version: 0 };
        this.hosts.set(s.id, rec);
        this.structure = true;
      } else if (s.seq === rec.s.seq && s.status === rec.s.status && s.info && rec.s.info &&
                 s.info.timestampMs === rec.s.info.timestampMs) {
        // The same frame again (a reconnect's snapshot): nothing to draw.
        return;
      }
      const fresh = s.seq !== rec.s.seq || rec.version === 0;
      rec.s = s;
      rec.version++;
      if (fresh && s.status === HostStatus.UP && s.info) {
        const t = Number(s.info.timestampMs) || Date.now();
        for (const g of s.info.gpus) {
          let r = rec.rings.get(g.id);
          if (!r) rec.rings.set(g.id, (r = new Ring()));
          const memPct =
            g.memUsed !== undefined && g.memTotal ? (Number(g.memUsed) / Number(g.memTotal)) * 100 : undefined;
          r.push(t, g.utilization, memPct);
        }
      }
      this.dirty.add(s.id);
    } else if (e.case === "status") {
      const rec = this.hosts.get(e.value.id);
      if (!rec) return;
      rec.s.status = e.value.status;
      rec.s.lastSeenMs = e.value.lastSeenMs;
      rec.version++;
      this.dirty.add(rec.s.id);
    } else if (e.case === "removed") {
      if (this.hosts.delete(e.value)) {
        this.dirty.add(e.value);
        this.structure = true;
      }
    }
  }
}
