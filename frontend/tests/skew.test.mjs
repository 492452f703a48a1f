// A host whose clock is off: an agent stamping its samples 3 minutes ahead (within the hub's
// 5-minute limit, so they are taken) shows "clock 3 min ahead" on its card; one 10 years
// ahead is refused and never appears. The agents here are raw WebSocket clients speaking the
// protobuf contract, since a real agent stamps with this machine's (correct) clock.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { bundleForNode, src } from "./bundle.mjs";
import { AGENT_TOKEN, launch, startHub, until, VIEWER_TOKEN } from "./harness.mjs";

let pb, done;

/** A raw agent for `id` whose samples are stamped `aheadMs` off; resolves once it is open. */
async function rawAgent(hub, id, aheadMs) {
  const ws = new WebSocket(`ws://${hub.addr}/api/agent`, { headers: { authorization: `Bearer ${AGENT_TOKEN}` } });
  await new Promise((ok, fail) => { ws.on("open", ok); ws.on("error", fail); });
  const { create, toBinary, AgentMessageSchema } = pb;
  const send = (msg) => ws.send(toBinary(AgentMessageSchema, create(AgentMessageSchema, { msg })));
  send({ case: "hello", value: { protocolVersion: 1, hostId: id, intervalMs: 500 } });
  let seq = 0n;
  const timer = setInterval(() => {
    seq += 1n;
    send({
      case: "snapshot",
      value: { seq, sampleMs: BigInt(Date.now() + aheadMs), info: { id, hostname: id, gpus: [{ id: 0, name: "NVIDIA H200", uuid: `GPU-${id}` }] } },
    });
  }, 500);
  ws.on("close", () => clearInterval(timer));
  return { close: () => { clearInterval(timer); ws.close(); } };
}

describe("a host whose clock is off", () => {
  let hub, ahead, future, browser, page;
  const errors = [];

  before(async () => {
    ({ m: pb, done } = await bundleForNode(
      "skew-test",
      `export * from ${JSON.stringify(join(src, "gen/gpu_pb.ts"))};
export { create, toBinary } from "@bufbuild/protobuf";
`,
    ));
    hub = await startHub();
    ahead = await rawAgent(hub, "ahead", 3 * 60 * 1000);
    future = await rawAgent(hub, "future", 10 * 365 * 24 * 3600 * 1000);
    browser = await launch();
    page = await browser.newPage();
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
  });

  after(async () => {
    ahead?.close();
    future?.close();
    await browser?.close();
    await hub?.kill();
    done?.();
  });

  test("shows how far ahead it is, and a sample years ahead never reaches the page", async () => {
    await page.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await until("the host whose clock is ahead", async () => (await page.$$("#host-ahead")).length === 1);
    await until("its skew on the card", async () =>
      /clock 3 min ahead/.test((await page.textContent("#host-ahead .skew")) ?? ""));
    assert.equal((await page.$$("#host-future")).length, 0, "a sample ten years ahead was shown");
    assert.deepEqual(errors, []);
  });
});
