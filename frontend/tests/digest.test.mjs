// The feed worker's reader (src/digest.ts) against the generated decoder (`fromBinary`) on the
// same bytes: every field it reads must come out as the generated decoder reads it, whatever
// is present, absent, non-ASCII, long, unknown to it, or cut short.
//
// No browser: the TypeScript is bundled for Node (tests/bundle.mjs).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { bundleForNode, src } from "./bundle.mjs";

let m, done;
before(async () => {
  ({ m, done } = await bundleForNode(
    "digest-test",
    `export { digest } from ${JSON.stringify(join(src, "digest.ts"))};
export * from ${JSON.stringify(join(src, "gen/gpu_pb.ts"))};
export { create, toBinary, fromBinary } from "@bufbuild/protobuf";
`,
  ));
});
after(() => done?.());

/** A small deterministic generator (the same cases on every run). */
function rng(seed) {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return {
    int: (n) => Math.floor(next() * n),
    maybe: (p = 0.5) => next() < p,
    pick: (xs) => xs[Math.floor(next() * xs.length)],
  };
}

const WORDS = ["alice", "bchen", "python3", "torchrun", "NVIDIA H200", "ünïcødé", "用户", "🙂 emoji", "", "x".repeat(17), "y".repeat(200),
  "2d1ce28856d20e5e572a15ed48b3fdc232b911499417aab917a8ec88e0da0bac"];

function hostState(r, id) {
  const gpus = [];
  for (let k = 0, n = r.int(10); k < n; k++) {
    const procs = [];
    for (let j = 0, np = r.int(4); j < np; j++)
      procs.push({
        pid: r.int(1e6),
        uid: r.maybe() ? r.int(70000) : undefined,
        username: r.maybe(0.8) ? r.pick(WORDS) : undefined,
        basename: r.maybe(0.8) ? r.pick(WORDS) : undefined,
        container: r.maybe() ? r.pick(WORDS) : undefined,
        cmdline: r.maybe() ? r.pick(WORDS) : undefined,
        mem: r.maybe(0.8) ? BigInt(r.int(2 ** 30)) * 64n : undefined,
        utilization: r.maybe() ? r.int(101) : undefined,
      });
    gpus.push({
      id: r.maybe(0.9) ? k : -1 - r.int(5), // negative int32: a ten-byte varint on the wire
      name: r.pick(WORDS),
      uuid: r.maybe() ? `GPU-${r.int(1e9)}-${r.pick(WORDS)}` : "",
      memUsed: r.maybe(0.8) ? BigInt(r.int(2 ** 30)) * 1024n : undefined,
      memTotal: r.maybe(0.8) ? 150754820096n + BigInt(r.int(1000)) : undefined,
      utilization: r.maybe(0.8) ? r.int(101) : undefined,
      temp: r.maybe(0.8) ? r.int(120) : undefined,
      fanspeed: r.maybe() ? r.int(101) : undefined,
      powerDrawMw: r.maybe() ? r.int(800000) : undefined,
      errKind: r.maybe(0.8) ? 0 : r.int(4),
      err: r.maybe(0.8) ? "" : r.pick(WORDS),
      warnings: r.maybe() ? ["power: not supported"] : [],
      procs,
      hold: r.maybe(0.3)
        ? { uid: r.maybe(0.9) ? r.int(70000) : -1 - r.int(5), username: r.maybe(0.8) ? r.pick(WORDS) : "",
            sinceMs: BigInt(1795934604000 + r.int(1e6)), untilMs: r.maybe(0.9) ? BigInt(1795934604000 + r.int(1e7)) : 0n }
        : undefined,
    });
  }
  return {
    id,
    status: r.int(4),
    lastSeenMs: BigInt(1795934604324 + r.int(1e6)),
    addr: r.maybe() ? `10.0.${r.int(255)}.${r.int(255)}:${r.int(65535)}` : "",
    source: r.int(4),
    seq: BigInt(r.int(2 ** 31)) * BigInt(1 + r.int(1000)),
    intervalMs: 1000,
    // The hub's verdict: any of the GPUs' ids (negative ones too), in any order.
    freeGpus: gpus.filter(() => r.maybe()).map((g) => g.id).reverse(),
    // Those that would be free but have not settled yet, likewise.
    settlingGpus: gpus.filter(() => r.maybe(0.3)).map((g) => g.id).reverse(),
    info: r.maybe(0.9)
      ? {
          id,
          hostname: r.pick(WORDS),
          ip: r.maybe() ? "192.168.1.7" : "",
          gpus,
          disks: [{ device: "/dev/sda1", mount: "/", used: 1n << 40n, total: 1n << 41n }],
          cpuUtil: r.maybe() ? 12.5 : undefined,
          load: r.maybe() ? { one: 1.5, five: 2, fifteen: 0.25 } : undefined,
          timestampMs: BigInt(1795934604000 + r.int(1e6)),
          stale: r.maybe(0.1),
          errKind: r.int(4),
        }
      : undefined,
  };
}

function liveEvent(r, i) {
  const k = r.int(10);
  const event =
    k < 7 ? { case: "host", value: hostState(r, `h${i}`) }
    : k < 9 ? { case: "status", value: { id: `h${i}`, status: r.int(4), lastSeenMs: BigInt(r.int(2 ** 40)) } }
    : { case: "removed", value: r.pick(WORDS) };
  return { event, sentMs: BigInt(r.int(2 ** 40)) };
}

/** What the digest should hold, read off the generated decoder's message. */
function expected(e) {
  const ev = e.event;
  if (ev.case === "removed") return ev;
  if (ev.case === "status") return { case: "status", value: { id: ev.value.id, status: ev.value.status, lastSeenMs: Number(ev.value.lastSeenMs) } };
  if (ev.case !== "host") return { case: undefined };
  const s = ev.value, i = s.info;
  const n = (x) => (x === undefined ? undefined : Number(x));
  const drop = (o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  return {
    case: "host",
    value: drop({
      id: s.id, status: s.status, lastSeenMs: Number(s.lastSeenMs), addr: s.addr, seq: Number(s.seq), freeGpus: s.freeGpus,
      settlingGpus: s.settlingGpus,
      info: i && {
        hostname: i.hostname, ip: i.ip, timestampMs: Number(i.timestampMs),
        gpus: i.gpus.map((g) => drop({
          id: g.id, name: g.name, uuid: g.uuid, memUsed: n(g.memUsed), memTotal: n(g.memTotal),
          utilization: g.utilization, temp: g.temp, errKind: g.errKind,
          procs: g.procs.map((p) => drop({ username: p.username, basename: p.basename, container: p.container })),
          hold: g.hold && { uid: g.hold.uid, username: g.hold.username, sinceMs: Number(g.hold.sinceMs), untilMs: Number(g.hold.untilMs) },
        })),
      },
    }),
  };
}

test("the digest of an event reads as the generated decoder reads it", () => {
  const r = rng(7);
  let hosts = 0, gpus = 0;
  for (let i = 0; i < 400; i++) {
    const msg = m.create(m.LiveEventSchema, liveEvent(r, i));
    const bytes = m.toBinary(m.LiveEventSchema, msg);
    const want = expected(m.fromBinary(m.LiveEventSchema, bytes));
    assert.deepEqual(m.digest(bytes), want, `event ${i}`);
    if (want.case === "host") {
      hosts++;
      gpus += want.value.info?.gpus.length ?? 0;
    }
  }
  // The generator did make the cases this test is about.
  assert.ok(hosts > 200 && gpus > 800, `${hosts} hosts, ${gpus} GPUs`);
});

test("fields the digest does not know are skipped, whatever their wire type", () => {
  const r = rng(11);
  const msg = m.create(m.LiveEventSchema, liveEvent(r, 0));
  msg.event = { case: "host", value: m.create(m.HostStateSchema, hostState(r, "with-unknowns")) };
  // A newer hub's fields: varint, fixed64, length-delimited and fixed32, at every level read.
  const unknown = [
    { no: 900, wireType: 0, data: new Uint8Array([0x96, 0x01]) },
    { no: 901, wireType: 1, data: new Uint8Array(8).fill(0xff) },
    { no: 902, wireType: 2, data: new Uint8Array([3, 0x61, 0x62, 0x63]) },
    { no: 903, wireType: 5, data: new Uint8Array(4).fill(0x80) },
  ];
  msg.$unknown = unknown;
  msg.event.value.$unknown = unknown;
  if (msg.event.value.info) {
    msg.event.value.info.$unknown = unknown;
    for (const g of msg.event.value.info.gpus) {
      g.$unknown = unknown;
      for (const p of g.procs) p.$unknown = unknown;
      if (g.hold) g.hold.$unknown = unknown;
    }
  }
  const bytes = m.toBinary(m.LiveEventSchema, msg);
  assert.deepEqual(m.digest(bytes), expected(m.fromBinary(m.LiveEventSchema, bytes)));
});

/** A LiveEvent of one host (`host`, HostState bytes) with `extra` bytes after them. */
function hostEvent(host, extra) {
  const body = new Uint8Array([...host, ...extra]);
  const len = [];
  for (let n = body.length; ; n >>>= 7) {
    if (n < 0x80) { len.push(n); break; }
    len.push((n & 0x7f) | 0x80);
  }
  return new Uint8Array([0x0a, ...len, ...body]);
}

/** `field` as plain varints: 3, then -1 (a ten-byte varint). */
function unpacked(field) {
  const tag = field << 3;
  return [tag, 0x03, tag, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
}

test("free_gpus is read packed or one varint each, as protobuf allows", () => {
  const r = rng(5);
  const state = m.create(m.HostStateSchema, hostState(r, "unpacked"));
  state.freeGpus = [2];
  state.settlingGpus = [];
  const packed = m.toBinary(m.HostStateSchema, state);
  // Field 10 as plain varints after the packed run.
  const field = m.HostStateSchema.fields.find((f) => f.localName === "freeGpus").number;
  assert.equal(field, 10);
  const bytes = hostEvent(packed, unpacked(field));
  const want = expected(m.fromBinary(m.LiveEventSchema, bytes));
  assert.deepEqual(want.value.freeGpus, [2, 3, -1]);
  assert.deepEqual(want.value.settlingGpus, []);
  assert.deepEqual(m.digest(bytes), want);
});

test("settling_gpus is read packed or one varint each, apart from free_gpus", () => {
  const r = rng(6);
  const state = m.create(m.HostStateSchema, hostState(r, "settling"));
  state.freeGpus = [0];
  state.settlingGpus = [5];
  const packed = m.toBinary(m.HostStateSchema, state);
  // Field 11 as plain varints after the packed run.
  const field = m.HostStateSchema.fields.find((f) => f.localName === "settlingGpus").number;
  assert.equal(field, 11);
  const bytes = hostEvent(packed, unpacked(field));
  const want = expected(m.fromBinary(m.LiveEventSchema, bytes));
  assert.deepEqual(want.value.settlingGpus, [5, 3, -1]);
  assert.deepEqual(want.value.freeGpus, [0]);
  assert.deepEqual(m.digest(bytes), want);
});

test("cut-short or corrupt bytes are refused with an error, never read past the end", () => {
  const r = rng(3);
  let refused = 0;
  for (let i = 0; i < 20; i++) {
    const bytes = m.toBinary(m.LiveEventSchema, m.create(m.LiveEventSchema, liveEvent(r, i)));
    for (let cut = 0; cut < bytes.length; cut += 1 + Math.floor(bytes.length / 97)) {
      const part = bytes.slice(0, cut);
      let want;
      try {
        want = expected(m.fromBinary(m.LiveEventSchema, part));
      } catch {
        want = null;
      }
      if (want === null) {
        assert.throws(() => m.digest(part), Error, `event ${i} cut at ${cut} of ${bytes.length}`);
        refused++;
      } else assert.deepEqual(m.digest(part), want, `event ${i} cut at ${cut}`);
    }
  }
  assert.ok(refused > 100, `${refused} cut events refused`);
  // A varint that never ends, a length past the end, a group (not in this contract).
  for (const bad of [[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], [0x0a, 0x7f, 0x00], [0x0b, 0x0c]])
    assert.throws(() => m.digest(new Uint8Array(bad)), Error, JSON.stringify(bad));
});
