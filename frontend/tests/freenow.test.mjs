// Free GPUs, judged once by the hub: `GET /api/gpus`, the page's "Free now" panel (free GPUs
// per host, a CUDA_VISIBLE_DEVICES line to copy, held GPUs marked), and the cards' states from
// `HostState.free_gpus` and `GPUInfo.hold`. The agents are raw WebSocket clients speaking the
// protobuf contract, since a hold and a lost GPU are easiest to say directly. The hub runs with
// `--free-settle 0`: it need not have watched a GPU for 30 s before calling it free; except in
// the last block, which runs it with the default 30 s to see an idle GPU settling.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { api, artifacts, launch, startHub, until, VIEWER_TOKEN } from "./harness.mjs";
import { bundleContract, rawAgent } from "./rawagent.mjs";

const GiB = 1024 ** 3;
const H200 = 150754820096;
const LOST = 1; // ErrorKind.LOST
const COMPUTE = 1; // ProcKind.COMPUTE

let pb, done;

before(async () => {
  ({ m: pb, done } = await bundleContract("freenow-test"));
});
after(() => done?.());

/** An idle GPU of `host`. */
function idle(host, id) {
  return { id, name: "NVIDIA H200", uuid: `GPU-${host}-${id}-0000-0000-000000000000`, memTotal: BigInt(H200), memUsed: 2n * 1024n * 1024n, utilization: 0, temp: 33 };
}

describe("free GPUs: the hub's verdict, the Free now panel and the cards", () => {
  let hub, a, b, browser, context, page;
  const errors = [];
  const until4min = BigInt(Date.now() + 4 * 60 * 1000);

  /** Host "a": 0 idle, 1 running bob's job, 2 idle but held by alice, 3 lost. */
  const hostA = () => [
    idle("a", 0),
    { ...idle("a", 1), memUsed: BigInt(5 * GiB), utilization: 87,
      procs: [{ pid: 4242, uid: 1001, username: "bob", basename: "train.py", mem: BigInt(5 * GiB), kind: COMPUTE, expiration: 600n }] },
    { ...idle("a", 2), hold: { uid: 1002, username: "alice", sinceMs: BigInt(Date.now() - 1000), untilMs: until4min } },
    { id: 3, name: "NVIDIA H200", uuid: "GPU-a-3-0000-0000-000000000000", memTotal: BigInt(H200), errKind: LOST, err: "GPU is lost (needs a reset)" },
  ];
  let hostB = () => [idle("b", 0), idle("b", 1)];

  const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());
  /** The panel's hosts: id → { free: [index…], held: [text…], line }. */
  const panel = () =>
    page.$$eval("#freenow .fn-host", (hs) =>
      Object.fromEntries(
        hs.map((h) => [
          h.dataset.host,
          {
            free: [...h.querySelectorAll(".fn-gpu")].map((g) => Number(g.dataset.gpu)),
            held: [...h.querySelectorAll(".fn-held")].map((g) => `${g.dataset.gpu}: ${g.textContent}`),
            line: h.querySelector(".fn-line")?.textContent ?? null,
          },
        ]),
      ),
    );

  before(async () => {
    hub = await startHub({ extra: ["--free-settle", "0"] });
    a = await rawAgent(pb, hub, "a", hostA);
    b = await rawAgent(pb, hub, "b", () => hostB());
    browser = await launch();
    context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
    page = await context.newPage();
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
  });

  after(async () => {
    a?.close();
    b?.close();
    await browser?.close();
    await hub?.kill();
  });

  test("GET /api/gpus: only free GPUs with free=1, held and busy ones with their reason", async () => {
    await until("both hosts' GPUs", async () => (await api(hub, "/api/gpus")).body.gpus?.length === 6);
    assert.equal((await api(hub, "/api/gpus?free=1", { token: null })).status, 401, "behind the viewer gate");
    const free = (await api(hub, "/api/gpus?free=1&settle=0")).body;
    assert.ok(free.generated_ms > 0);
    assert.deepEqual(free.gpus.map((r) => `${r.host}/${r.index}`).sort(), ["a/0", "b/0", "b/1"]);
    assert.ok(free.gpus.every((r) => r.state === "free" && r.reason === "" && r.host_up === true));
    const all = Object.fromEntries((await api(hub, "/api/gpus?settle=0")).body.gpus.map((r) => [`${r.host}/${r.index}`, r]));
    assert.equal(all["a/1"].state, "busy");
    assert.deepEqual(all["a/1"].users, ["bob"]);
    assert.equal(all["a/1"].procs[0].user, "bob");
    assert.equal(all["a/2"].state, "held");
    assert.equal(all["a/2"].held_by.username, "alice");
    assert.equal(all["a/2"].held_by.until_ms, Number(until4min));
    assert.equal(all["a/3"].state, "lost");
    assert.equal(all["b/1"].uuid, "GPU-b-1-0000-0000-000000000000");
  });

  test("the Free now panel lists the free GPUs per host, with the line to copy, and the held one", async () => {
    await page.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await until("both hosts in the panel", async () => Object.keys(await panel()).length === 2);
    const p = await panel();
    // Most free GPUs first.
    assert.deepEqual(Object.keys(p), ["b", "a"]);
    assert.deepEqual(p.b.free, [0, 1]);
    assert.equal(p.b.line, "CUDA_VISIBLE_DEVICES=GPU-b-0-0000-0000-000000000000,GPU-b-1-0000-0000-000000000000");
    assert.deepEqual(p.b.held, []);
    // GPU 1 runs bob's job and GPU 3 is lost: neither is listed; GPU 2 is, as held.
    assert.deepEqual(p.a.free, [0]);
    assert.equal(p.a.line, "CUDA_VISIBLE_DEVICES=GPU-a-0-0000-0000-000000000000");
    assert.equal(p.a.held.length, 1);
    assert.match(p.a.held[0], /^2: GPU 2 · NVIDIA H200 · held by alice for \d+ min$/);
    assert.match(await text('#freenow .fn-host[data-host="b"] .fn-gpu[data-gpu="0"]'), /^GPU 0 · NVIDIA H200 · 140\.4 GiB free$/);
    assert.match(await text("#freenow .fn-count"), /^3 GPUs free on 2 hosts$/);
    assert.equal(await page.isVisible("#freenow .fn-none"), false);
    assert.equal(await page.isVisible("#freenow .fn-error"), false);
  });

  test("the cards: free from the hub's list, held by alice for the minutes left, bob's GPU in use", async () => {
    await until("a's GPU rows", async () => (await page.$$("#host-a tr.gpu")).length === 4);
    await until("a/2 held", async () => (await text("#gpu-a-2 .state")) === "held");
    assert.match(await text("#gpu-a-2 + tr.procs .gpuhold"), /^held by alice for \d+ min$/);
    assert.equal(await page.isVisible("#gpu-a-2 + tr.procs .gpuhold"), true);
    assert.match(await page.getAttribute("#gpu-a-2 .state", "title"), /held by alice for \d+ min/);
    assert.equal(await text("#gpu-a-0 .state"), "free");
    assert.equal(await text("#gpu-a-1 .state"), "in use");
    assert.equal(await text("#gpu-a-3 .state"), "lost");
    await until("b's GPUs free", async () => (await page.$$("#host-b tr.gpu.s-free")).length === 2);
    // Held has a colour of its own: neither free's nor in use's.
    const bg = (sel) => page.$eval(sel, (e) => getComputedStyle(e).backgroundImage + getComputedStyle(e).backgroundColor);
    const [held, free, busy] = [await bg("#gpu-a-2 .state"), await bg("#gpu-a-0 .state"), await bg("#gpu-a-1 .state")];
    assert.notEqual(held, free);
    assert.notEqual(held, busy);
    await until("the summary", async () => /3 GPUs free, 1 held, 1 busy, 6 total/.test(await text("#summary")));
    // "only free GPUs" keeps what the hub lists, never bob's or alice's.
    await page.check("#f-free");
    await until("only the free GPUs", async () =>
      JSON.stringify(await page.$$eval("main tr.gpu", (rs) => rs.filter((r) => !r.hidden).map((r) => r.id))) ===
      '["gpu-a-0","gpu-b-0","gpu-b-1"]');
    // The page's thresholds only narrow the hub's verdict: 30 GiB and 100 % do not make bob's
    // GPU free.
    await page.fill("#f-fmem", "30720");
    await page.fill("#f-futil", "100");
    await page.waitForTimeout(500);
    assert.equal(await text("#gpu-a-1 .state"), "in use");
    assert.deepEqual((await panel()).a.free, [0]);
    // Nothing passes 0 MiB: no free GPU anywhere, and the panel says so.
    await page.fill("#f-fmem", "0");
    await until("no GPU is free", async () => (await page.isVisible("#freenow .fn-none")) && (await panel()).b === undefined);
    assert.equal(await text("#freenow .fn-none"), "no GPU is free");
    assert.deepEqual(Object.keys(await panel()), ["a"], "the held GPU is still listed");
    await page.fill("#f-fmem", "1024");
    await page.fill("#f-futil", "5");
    await page.uncheck("#f-free");
    await until("the panel again", async () => (await panel()).b?.free.length === 2);
    await page.screenshot({ path: join(artifacts, "freenow.png"), fullPage: true });
  });

  test("copy puts the host's line on the clipboard", async () => {
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: hub.url("") });
    await page.click('#freenow .fn-host[data-host="b"] .fn-copybtn');
    await until("copied", async () => (await text('#freenow .fn-host[data-host="b"] .fn-copybtn')) === "copied");
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()),
      "CUDA_VISIBLE_DEVICES=GPU-b-0-0000-0000-000000000000,GPU-b-1-0000-0000-000000000000");
  });

  test("the panel follows the cluster, and says so when the hub cannot be asked", async () => {
    // b's GPU 1 gets a job: gone from the panel and from b's line at the next refresh (5 s).
    hostB = () => [idle("b", 0), { ...idle("b", 1), memUsed: BigInt(3 * GiB), utilization: 40 }];
    await until("b/1 gone", async () => JSON.stringify((await panel()).b?.free) === "[0]", 12000);
    assert.equal((await panel()).b.line, "CUDA_VISIBLE_DEVICES=GPU-b-0-0000-0000-000000000000");
    // Without the viewer's cookie the hub answers 401: an error line, no stale list.
    await context.clearCookies();
    await until("the 401 line", async () => (await page.isVisible("#freenow .fn-error")) && /401/.test(await text("#freenow .fn-error")), 12000);
    assert.deepEqual(await panel(), {});
    assert.equal(await page.isVisible("#freenow .fn-none"), false);
    // The cookie back; then the network fails.
    const back = await context.newPage();
    await back.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await back.close();
    await until("the list again", async () => (await panel()).a?.free.length === 1, 12000);
    assert.equal(await page.isVisible("#freenow .fn-error"), false);
    // The panel asks `api/gpus?state=free,held`: matched by path, whatever the query.
    const gpusApi = (u) => u.pathname === "/api/gpus";
    await page.route(gpusApi, (r) => r.abort("connectionrefused"));
    await until("the network line", async () => /cannot reach the hub/.test(await text("#freenow .fn-error")), 12000);
    await page.unroute(gpusApi);
    await until("the list once more", async () => (await panel()).a?.free.length === 1, 12000);
  });

  test("no console errors", () => {
    // The aborted request is the test's own doing.
    assert.deepEqual(errors.filter((e) => !/api\/gpus|ERR_CONNECTION_REFUSED|ERR_FAILED|401/.test(e)), []);
  });
});

describe("untrusted names in the Free now panel", () => {
  let hub, agent, browser, page;
  const EVIL_HOST = "<img src=x onerror=window.__xss=1>";
  const EVIL_USER = "<img src=y onerror=window.__xss=2>";

  before(async () => {
    hub = await startHub({ extra: ["--free-settle", "0"] });
    agent = await rawAgent(pb, hub, EVIL_HOST, () => [
      { ...idle("x", 0), name: "<b>H200</b>" },
      { ...idle("x", 1), hold: { uid: 7, username: EVIL_USER, sinceMs: BigInt(Date.now()), untilMs: BigInt(Date.now() + 600000) } },
    ]);
    browser = await launch();
    page = await browser.newPage();
  });

  after(async () => {
    agent?.close();
    await browser?.close();
    await hub?.kill();
  });

  test("a host name with markup is shown as text, never run", async () => {
    await page.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await until("the host in the panel", async () => (await page.$$("#freenow .fn-host")).length === 1);
    const h = await page.$eval("#freenow .fn-host", (e) => ({
      host: e.dataset.host, id: e.querySelector(".fn-hid").textContent, gpu: e.querySelector(".fn-gpu").textContent,
      held: e.querySelector(".fn-held").textContent, imgs: e.querySelectorAll("img, b").length,
    }));
    assert.equal(h.host, EVIL_HOST);
    assert.equal(h.id, EVIL_HOST);
    assert.equal(h.gpu, "GPU 0 · <b>H200</b> · 140.4 GiB free");
    assert.match(h.held, /^GPU 1 · NVIDIA H200 · held by <img src=y onerror=window\.__xss=2> for 10 min$/);
    assert.equal(h.imgs, 0);
    // The card too.
    await until("the card", async () => (await page.$$("main article.host")).length === 1);
    assert.equal(await page.$eval("main article.host .hid", (e) => e.textContent), EVIL_HOST);
    await until("the hold on the card", async () =>
      /^held by <img src=y onerror=window\.__xss=2> for 10 min$/.test(await page.$eval("main article.host tr.gpu[data-gpu='1'] + tr.procs .gpuhold", (e) => e.textContent)));
    assert.equal(await page.$$eval("main article.host img:not(.sparkimg), main article.host b", (es) => es.length), 0);
    await page.waitForTimeout(300);
    assert.equal(await page.evaluate(() => window.__xss), undefined, "markup from the feed ran");
  });
});

describe("settling GPUs: idle, but not for the hub's whole settle time yet", () => {
  // The hub's default settle time (30 s, no `--free-settle`): a GPU it has just started watching
  // is idle but not free yet. The test is over well before 30 s.
  let hub, agent, browser, page;
  const errors = [];
  const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());

  before(async () => {
    hub = await startHub();
    // 0 idle (settling), 1 running bob's job, 2 idle but held by alice.
    agent = await rawAgent(pb, hub, "s", () => [
      idle("s", 0),
      { ...idle("s", 1), memUsed: BigInt(5 * GiB), utilization: 87,
        procs: [{ pid: 4242, uid: 1001, username: "bob", basename: "train.py", mem: BigInt(5 * GiB), kind: COMPUTE, expiration: 600n }] },
      { ...idle("s", 2), hold: { uid: 1002, username: "alice", sinceMs: BigInt(Date.now() - 1000), untilMs: BigInt(Date.now() + 4 * 60 * 1000) } },
    ]);
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
  });

  after(async () => {
    agent?.close();
    await browser?.close();
    await hub?.kill();
  });

  test("the hub calls it settling, not free", async () => {
    await until("s's GPUs", async () => (await api(hub, "/api/gpus")).body.gpus?.length === 3);
    const all = Object.fromEntries((await api(hub, "/api/gpus")).body.gpus.map((r) => [r.index, r.state]));
    assert.deepEqual(all, { 0: "settling", 1: "busy", 2: "held" });
    assert.deepEqual((await api(hub, "/api/gpus?free=1")).body.gpus, []);
  });

  test("its card says settling (not in use), and the Free now panel does not list it", async () => {
    await page.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await until("s's GPU rows", async () => (await page.$$("#host-s tr.gpu")).length === 3);
    await until("s/0 settling", async () => (await text("#gpu-s-0 .state")) === "settling");
    assert.match(await page.getAttribute("#gpu-s-0 .state", "title"), /^idle, free once idle for the hub's settle time$/);
    assert.equal(await page.getAttribute("#gpu-s-0", "class"), "gpu s-settling");
    assert.equal(await text("#gpu-s-1 .state"), "in use");
    assert.equal(await text("#gpu-s-2 .state"), "held");
    // Not free in the summary: said apart.
    await until("the summary", async () => /0 GPUs free, 1 settling, 1 held, 1 busy, 3 total/.test(await text("#summary")));
    // The panel: the held GPU, no free one.
    await until("the panel", async () => (await page.$$("#freenow .fn-host")).length === 1);
    assert.deepEqual(await page.$$eval("#freenow .fn-gpu", (es) => es.map((e) => e.textContent)), []);
    assert.deepEqual(await page.$$eval("#freenow .fn-held", (es) => es.map((e) => e.dataset.gpu)), ["2"]);
    assert.equal(await page.isVisible("#freenow .fn-line"), false);
    assert.equal(await text("#freenow .fn-count"), "none free");
    assert.equal(await page.isVisible("#freenow .fn-none"), true);
    // A look of its own, in both themes: neither free's, in use's nor held's.
    const look = (sel) => page.$eval(sel, (e) => {
      const c = getComputedStyle(e);
      return `${c.backgroundImage} ${c.backgroundColor} ${c.color} ${c.boxShadow}`;
    });
    for (const colorScheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme });
      const [settling, busy, held] = [await look("#gpu-s-0 .state"), await look("#gpu-s-1 .state"), await look("#gpu-s-2 .state")];
      assert.notEqual(settling, busy, colorScheme);
      assert.notEqual(settling, held, colorScheme);
      // Free: a badge of that class, made for comparison.
      const free = await page.evaluate(() => {
        const s = document.createElement("span");
        s.className = "state s-free";
        document.body.append(s);
        const c = getComputedStyle(s), v = `${c.backgroundImage} ${c.backgroundColor} ${c.color} ${c.boxShadow}`;
        s.remove();
        return v;
      });
      assert.notEqual(settling, free, colorScheme);
    }
    await page.emulateMedia({ colorScheme: "light" });
    await page.screenshot({ path: join(artifacts, "settling.png"), fullPage: true });
  });

  test("only free GPUs: a settling one is not kept", async () => {
    await page.check("#f-free");
    await until("no GPU shown", async () =>
      (await page.$$eval("main tr.gpu", (rs) => rs.filter((r) => !r.hidden).length)) === 0);
    await page.uncheck("#f-free");
    await until("s/0 again", async () => !(await page.$eval("#gpu-s-0", (r) => r.hidden)));
  });

  test("the compact view's chip says settling too", async () => {
    await page.selectOption("#f-view", "table");
    await until("s/0's chip", async () => (await page.$$("#chip-s-0")).length === 1);
    assert.equal(await page.getAttribute("#chip-s-0", "class"), "chip s-settling");
    assert.match(await page.getAttribute("#chip-s-0", "title"), /^GPU 0 NVIDIA H200: settling \(idle, free once idle for the hub's settle time\), /);
    await page.selectOption("#f-view", "cards");
  });

  test("no console errors", () => {
    assert.deepEqual(errors, []);
  });
});
