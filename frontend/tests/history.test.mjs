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
  /** The page's /api/usage answers, by their `from`. */
  const usageAnswers = new Map();

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
    page.on("response", async (r) => {
      const u = new URL(r.url());
      if (u.pathname !== "/api/usage" || u.searchParams.get("format") === "csv" || !r.ok()) return;
      try {
        const body = await r.json();
        usageAnswers.set(String(body.from), body);
      } catch {
        /* the page gone meanwhile */
      }
    });
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

  /** The usage table as shown: the span drawn, headings, and per user each cell's [column,
   * text, title, unknown]. */
  const usageTable = () =>
    page.$eval("#usage table.usage", (t) => ({
      from: t.dataset.from,
      head: [...t.tHead.rows[0].cells].map((c) => c.textContent),
      rows: Object.fromEntries([...t.tBodies[0].rows].map((r) => [r.dataset.user,
        [...r.cells].map((c) => [c.dataset.col ?? null, c.textContent, c.title, c.classList.contains("na")])])),
    }));
  /** What the page shows for a reading (amount: "0.00", "0.0042", "12.34"). */
  const amount = (v) => (v === 0 ? "0.00" : Math.abs(v) < 0.01 ? v.toPrecision(2) : v.toFixed(2));

  test("who used what, with a CSV export", async () => {
    await page.click("#usage > summary");
    const row = `#usage tr[data-user="${me}"]`;
    // Over 1 h the hub sums raw samples (longer spans use the 1-minute tier, whose current
    // bucket is not closed yet); each click on the span fetches again.
    let table, answer;
    await until("my usage", async () => {
      await page.click('#usage button[data-span="1h"]');
      await page.waitForTimeout(300);
      // The page's own answer for the span it drew (spans clicked quickly: the last is drawn).
      table = await usageTable();
      answer = usageAnswers.get(table.from);
      return answer && Number(await page.$eval(row, (r) => r.dataset.gpuHours).catch(() => 0)) > 0;
    });
    assert.match(await page.textContent(`${row} td:last-child`), /delta/);

    // The columns, and my row as the page's own answer (the same span) says it.
    const { head, rows } = table;
    assert.deepEqual(head, ["user", "GPU-hours", "GPU memory GiB-hours", "idle GPU-hours", "mean util while held", "energy kWh", "hosts"]);
    const u = answer.users.find((x) => x.user === me);
    assert.ok(u, JSON.stringify(answer));
    assert.deepEqual(rows[me], [
      [null, me, "", false],
      ["gpu-hours", amount(u.gpu_hours), "", false],
      ["mem-gib-hours", amount(u.gpu_mem_gib_hours), "", false],
      ["idle-gpu-hours", amount(u.idle_gpu_hours), "", false],
      ["mean-util", `${u.mean_util.toFixed(0)} %`, "", false],
      ["energy-kwh", amount(u.energy_kwh), "", false],
      [null, "delta", "", false],
    ]);
    // What the stand-in reports: my job holds GPU 0 at 88 % drawing 500 W, with 30 GiB.
    assert.ok(Math.abs(u.mean_util - 88) < 0.5, `mean util ${u.mean_util}`);
    assert.equal(rows[me][4][1], "88 %");
    assert.equal(u.idle_gpu_hours, 0, "busy at 88 %: never idle");
    assert.equal(rows[me][3][1], "0.00");
    assert.ok(Math.abs(u.energy_kwh - 0.5 * u.gpu_hours) <= 0.02 * 0.5 * u.gpu_hours, `${u.energy_kwh} kWh over ${u.gpu_hours} GPU-hours at 500 W`);
    assert.ok(Math.abs(u.gpu_mem_gib_hours - 30 * u.gpu_hours) <= 0.02 * 30 * u.gpu_hours, `${u.gpu_mem_gib_hours} GiB-hours`);
    assert.notEqual(rows[me][5][1], "0.00", "a small energy is shown, not rounded to 0");

    const href = await page.getAttribute("#usage-csv", "href");
    assert.match(href, /format=csv/);
    const csv = await page.evaluate(async (h) => {
      const r = await fetch(h);
      return [r.status, r.headers.get("content-type"), await r.text()];
    }, href);
    assert.equal(csv[0], 200);
    assert.match(csv[1], /text\/csv/);
    const lines = csv[2].trimEnd().split("\n");
    assert.equal(lines[0], "user,gpu_hours,gpu_mem_gib_hours,idle_gpu_hours,mean_util_percent,energy_kwh,hosts");
    const mine = lines.find((l) => l.startsWith(`${me},`));
    assert.ok(mine, csv[2]);
    const [, gh, gib, idle, util, kwh, hosts] = mine.split(",");
    assert.ok(Number(gh) > 0);
    assert.ok(Math.abs(Number(gib) - 30 * Number(gh)) <= 0.02 * 30 * Number(gh), mine);
    assert.equal(Number(idle), 0, mine);
    assert.ok(Math.abs(Number(util) - 88) < 0.5, mine);
    assert.ok(Math.abs(Number(kwh) - 0.5 * Number(gh)) <= 0.02 * 0.5 * Number(gh), mine);
    assert.equal(hosts, "delta");
  });

  test("who used what: a reading the hub does not have is shown as unknown, never 0", async () => {
    // A hub's answer with users whose GPUs reported no utilization or no power.
    const fake = (r) => {
      if (new URL(r.request().url()).searchParams.get("format") === "csv") return r.continue();
      return r.fulfill({ contentType: "application/json", body: JSON.stringify({ from: 1000, to: 3601000, users: [
        { user: "nopower", gpu_hours: 2, gpu_mem_gib_hours: 40, idle_gpu_hours: 0.5, mean_util: 37.4, energy_kwh: null, hosts: ["a"] },
        { user: "noreading", gpu_hours: 1, gpu_mem_gib_hours: 0, idle_gpu_hours: 0, mean_util: null, energy_kwh: null, hosts: ["b", "c"] },
        { user: "zero", gpu_hours: 0.25, gpu_mem_gib_hours: 0, idle_gpu_hours: 0.25, mean_util: 0, energy_kwh: 0, hosts: ["d"] },
      ] }) });
    };
    const usageApi = (u) => u.pathname === "/api/usage";
    await page.route(usageApi, fake);
    try {
      await page.click('#usage button[data-span="24h"]');
      await until("the hub's answer drawn", async () => (await usageTable()).from === "1000");
      const { rows } = await usageTable();
      assert.deepEqual(rows.nopower.slice(1, 6), [
        ["gpu-hours", "2.00", "", false], ["mem-gib-hours", "40.00", "", false], ["idle-gpu-hours", "0.50", "", false],
        ["mean-util", "37 %", "", false], ["energy-kwh", "–", "no reading", true],
      ]);
      assert.deepEqual(rows.noreading.slice(4), [["mean-util", "–", "no reading", true], ["energy-kwh", "–", "no reading", true], [null, "b, c", "", false]]);
      // A reading of 0 is 0: only a missing one is unknown.
      assert.deepEqual(rows.zero.slice(3, 6), [["idle-gpu-hours", "0.25", "", false], ["mean-util", "0 %", "", false], ["energy-kwh", "0.00", "", false]]);
    } finally {
      await page.unroute(usageApi, fake);
    }
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
