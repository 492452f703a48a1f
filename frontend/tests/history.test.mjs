// History on the page against a real hub storing real agents' frames (SQLite): the details
// panel's charts for a GPU and a host, zoom, the cluster view, and "who used what" with CSV.

import assert from "node:assert/strict";
import { userInfo } from "node:os";
import { after, before, describe, test } from "node:test";
import { join } from "node:path";
import { artifacts, job, launch, Scenario, startAgent, startHub, until, VIEWER_TOKEN } from "./harness.mjs";

const GiB = 1024 ** 3;
const me = userInfo().username;

describe("history on the page", () => {
  let hub, agent, browser, page, train;
  const errors = [];

  before(async () => {
    train = job("train-hist");
    hub = await startHub();
    const sc = new Scenario({
      gpus: [
        { name: "NVIDIA H200", memory_total: 150754820096, memory_used: 30 * GiB, utilization_gpu: 88, temperature: 61,
          power_usage_mw: 500000, power_limit_mw: 700000, processes: [{ pid: train.pid, used_memory: 30 * GiB, sm_util: 80 }] },
        { name: "NVIDIA H200", memory_total: 150754820096, memory_used: 0, utilization_gpu: 0, temperature: 30 },
      ],
    });
    agent = startAgent(hub, "delta", sc);
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
    // History exists once a few frames are stored.
    await until("stored samples", async () => {
      const r = await fetch(hub.url(`/api/history?id=delta/gpu0&metric=util&token=${VIEWER_TOKEN}`));
      return r.ok && (await r.json()).t.length >= 3;
    }, 30000);
    await page.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await until("the GPU row", async () => (await page.$$("#gpu-delta-0")).length === 1);
  });

  after(async () => {
    await browser?.close();
    await agent?.kill();
    await hub?.kill();
    train?.kill();
  });

  const chartState = (metric) =>
    page.$eval(`#details figure.chart[data-metric="${metric}"]`, (f) => [f.dataset.state, Number(f.dataset.points), f.textContent]);

  test("clicking a GPU opens its charts from stored history; spans reload; Escape closes", async () => {
    await page.click("#gpu-delta-0 td.name");
    await until("the panel", () => page.isVisible("#details"));
    assert.equal(await page.textContent("#details-title"), "delta · GPU 0");
    for (const m of ["util", "mem_used", "temp", "power"]) {
      await until(`the ${m} chart`, async () => (await chartState(m))[0] === "ok");
      const [, points] = await chartState(m);
      assert.ok(points >= 3, `${m}: ${points} points`);
    }
    assert.match((await chartState("util"))[2], /last 88 %/);
    assert.match((await chartState("mem_used"))[2], /last 30\.0 GiB/);
    await page.screenshot({ path: join(artifacts, "details-panel.png") });
    await page.click('#details button[data-span="24h"]');
    assert.equal(await page.getAttribute('#details button[data-span="24h"]', "aria-pressed"), "true");
    await until("reloaded over 24 h", async () => (await chartState("util"))[0] === "ok");
    await page.keyboard.press("Escape");
    assert.equal(await page.isVisible("#details"), false);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "gpu-delta-0", "focus returns to the row");
  });

  test("a chart zooms on a drag and back on a double-click", async () => {
    await page.focus("#gpu-delta-0");
    await page.keyboard.press("Enter");
    await until("the util chart", async () => (await chartState("util"))[0] === "ok");
    const range = () => page.$eval('#details figure.chart[data-metric="util"]', (f) => [f.uplot.scales.x.min, f.uplot.scales.x.max]);
    const [min0, max0] = await range();
    const over = await page.$('#details figure.chart[data-metric="util"] .u-over');
    const b = await over.boundingBox();
    await page.mouse.move(b.x + b.width * 0.5, b.y + b.height / 2);
    await page.mouse.down();
    await page.mouse.move(b.x + b.width * 0.9, b.y + b.height / 2, { steps: 5 });
    await page.mouse.up();
    const [min1, max1] = await range();
    assert.ok(max1 - min1 < (max0 - min0) * 0.6, `zoomed: ${max1 - min1} of ${max0 - min0}`);
    await page.mouse.dblclick(b.x + b.width * 0.7, b.y + b.height / 2);
    const [min2, max2] = await range();
    assert.ok(Math.abs(max2 - min2 - (max0 - min0)) < 1, `zoomed back out to the span: ${max2 - min2} s`);
    await page.keyboard.press("Escape");
  });

  test("clicking a host opens the host's charts", async () => {
    await page.click("#host-delta header h2");
    await until("the panel", () => page.isVisible("#details"));
    assert.equal(await page.textContent("#details-title"), "host delta");
    for (const m of ["cpu", "mem_used", "load1"]) {
      await until(`the ${m} chart`, async () => (await chartState(m))[0] === "ok");
    }
    await page.click("#details button.close");
    assert.equal(await page.isVisible("#details"), false);
  });

  test("who used what, with a CSV export", async () => {
    await page.click("#usage > summary");
    const row = `#usage tr[data-user="${me}"]`;
    // Over 1 h the hub sums raw samples (longer spans use the 1-minute tier, whose current
    // bucket is not closed yet); each click on the span fetches again.
    await until("my usage", async () => {
      await page.click('#usage button[data-span="1h"]');
      await page.waitForTimeout(300);
      return Number(await page.$eval(row, (r) => r.dataset.gpuHours).catch(() => 0)) > 0;
    });
    assert.match(await page.textContent(`${row} td:last-child`), /delta/);
    const href = await page.getAttribute("#usage-csv", "href");
    assert.match(href, /format=csv/);
    const csv = await page.evaluate(async (h) => {
      const r = await fetch(h);
      return [r.status, r.headers.get("content-type"), await r.text()];
    }, href);
    assert.equal(csv[0], 200);
    assert.match(csv[1], /text\/csv/);
    assert.match(csv[2], /^user,gpu_hours,gpu_mem_gib_hours,hosts/);
    assert.match(csv[2], new RegExp(`\\n${me},`));
  });

  test("the cluster over time", async () => {
    // The cluster series starts with the first closed 1-minute bucket (no raw tier).
    await until("the cluster series", async () =>
      (await fetch(hub.url(`/api/history?id=cluster&metric=util&token=${VIEWER_TOKEN}`))).ok, 90000);
    await page.click("#cluster > summary");
    for (const m of ["util", "gpus_busy", "mem_used"]) {
      await until(`cluster ${m}`, async () =>
        (await page.$eval(`#cluster figure.chart[data-metric="${m}"]`, (f) => f.dataset.state)) === "ok");
    }
    const pts = await page.$eval('#cluster figure.chart[data-metric="gpus_busy"]', (f) => Number(f.dataset.points));
    assert.ok(pts >= 1, `${pts} points`);
    // One of the two GPUs is busy (88 %), the other idle: mean utilization 44 %.
    assert.match(await page.textContent('#cluster figure.chart[data-metric="util"] figcaption'), /last 44 %/);
    assert.match(await page.textContent('#cluster figure.chart[data-metric="gpus_busy"] figcaption'), /last 1\.00/);
  });

  test("no console errors", () => {
    assert.deepEqual(errors, []);
  });
});
