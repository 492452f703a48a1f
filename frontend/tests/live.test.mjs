// The live page in a real browser (Debian's Chromium) against a real hub with real agents on
// the NVML stand-in. The hub wants a viewer token, so every page is opened with `?token=`.
// The hub calls an idle GPU free at once (`--free-settle 0`), not after watching it for 30 s.

import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { artifacts, job, launch, Scenario, startAgent, startHub, until, VIEWER_TOKEN } from "./harness.mjs";

const GiB = 1024 ** 3;
const me = userInfo().username;

function alpha(trainPid, util = 97) {
  return {
    driver_version: "580.95.05",
    gpus: [
      { name: "NVIDIA H200", memory_total: 150754820096, memory_used: 20 * GiB, utilization_gpu: util, temperature: 58,
        power_usage_mw: 612000, power_limit_mw: 700000,
        processes: [{ pid: trainPid, used_memory: 20 * GiB, sm_util: 95 }] },
      { name: "NVIDIA H200", memory_total: 150754820096, memory_used: 0, utilization_gpu: 0, temperature: 31 },
      { name: "NVIDIA H200", memory_total: 150754820096, lost: true },
    ],
  };
}

function beta(nbPid) {
  return {
    gpus: [
      { name: "NVIDIA A100-SXM4-80GB", memory_total: 80 * GiB, memory_used: 40 * GiB, utilization_gpu: 64, temperature: 91,
        fan_speed: 77, power_usage_mw: 301000, power_limit_mw: 400000,
        processes: [{ pid: nbPid, used_memory: 40 * GiB, sm_util: 60 }] },
    ],
  };
}

describe("live page", () => {
  let hub, browser, page, train, notebook, scA, scB, scG;
  const agents = {};
  const errors = [];

  const open = async (query = "") => {
    const sep = query ? "&" : "";
    await page.goto(hub.url(`/?${query}${sep}token=${VIEWER_TOKEN}`));
  };
  /** Ids of host cards in the view, in order. */
  const cards = () => page.$$eval("main article.host", (as) => as.map((a) => a.dataset.host));
  /** `host/index` of GPU rows shown. */
  const gpuRows = () =>
    page.$$eval("main article.host tr.gpu", (rs) => rs.filter((r) => !r.hidden).map((r) => `${r.dataset.host}/${r.dataset.gpu}`));
  const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());
  const param = (k) => new URL(page.url()).searchParams.get(k);

  before(async () => {
    train = job("train-llm");
    notebook = job("jupyter-kern");
    hub = await startHub({ extra: ["--free-settle", "0"] });
    scA = new Scenario(alpha(train.pid));
    scB = new Scenario(beta(notebook.pid));
    scG = new Scenario({ no_driver: true });
    agents.alpha = startAgent(hub, "alpha", scA);
    agents.beta = startAgent(hub, "beta", scB);
    agents.gamma = startAgent(hub, "gamma", scG);
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1500, height: 1200 } });
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
    await open();
  });

  after(async () => {
    await browser?.close();
    for (const a of Object.values(agents)) await a.kill();
    await hub?.kill();
    train?.kill();
    notebook?.kill();
  });

  test("shows every host, GPU and process of the scenario, with its numbers", async () => {
    await until("three hosts with their GPUs", async () => (await gpuRows()).length === 4 && (await cards()).length === 3);
    assert.deepEqual(await cards(), ["alpha", "beta", "gamma"]);
    assert.deepEqual(await gpuRows(), ["alpha/0", "alpha/1", "alpha/2", "beta/0"]);
    await until("processes", async () => (await page.$$("li.proc")).length === 2);

    const row = "#gpu-alpha-0";
    assert.equal(await text(`${row} .name`), "NVIDIA H200");
    assert.equal(await text(`${row} .state`), "in use");
    assert.equal(await text(`${row} .mem .bartxt`), "20.0 GiB / 140.4 GiB");
    assert.equal(await text(`${row} .util`), "97 %");
    assert.equal(await text(`${row} .temp`), "58 °C");
    assert.equal(await text(`${row} .power`), "612 / 700 W");
    // A fanless GPU: unavailable, not 0.
    assert.equal(await text(`${row} .fan`), "n/a");
    assert.equal(await text("#gpu-alpha-1 .state"), "free");
    assert.equal(await text("#gpu-alpha-2 .state"), "lost");
    assert.match(await text("#gpu-alpha-2 + tr.procs .gpuerr"), /lost/i);
    assert.equal(await text("#gpu-beta-0 .state"), "hot");
    assert.equal(await text("#gpu-beta-0 .fan"), "77 %");
    assert.equal(await text("#gpu-beta-0 .mem .bartxt"), "40.0 GiB / 80.0 GiB");

    const procs = await page.$$eval("li.proc", (ls) => ls.map((l) => l.textContent));
    assert.ok(procs.some((p) => p.startsWith(`${me} · train-llm · 20.0 GiB · `) && p.includes("SM 95 %")), procs.join("\n"));
    assert.ok(procs.some((p) => p.startsWith(`${me} · jupyter-kern · 40.0 GiB · `)), procs.join("\n"));

    assert.match(await text("#host-alpha .facts"), /driver 580\.95\.05 · CUDA 13\.0/);
    assert.match(await text("#host-alpha .addr"), /^127\.0\.0\.1/);
    assert.match(await text("#host-gamma .err"), /driver/i);
    assert.equal(await text("#host-alpha .status"), "up");

    await until("the summary", async () => (await text("#summary")).includes("3 hosts up, 0 down"));
    const sum = await text("#summary");
    assert.match(sum, /1 GPUs free, 2 busy, 4 total/);
    // The lost GPU's memory cannot be read: it counts in neither figure.
    assert.match(sum, /GPU memory 60\.0 GiB \/ 360\.8 GiB in use/);
    assert.match(sum, /1 active user\b/);

    const shot = join(artifacts, "live-page.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10000, "screenshot written");
  });

  test("a scenario change appears without reload, and sparklines draw from frames", async () => {
    await page.evaluate(() => (window.__sameDocument = true));
    scA.write(alpha(train.pid, 13));
    await until("the new utilization", async () => (await text("#gpu-alpha-0 .util")) === "13 %");
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
    await until("a sparkline", async () =>
      (await page.$eval("#gpu-alpha-0 td.spark img", (i) => i.src.startsWith("data:image/png") && i.naturalWidth > 0)));
  });

  test("the host filter narrows to matching hosts and is kept in the URL", async () => {
    await page.fill("#f-host", "beta");
    await until("only beta", async () => JSON.stringify(await cards()) === '["beta"]');
    assert.equal(param("host"), "beta");
    assert.equal(param("token"), null, "the token is a cookie, never in the URL");
    await page.fill("#f-host", "");
    await until("all hosts again", async () => (await cards()).length === 3);
    assert.equal(param("host"), null);
  });

  test("the user filter keeps the GPUs that user holds", async () => {
    await page.fill("#f-user", me);
    await until("my GPUs", async () => JSON.stringify(await gpuRows()) === '["alpha/0","beta/0"]');
    assert.deepEqual(await cards(), ["alpha", "beta"]);
    assert.equal(param("user"), me);
    await page.fill("#f-user", "nobody-at-all");
    await until("nothing", async () => (await cards()).length === 0);
    assert.equal(await page.isVisible("#empty"), true);
    await page.fill("#f-user", "");
    await until("all hosts again", async () => (await cards()).length === 3);
  });

  test("only mine uses the remembered name, across a reload", async () => {
    await page.fill("#f-me", me);
    await page.check("#f-mine");
    await until("my GPUs", async () => JSON.stringify(await gpuRows()) === '["alpha/0","beta/0"]');
    assert.equal(param("mine"), "1");
    assert.equal(param("me"), null, "the name is the user's own, not part of a shared view");
    await page.reload();
    await until("my GPUs after reload", async () => JSON.stringify(await gpuRows()) === '["alpha/0","beta/0"]');
    assert.equal(await page.inputValue("#f-me"), me);
    assert.equal(await page.isChecked("#f-mine"), true);
    await page.uncheck("#f-mine");
    await until("all GPUs again", async () => (await gpuRows()).length === 4);
  });

  test("only free GPUs, with thresholds the user sets", async () => {
    await page.check("#f-free");
    await until("the free GPU", async () => JSON.stringify(await gpuRows()) === '["alpha/1"]');
    assert.equal(param("free"), "1");
    // 30 GiB and 100 %: the page's thresholds only narrow the hub's verdict, so alpha's busy
    // GPU (a process, 20 GiB, 13 %) stays in use, and beta's hot one too.
    await page.fill("#f-fmem", "30720");
    await page.fill("#f-futil", "100");
    await until("the thresholds in the URL", async () => param("fmem") === "30720" && param("futil") === "100");
    await page.waitForTimeout(300);
    assert.equal(JSON.stringify(await gpuRows()), '["alpha/1"]');
    assert.equal(await text("#gpu-alpha-0 .state"), "in use");
    // A shared link opens the same view, for a lab member with their own token: the link itself
    // carries none.
    assert.equal(param("token"), null);
    const other = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
    other.on("pageerror", (e) => errors.push(String(e)));
    assert.equal((await other.goto(page.url())).status(), 401, "the link alone does not open the page");
    await other.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await other.goto(page.url());
    await until("the shared view", async () =>
      JSON.stringify(await other.$$eval("tr.gpu", (rs) => rs.filter((r) => !r.hidden).map((r) => r.id))) ===
      '["gpu-alpha-1"]');
    await other.close();
    // Narrower than the hub's: under 0 MiB in use, no GPU is free.
    await page.fill("#f-fmem", "0");
    await until("no free GPU", async () => (await cards()).length === 0);
    assert.equal(await page.isVisible("#empty"), true);
    await page.fill("#f-fmem", "1024");
    await page.fill("#f-futil", "5");
    await page.uncheck("#f-free");
    await until("all GPUs again", async () => (await gpuRows()).length === 4);
    assert.equal(param("free"), null);
  });

  test("search matches hosts, GPU names, users and process names", async () => {
    await page.fill("#f-q", "jupyter");
    await until("the notebook's GPU", async () => JSON.stringify(await gpuRows()) === '["beta/0"]');
    assert.equal(param("q"), "jupyter");
    await page.fill("#f-q", "A100");
    await until("the A100", async () => JSON.stringify(await gpuRows()) === '["beta/0"]');
    await page.fill("#f-q", "gamma");
    await until("gamma by name", async () => JSON.stringify(await cards()) === '["gamma"]');
    await page.fill("#f-q", "");
    await until("all hosts again", async () => (await cards()).length === 3);
  });

  test("sorting by free GPUs and the compact table view", async () => {
    await page.selectOption("#f-sort", "free");
    await until("alpha first", async () => (await cards())[0] === "alpha");
    assert.equal(param("sort"), "free");
    await page.selectOption("#f-view", "table");
    await until("the table", async () => (await page.$$("table.compact tr.hrow")).length === 3);
    assert.equal(param("view"), "table");
    assert.equal(await page.$$eval("#row-alpha .chip", (c) => c.length), 3);
    assert.match(await text("#row-alpha td:nth-child(5)"), /^1 \/ 3$/);
    await page.selectOption("#f-view", "cards");
    await page.selectOption("#f-sort", "id");
    await until("cards again", async () => (await cards()).length === 3);
  });

  test("phone width without sideways scrolling, dark theme from the system, keyboard reachable", async () => {
    const phone = await browser.newPage({ viewport: { width: 375, height: 800 }, colorScheme: "dark" });
    phone.on("pageerror", (e) => errors.push(String(e)));
    await phone.goto(hub.url(`/?token=${VIEWER_TOKEN}`)); // its own cookie: a new context has none
    await phone.goto(page.url());
    await until("the hosts", async () => (await phone.$$("main article.host")).length === 3);
    const [scrollW, clientW] = await phone.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
    assert.ok(scrollW <= clientW, `page ${scrollW} px wide in a ${clientW} px screen`);
    const bg = await phone.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const [r, g, b] = bg.match(/\d+/g).map(Number);
    assert.ok(r + g + b < 150, `dark background, got ${bg}`);
    // The keyboard reaches a GPU row, and it says what it is.
    await phone.focus("#gpu-alpha-0");
    assert.equal(await phone.evaluate(() => document.activeElement?.id), "gpu-alpha-0");
    await phone.keyboard.press("Shift+Tab");
    assert.equal(await phone.evaluate(() => document.activeElement?.id), "host-alpha");
    await phone.close();
  });

  test("a killed agent turns its host to down, greyed, with last seen", async () => {
    await agents.beta.kill();
    await until("beta down", async () => (await page.getAttribute("#host-beta", "class")).includes("down"));
    assert.equal(await text("#host-beta .status"), "down");
    assert.match(await text("#host-beta .seen"), /^last seen (just now|\d+ s ago)$/);
    const opacity = await page.$eval("#host-beta", (e) => Number(getComputedStyle(e).opacity));
    assert.ok(opacity < 1, "greyed");
    await until("summary counts it", async () => (await text("#summary")).includes("2 hosts up, 1 down"));
    await page.screenshot({ path: join(artifacts, "live-page-down.png"), fullPage: true });
  });

  test("the hub serves the page: index no-cache, hashed assets immutable and gzipped, behind the token", async () => {
    const noToken = await fetch(hub.url("/"));
    assert.equal(noToken.status, 401);
    // `?token=` is exchanged for an HttpOnly cookie, and the browser sent to the URL without it.
    const exchange = await fetch(hub.url(`/?view=table&token=${VIEWER_TOKEN}`), { redirect: "manual" });
    assert.equal(exchange.status, 303);
    assert.equal(exchange.headers.get("location"), "/?view=table");
    const cookie = exchange.headers.get("set-cookie");
    assert.match(cookie, /^hmon_token=[^;]+; Path=\/; HttpOnly; SameSite=Strict$/);
    const index = await fetch(hub.url("/"), { headers: { "accept-encoding": "gzip", cookie: cookie.split(";")[0] } });
    assert.equal(index.status, 200);
    assert.equal(index.headers.get("cache-control"), "no-cache");
    assert.match(index.headers.get("content-type"), /^text\/html/);
    assert.equal(index.headers.get("content-encoding"), "gzip");
    const html = await index.text();
    const js = html.match(/src="(\/assets\/[^"]+\.js)"/)?.[1];
    assert.ok(js, "the index names its script");
    const a = await fetch(hub.url(js), { headers: { "accept-encoding": "gzip" } });
    assert.equal(a.status, 200);
    assert.match(a.headers.get("cache-control"), /immutable/);
    assert.match(a.headers.get("content-type"), /^text\/javascript/);
    assert.equal(a.headers.get("content-encoding"), "gzip");
    const plain = await fetch(hub.url(js), { headers: { "accept-encoding": "identity" } });
    assert.equal(plain.headers.get("content-encoding"), null);
    assert.equal((await plain.text()).length, (await a.text()).length, "same script either way");
    assert.equal((await fetch(hub.url("/assets/nope.js"))).status, 404);
  });

  test("no console errors", () => {
    assert.deepEqual(errors, []);
  });

  test("the socket drops: a visible reconnecting state, then back", async () => {
    const addr = hub.addr;
    await hub.kill();
    await until("the reconnecting notice", async () => (await page.isVisible("#conn")) && /reconnecting/.test(await text("#conn")));
    hub = await startHub({ listen: addr });
    await until("connected again", async () => !(await page.isVisible("#conn")), 20000);
  });
});
