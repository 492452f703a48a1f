// The feed worker's reading of a LiveEvent: only the fields a host's brief needs (status,
// figures, users, what search and filters look at, sparkline samples), straight from the
// wire. The generated decoder (`fromBinary`) builds every field of every message, BigInts and
// strings included: ~110 µs for an 8-GPU report, most of the feed worker's time at 500 hosts
// a second, and on a 2-core machine time taken from the page's own frames. This reader skips
// what it does not need (disks, command lines, clocks, …) in a few µs.
//
// The contract stays generated: field numbers and kinds come from the generated schema
// (`./gen/gpu_pb`), looked up by name when this module loads, and a field whose kind differs
// from what this reader expects stops the page at load with a message naming the field.
// frontend/tests/digest.test.mjs checks the digest against `fromBinary` on the same bytes.

import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import {
  ErrorKind,
  GPUInfoSchema,
  GpuHoldSchema,
  HostInfoSchema,
  HostStateSchema,
  HostStatus,
  HostStatusChangeSchema,
  LiveEventSchema,
  ProcInfoSchema,
} from "./gen/gpu_pb";

export interface ProcDigest {
  username?: string;
  basename?: string;
  container?: string;
}

/** Who holds a GPU (`hmonitor wait` / `hold`), and until when (Unix ms, the agent's clock). */
export interface HoldDigest {
  uid: number;
  username: string;
  sinceMs: number;
  untilMs: number;
}

export interface GpuDigest {
  id: number;
  name: string;
  uuid: string;
  memUsed?: number;
  memTotal?: number;
  utilization?: number;
  temp?: number;
  errKind: ErrorKind;
  procs: ProcDigest[];
  hold?: HoldDigest;
}

export interface InfoDigest {
  hostname: string;
  ip: string;
  timestampMs: number;
  gpus: GpuDigest[];
}

export interface HostDigest {
  id: string;
  status: HostStatus;
  lastSeenMs: number;
  addr: string;
  seq: number;
  info?: InfoDigest;
  /** The GPUs the hub judges free (by the one shared definition), by index. */
  freeGpus: number[];
  /** The GPUs that would be free but have not been idle for the hub's settle time yet, by index. */
  settlingGpus: number[];
}

export type EventDigest =
  | { case: "host"; value: HostDigest }
  | { case: "status"; value: { id: string; status: HostStatus; lastSeenMs: number } }
  | { case: "removed"; value: string }
  | { case: undefined };

/** The kinds this reader decodes; anything else in the schema for a read field is a mismatch. */
type Kind = "string" | "u64" | "i32" | "u32" | "enum" | "msg" | "msgs" | "i32s";

function kindOf(f: DescField): Kind | null {
  switch (f.fieldKind) {
    case "scalar":
      switch (f.scalar) {
        case ScalarType.STRING: return "string";
        case ScalarType.UINT64: return "u64";
        case ScalarType.INT32: return "i32";
        case ScalarType.UINT32: return "u32";
        default: return null;
      }
    case "enum":
      return "enum";
    case "message":
      return "msg";
    case "list":
      if (f.listKind === "message") return "msgs";
      return f.listKind === "scalar" && f.scalar === ScalarType.INT32 ? "i32s" : null;
    default:
      return null;
  }
}

/** Field number of `name` in `m`, checked to be of the kind this reader decodes it as. */
function num(m: DescMessage, name: string, kind: Kind): number {
  const f = m.fields.find((x) => x.localName === name);
  if (!f) throw new Error(`digest: ${m.typeName} has no field ${name}`);
  if (kindOf(f) !== kind) throw new Error(`digest: ${m.typeName}.${name} is not ${kind} any more; update src/digest.ts`);
  return f.number;
}

const N = {
  ev: {
    host: num(LiveEventSchema, "host", "msg"),
    status: num(LiveEventSchema, "status", "msg"),
    removed: num(LiveEventSchema, "removed", "string"),
  },
  change: {
    id: num(HostStatusChangeSchema, "id", "string"),
    status: num(HostStatusChangeSchema, "status", "enum"),
    lastSeenMs: num(HostStatusChangeSchema, "lastSeenMs", "u64"),
  },
  host: {
    id: num(HostStateSchema, "id", "string"),
    status: num(HostStateSchema, "status", "enum"),
    lastSeenMs: num(HostStateSchema, "lastSeenMs", "u64"),
    addr: num(HostStateSchema, "addr", "string"),
    info: num(HostStateSchema, "info", "msg"),
    seq: num(HostStateSchema, "seq", "u64"),
    freeGpus: num(HostStateSchema, "freeGpus", "i32s"),
    settlingGpus: num(HostStateSchema, "settlingGpus", "i32s"),
  },
  info: {
    gpus: num(HostInfoSchema, "gpus", "msgs"),
    ip: num(HostInfoSchema, "ip", "string"),
    hostname: num(HostInfoSchema, "hostname", "string"),
    timestampMs: num(HostInfoSchema, "timestampMs", "u64"),
  },
  gpu: {
    id: num(GPUInfoSchema, "id", "i32"),
    memUsed: num(GPUInfoSchema, "memUsed", "u64"),
    memTotal: num(GPUInfoSchema, "memTotal", "u64"),
    utilization: num(GPUInfoSchema, "utilization", "i32"),
    temp: num(GPUInfoSchema, "temp", "u32"),
    name: num(GPUInfoSchema, "name", "string"),
    procs: num(GPUInfoSchema, "procs", "msgs"),
    uuid: num(GPUInfoSchema, "uuid", "string"),
    errKind: num(GPUInfoSchema, "errKind", "enum"),
    hold: num(GPUInfoSchema, "hold", "msg"),
  },
  hold: {
    uid: num(GpuHoldSchema, "uid", "i32"),
    username: num(GpuHoldSchema, "username", "string"),
    sinceMs: num(GpuHoldSchema, "sinceMs", "u64"),
    untilMs: num(GpuHoldSchema, "untilMs", "u64"),
  },
  proc: {
    username: num(ProcInfoSchema, "username", "string"),
    basename: num(ProcInfoSchema, "basename", "string"),
    container: num(ProcInfoSchema, "container", "string"),
  },
};

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Wire-format reading over one buffer; every read is bounds-checked (the feed is untrusted). */
class Wire {
  pos: number;
  constructor(
    readonly b: Uint8Array,
    pos = 0,
    public end = b.length,
  ) {
    this.pos = pos;
  }

  /** A varint's low 32 bits (unsigned), the rest read and dropped. */
  u32(): number {
    let v = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const c = this.b[this.pos++];
      if (shift < 32) v |= (c & 0x7f) << shift;
      if (c < 0x80) return v >>> 0;
    }
    throw new Error("varint longer than 10 bytes");
  }

  /** A varint as a number: exact up to 2^53 (times and byte counts here are far below). */
  u64(): number {
    let lo = 0, hi = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const c = this.b[this.pos++];
      if (shift < 28) lo |= (c & 0x7f) << shift;
      else if (shift === 28) {
        lo |= (c & 0x0f) << 28;
        hi = (c & 0x7f) >> 4;
      } else hi |= (c & 0x7f) << (shift - 32);
      if (c < 0x80) return (hi >>> 0) * 4294967296 + (lo >>> 0);
    }
    throw new Error("varint longer than 10 bytes");
  }

  /** A length-delimited field's extent, checked against the enclosing message. */
  len(): number {
    const n = this.u32();
    if (n > this.end - this.pos) throw new Error("length past the end of the message");
    return n;
  }

  str(): string {
    const n = this.len(), b = this.b, start = this.pos;
    this.pos += n;
    // Users, commands and short names: a few ASCII characters, cheaper made here than by a
    // decoder call. Longer ones (container ids, UUIDs) and any non-ASCII go to the decoder.
    if (n <= 16) {
      let s = "";
      for (let i = start; i < start + n; i++) {
        const c = b[i];
        if (c >= 0x80) return utf8.decode(b.subarray(start, start + n));
        s += String.fromCharCode(c);
      }
      return s;
    }
    return utf8.decode(b.subarray(start, start + n));
  }

  /** A nested message's reader; this one moves past it. */
  sub(): Wire {
    const n = this.len();
    const w = new Wire(this.b, this.pos, this.pos + n);
    this.pos += n;
    return w;
  }

  skip(wt: number) {
    switch (wt) {
      case 0:
        this.u32();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2: {
        // Not `this.pos += this.len()`: that adds to the position from before the length.
        const n = this.len();
        this.pos += n;
        return;
      }
      case 5:
        this.pos += 4;
        break;
      default:
        // Groups (3, 4) are not in this contract.
        throw new Error(`unexpected wire type ${wt}`);
    }
    if (this.pos > this.end) throw new Error("field past the end of the message");
  }
}

/** Wire types a field of each kind arrives with. */
const VARINT = 0, LEN = 2;

function proc(w: Wire): ProcDigest {
  const p: ProcDigest = {};
  while (w.pos < w.end) {
    const t = w.u32(), f = t >>> 3, wt = t & 7;
    if (wt === LEN && f === N.proc.username) p.username = w.str();
    else if (wt === LEN && f === N.proc.basename) p.basename = w.str();
    else if (wt === LEN && f === N.proc.container) p.container = w.str();
    else w.skip(wt);
  }
  return p;
}

/** A hold; `h`, when given, is one read before for the same field (protobuf merges them). */
function hold(w: Wire, h: HoldDigest = { uid: 0, username: "", sinceMs: 0, untilMs: 0 }): HoldDigest {
  while (w.pos < w.end) {
    const t = w.u32(), f = t >>> 3, wt = t & 7;
    if (wt === VARINT && f === N.hold.uid) h.uid = w.u32() | 0;
    else if (wt === VARINT && f === N.hold.sinceMs) h.sinceMs = w.u64();
    else if (wt === VARINT && f === N.hold.untilMs) h.untilMs = w.u64();
    else if (wt === LEN && f === N.hold.username) h.username = w.str();
    else w.skip(wt);
  }
  return h;
}

function gpu(w: Wire): GpuDigest {
  const g: GpuDigest = { id: 0, name: "", uuid: "", errKind: ErrorKind.NONE, procs: [] };
  while (w.pos < w.end) {
    const t = w.u32(), f = t >>> 3, wt = t & 7;
    if (wt === VARINT) {
      if (f === N.gpu.id) g.id = w.u32() | 0;
      else if (f === N.gpu.memUsed) g.memUsed = w.u64();
      else if (f === N.gpu.memTotal) g.memTotal = w.u64();
      else if (f === N.gpu.utilization) g.utilization = w.u32() | 0;
      else if (f === N.gpu.temp) g.temp = w.u32();
      else if (f === N.gpu.errKind) g.errKind = w.u32() | 0;
      else w.skip(wt);
    } else if (wt === LEN) {
      if (f === N.gpu.procs) g.procs.push(proc(w.sub()));
      else if (f === N.gpu.name) g.name = w.str();
      else if (f === N.gpu.uuid) g.uuid = w.str();
      else if (f === N.gpu.hold) g.hold = hold(w.sub(), g.hold);
      else w.skip(wt);
    } else w.skip(wt);
  }
  return g;
}

function info(w: Wire): InfoDigest {
  const i: InfoDigest = { hostname: "", ip: "", timestampMs: 0, gpus: [] };
  while (w.pos < w.end) {
    const t = w.u32(), f = t >>> 3, wt = t & 7;
    if (wt === LEN && f === N.info.gpus) i.gpus.push(gpu(w.sub()));
    else if (wt === LEN && f === N.info.hostname) i.hostname = w.str();
    else if (wt === LEN && f === N.info.ip) i.ip = w.str();
    else if (wt === VARINT && f === N.info.timestampMs) i.timestampMs = w.u64();
    else w.skip(wt);
  }
  return i;
}

function host(w: Wire): HostDigest {
  const h: HostDigest = { id: "", status: HostStatus.UNSPECIFIED, lastSeenMs: 0, addr: "", seq: 0, freeGpus: [], settlingGpus: [] };
  while (w.pos < w.end) {
    const t = w.u32(), f = t >>> 3, wt = t & 7;
    if (wt === LEN && f === N.host.id) h.id = w.str();
    else if (wt === LEN && f === N.host.addr) h.addr = w.str();
    else if (wt === LEN && f === N.host.info) h.info = info(w.sub());
    else if (wt === VARINT && f === N.host.status) h.status = w.u32() | 0;
    else if (wt === VARINT && f === N.host.lastSeenMs) h.lastSeenMs = w.u64();
    else if (wt === VARINT && f === N.host.seq) h.seq = w.u64();
    // A repeated int32 comes packed (one length-delimited run of varints), or one varint each.
    else if (wt === VARINT && f === N.host.freeGpus) h.freeGpus.push(w.u32() | 0);
    else if (wt === LEN && f === N.host.freeGpus) {
      const p = w.sub();
      while (p.pos < p.end) h.freeGpus.push(p.u32() | 0);
    } else if (wt === VARINT && f === N.host.settlingGpus) h.settlingGpus.push(w.u32() | 0);
    else if (wt === LEN && f === N.host.settlingGpus) {
      const p = w.sub();
      while (p.pos < p.end) h.settlingGpus.push(p.u32() | 0);
    } else w.skip(wt);
  }
  return h;
}

function change(w: Wire): { id: string; status: HostStatus; lastSeenMs: number } {
  const c = { id: "", status: HostStatus.UNSPECIFIED, lastSeenMs: 0 };
  while (w.pos < w.end) {
    const t = w.u32(), f = t >>> 3, wt = t & 7;
    if (wt === LEN && f === N.change.id) c.id = w.str();
    else if (wt === VARINT && f === N.change.status) c.status = w.u32() | 0;
    else if (wt === VARINT && f === N.change.lastSeenMs) c.lastSeenMs = w.u64();
    else w.skip(wt);
  }
  return c;
}

/** The parts of one LiveEvent a brief needs. Throws on bytes that are not a LiveEvent. */
export function digest(bytes: Uint8Array): EventDigest {
  const w = new Wire(bytes);
  // A oneof: the last of its fields on the wire wins.
  let ev: EventDigest = { case: undefined };
  while (w.pos < w.end) {
    const t = w.u32(), f = t >>> 3, wt = t & 7;
    if (wt === LEN && f === N.ev.host) ev = { case: "host", value: host(w.sub()) };
    else if (wt === LEN && f === N.ev.status) ev = { case: "status", value: change(w.sub()) };
    else if (wt === LEN && f === N.ev.removed) ev = { case: "removed", value: w.str() };
    else w.skip(wt);
  }
  return ev;
}
