// A viewer token with every character that needs encoding somewhere (`+ / = % & ;`): the page
// opened with it (encoded, as one pastes it from a mail) must show live hosts over the
// WebSocket and load history charts, which means the hub read the same token from `?token=`,
// from the `hmon_token` cookie and on the WebSocket upgrade.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { launch, Scenario, startAgent, startHub, until } from "./harness.mjs";

const AWKWARD = "a+b/c=d%e&f;g";
const GiB = 1024 ** 3;

describe("an awkward viewer token", () => {
  let hub, agent, browser, page;
  const errors = [];

  before(async () => {
    hub = await startHub({ extra: ["--viewer-token", AWKWARD] });
    const sc = new Scenario({
      gpus: [{ name: "NVIDIA H200", memory_total: 150754820096, memory_used: 10 * GiB, utilization_gpu: 42, temperature: 50 }],
    });
    agent = startAgent(hub, "odd", sc);
    browser = await launch();
    page = await browser.newPage();
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
    await until("stored samples", async () => {
      const r = await fetch(hub.url(`/api/history?id=odd/gpu0&metric=util`), { headers: { authorization: `Bearer ${AWKWARD}` } });
      return r.ok && (await r.json()).t.length >= 3;
    }, 30000);
  });

  after(async () => {
    await browser?.close();
    await agent?.kill();
    await hub?.kill();
  });

  test("the page, its live feed and its history charts all take it", async () => {
    await page.goto(hub.url(`/?token=${encodeURIComponent(AWKWARD)}`));
    await until("the host over the live WebSocket", async () => (await page.$$("#gpu-odd-0")).length === 1);
    // The hub set it as an HttpOnly cookie, percent-encoded, and took it out of the URL.
    const cookies = await page.context().cookies();
    const c = cookies.find((c) => c.name === "hmon_token");
    assert.equal(decodeURIComponent(c?.value ?? ""), AWKWARD);
    assert.equal(c?.httpOnly, true);
    assert.equal(c?.sameSite, "Strict");
    assert.equal(new URL(page.url()).searchParams.get("token"), null, "no token in the URL");
    assert.equal(await page.evaluate(() => document.cookie.includes("hmon_token")), false, "no script reads it");
    await page.click("#gpu-odd-0 td.name");
    await until("the util chart from history", async () =>
      (await page.$eval('#details figure.chart[data-metric="util"]', (f) => f.dataset.state)) === "ok");
    assert.match(await page.textContent('#details figure.chart[data-metric="util"] figcaption'), /last 42 %/);
    assert.deepEqual(errors, []);
  });

  test("a near miss is refused everywhere", async () => {
    const near = encodeURIComponent("a+b/c=d%e&f;h");
    assert.equal((await fetch(hub.url(`/api/hosts?token=${near}`))).status, 401);
    assert.equal((await fetch(hub.url("/api/hosts"), { headers: { cookie: `hmon_token=${near}` } })).status, 401);
    // Unencoded, the query would end at `&`: not the token either.
    assert.equal((await fetch(hub.url(`/api/hosts?token=${AWKWARD}`))).status, 401);
    assert.equal((await fetch(hub.url(`/api/hosts?token=${encodeURIComponent(AWKWARD)}`))).status, 200);
  });
});
