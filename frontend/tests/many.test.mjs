// A cluster larger than the screen: 60 simulated hosts (hmonitor-load) of 4 GPUs. The page
// draws only the cards on screen and decodes only their reports; the summary, the filters and
// the order still cover every host, drawn or not. These tests check that a user sees the same
// figures and the same hosts as if every card had been drawn.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { launch, startHub, startLoad, until, VIEWER_TOKEN } from "./harness.mjs";

const HOSTS = 60, GPUS = 4;

describe("a cluster larger than the screen", () => {
  let hub, load, browser, page;
  const errors = [];

  const open = async (query = "") => {
    await page.goto(hub.url(`/?${query}${query ? "&" : ""}token=${VIEWER_TOKEN}`));
  };
  const summary = () => page.$eval("#summary", (e) => e.textContent.trim());
  const cards = () => page.$$eval("main article.host", (as) => as.map((a) => a.dataset.host));
  /** Cards on screen with drawn GPU rows, and their visible rows' GPU indexes. */
  const drawn = () =>
    page.$$eval("main article.host", (as) =>
      Object.fromEntries(
        as
          .filter((a) => {
            const r = a.getBoundingClientRect();
            return r.bottom > 0 && r.top < innerHeight;
          })
          .map((a) => [a.dataset.host, [...a.querySelectorAll("tr.gpu")].filter((r) => !r.hidden).map((r) => Number(r.dataset.gpu))])
          .filter(([, rows]) => rows.length),
      ),
    );

  before(async () => {
    hub = await startHub({ interval: "1s" });
    load = startLoad(hub, HOSTS, { gpus: GPUS, procs: 8, rate: 2 });
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
  });

  after(async () => {
    await browser?.close();
    await load?.kill();
    await hub?.kill();
  });

  test("the summary counts every host, the ones never drawn too", async () => {
    await open();
    // The load generator's GPUs all hold 20 GiB or more: in use under the default thresholds.
    await until("every host in the summary", async () =>
      (await summary()).includes(`${HOSTS} hosts up, 0 down`) &&
      (await summary()).includes(`0 GPUs free, ${HOSTS * GPUS} busy, ${HOSTS * GPUS} total`), 30000);
    assert.match(await summary(), /8 active users/);
    assert.equal((await cards()).length, HOSTS);
    // What makes this test mean something: most cards were never drawn (off screen).
    const everDrawn = await page.$$eval("main article.host", (as) => as.filter((a) => a.querySelector("tr.gpu")).length);
    assert.ok(everDrawn > 0 && everDrawn < HOSTS / 2, `cards drawn: ${everDrawn}`);
  });

  test("filters and thresholds apply to hosts never drawn", async () => {
    // Thresholds no GPU of theirs can miss: they only narrow the hub's verdict (processes on
    // every GPU), so still no GPU is free, and "only free GPUs" leaves no host, drawn or not.
    await open("free=1&fmem=1000000&futil=101");
    await until("no GPU free, no host shown", async () =>
      (await summary()).includes(`${HOSTS} hosts up`) && (await summary()).includes(`0 GPUs free, ${HOSTS * GPUS} busy`) &&
      (await cards()).length === 0, 30000);
    assert.equal(await page.isVisible("#empty"), true);
    await page.uncheck("#f-free");
    await until("every host again", async () => (await cards()).length === HOSTS);
    // The search finds the last host, far below the screen before the filter.
    await page.fill("#f-q", `load-${HOSTS - 1}`);
    await until("only that host", async () => JSON.stringify(await cards()) === JSON.stringify([`load-${HOSTS - 1}`]));
    await until("its GPU rows drawn", async () => (await drawn())[`load-${HOSTS - 1}`]?.length === GPUS);
    await page.fill("#f-q", "");
    // fwang runs processes 5 and 13 of each host, both on GPU 1 (process p on GPU p mod 4).
    await page.fill("#f-user", "fwang");
    await until("every host, GPU 1 only", async () => {
      const d = await drawn();
      return (await cards()).length === HOSTS && Object.keys(d).length > 0 && Object.values(d).every((rows) => rows.join() === "1");
    });
    // Someone with no process anywhere: no host left.
    await page.fill("#f-user", "nobody-here");
    await until("no host", async () => (await cards()).length === 0);
    assert.equal(await page.isVisible("#empty"), true);
  });

  test("no console errors", () => {
    assert.deepEqual(errors, []);
  });
});
