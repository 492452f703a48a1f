// The feed worker's cost per LiveEvent: the generated decoder (`fromBinary`, what the worker
// used before) against its reader of only what a brief needs (src/digest.ts), on the same
// bytes, interleaved pass by pass; medians of the passes after a warm-up.
//
//   node bench/digest.mjs [--events 500] [--passes 12]
//
// The events are shaped as hmonitor-load's (hub/bench/src/bin/hmonitor-load.rs): 8 H200s, 16
// processes with 64-character container ids, 4 disks, the host's facts; about 3.4 KB each.

import { parseArgs } from "node:util";
import { join } from "node:path";
import { bundleForNode, src } from "../tests/bundle.mjs";

const { values: o } = parseArgs({
  options: { events: { type: "string", default: "500" }, passes: { type: "string", default: "12" } },
});

const { m, done } = await bundleForNode(
  "digest-bench",
  `export { digest } from ${JSON.stringify(join(src, "digest.ts"))};
export { Feed } from ${JSON.stringify(join(src, "model.ts"))};
export * from ${JSON.stringify(join(src, "gen/gpu_pb.ts"))};
export { create, toBinary, fromBinary } from "@bufbuild/protobuf";
`,
);

const MIB = 1n << 20n;
const USERS = ["alice", "bchen", "cdiaz", "dkim", "eli", "fwang", "gupta", "hana"];
const NAMES = ["python3", "torchrun", "python", "jupyter-kernel"];
const hex = (n) => Array.from({ length: n }, (_, i) => "0123456789abcdef"[(i * 7 + n) % 16]).join("");

function event(i) {
  const gpus = Array.from({ length: 8 }, (_, g) => ({
    id: g, name: "NVIDIA H200", uuid: `GPU-${hex(8)}-${hex(4)}-${hex(4)}-${hex(4)}-${hex(12)}`,
    pciBusId: `00000000:${(0x18 + 0x10 * g).toString(16)}:00.0`,
    memUsed: BigInt(20000 + ((i * 37 + g * 11) % 120000)) * MIB, memTotal: 143771n * MIB,
    utilization: (i + g * 13) % 101, temp: 35 + ((i + g) % 45), memReserved: 519n * MIB,
    memUtilization: (i * 3 + g) % 101, powerDrawMw: 80000 + ((i * 997 + g) % 620000), powerLimitMw: 700000,
    pstate: 0, clockSmMhz: 1980, clockMemMhz: 3201, procs: [],
  }));
  for (let p = 0; p < 16; p++)
    gpus[p % 8].procs.push({
      pid: 100000 + p * 37, uid: 1000 + (p % USERS.length), username: USERS[p % USERS.length],
      basename: NAMES[p % NAMES.length], expiration: BigInt(86400 + ((i * 31 + p) % 600000)),
      utilization: (i + p) % 101, mem: BigInt(1000 + ((i + p * 17) % 60000)) * MIB, kind: 1,
      container: hex(64), containerRuntime: "docker", startedMs: 1795848200920n, memUtilization: p % 101,
    });
  const disk = (device, mount, fstype, totalGiB, usedGiB) => ({
    device, mount, fstype, total: BigInt(totalGiB) << 30n, used: BigInt(usedGiB) << 30n, avail: BigInt(totalGiB - usedGiB) << 30n,
  });
  const id = `load-${i}`;
  const info = {
    id, gpus, hostname: id, ip: "10.0.0.1", driverVersion: "580.95.05", cudaVersion: "13.0", cpuUtil: (i % 10000) / 100,
    memUsed: BigInt(200 + (i % 1500)) << 30n, memTotal: 2015n << 30n, load: { one: 1.5, five: 2.25, fifteen: 3 },
    uptimeS: 3456789n, kernel: "6.8.0-60-generic", agentVersion: "0.1.0", timestampMs: 1795934604000n + BigInt(i),
    cpuCount: 224, os: "Ubuntu 24.04.2 LTS",
    disks: [disk("/dev/nvme0n1p2", "/", "ext4", 1800, 420), disk("/dev/md0", "/data", "xfs", 30000, 17250),
      disk("nfs.lab:/export/home", "/home", "nfs4", 200000, 151000), disk("/dev/nvme1n1", "/scratch", "ext4", 7000, 2900)],
  };
  const host = { id, status: 1, lastSeenMs: 1795934604324n + BigInt(i), addr: `10.0.0.1:${40000 + i}`, source: 1, info, intervalMs: 1000, seq: BigInt(i + 1) };
  return m.toBinary(m.LiveEventSchema, m.create(m.LiveEventSchema, { event: { case: "host", value: host }, sentMs: 1795934604400n }));
}

const events = Array.from({ length: Number(o.events) }, (_, i) => event(i));
const bytes = events.reduce((s, e) => s + e.length, 0) / events.length;
const sel = { q: "", host: "", user: "", mine: false, me: "", free: false };
const th = { memMiB: 1024, util: 5 };

const modes = {
  // What the feed worker did per event before: decode it in full.
  fromBinary: () => { for (const e of events) m.fromBinary(m.LiveEventSchema, e); },
  // What it does now: read what a brief needs.
  digest: () => { for (const e of events) m.digest(e); },
  // And all of a brief (figures, filter match, samples) from that reading.
  "Feed.apply (digest + brief)": () => { const f = new m.Feed(sel, th); for (const e of events) f.apply(e.buffer); },
};
const times = Object.fromEntries(Object.keys(modes).map((k) => [k, []]));
const passes = Number(o.passes);
for (let p = 0; p < passes + 3; p++)
  for (const [k, run] of Object.entries(modes)) {
    const t = performance.now();
    run();
    // The first three passes warm the JIT up.
    if (p >= 3) times[k].push(((performance.now() - t) * 1000) / events.length);
  }
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const med = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
console.log(`${events.length} LiveEvents of ${Math.round(bytes)} bytes; µs per event, median of ${passes} interleaved passes:`);
for (const [k, v] of Object.entries(med)) console.log(`  ${k.padEnd(28)} ${v.toFixed(1)} µs  (${(med.fromBinary / v).toFixed(1)}× fromBinary's speed)`);
done();
