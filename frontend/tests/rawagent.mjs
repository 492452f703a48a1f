// Raw agents: WebSocket clients speaking the protobuf contract directly, for the tests whose
// hosts say what a real agent on the NVML stand-in cannot (a hold, a lost GPU, a host that stops
// reporting). Kept apart from harness.mjs, which needs no bundle of the page's sources.

import { join } from "node:path";
import WebSocket from "ws";
import { bundleForNode, src } from "./bundle.mjs";
import { AGENT_TOKEN } from "./harness.mjs";

/** The generated contract with `create` and `toBinary`, bundled under `name` (`{ m, done }`). */
export function bundleContract(name) {
  return bundleForNode(
    name,
    `export * from ${JSON.stringify(join(src, "gen/gpu_pb.ts"))};
export { create, toBinary } from "@bufbuild/protobuf";
`,
  );
}

/**
 * A raw agent for `id` sending a snapshot of `gpus()` (GPUInfo fields) every 300 ms, encoded with
 * `pb` (from bundleContract); resolves once its socket is open.
 */
export async function rawAgent(pb, hub, id, gpus) {
  const ws = new WebSocket(`ws://${hub.addr}/api/agent`, { headers: { authorization: `Bearer ${AGENT_TOKEN}` } });
  await new Promise((ok, fail) => { ws.on("open", ok); ws.on("error", fail); });
  const { create, toBinary, AgentMessageSchema } = pb;
  const send = (msg) => ws.send(toBinary(AgentMessageSchema, create(AgentMessageSchema, { msg })));
  send({ case: "hello", value: { protocolVersion: 1, hostId: id, hostname: id, intervalMs: 300 } });
  let seq = 0n;
  const frame = () => {
    seq += 1n;
    const now = BigInt(Date.now());
    send({ case: "snapshot", value: { seq, sampleMs: now, info: { id, hostname: id, timestampMs: now, gpus: gpus() } } });
  };
  frame();
  const timer = setInterval(frame, 300);
  ws.on("close", () => clearInterval(timer));
  return { close: () => { clearInterval(timer); ws.close(); } };
}
