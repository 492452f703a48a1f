// History on a full disk, as a lab's hub sees it some night: the page keeps showing every host
// live, says that history is unavailable and why, and says nothing once space is back. Mounts
// a small tmpfs for the hub's data directory (root, as CI runs).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { launch, Scenario, startAgent, startHub, until, VIEWER_TOKEN } from "./harness.mjs";

const GiB = 1024 ** 3;

function fill(dir) {
  const path = join(dir, "filler");
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch {
    // ENOSPC: full.
  } finally {
    closeSync(fd);
  }
  return path;
}

describe("history on a full disk", () => {
  let mnt, hub, agent, browser, page;
  const errors = [];

  before(async () => {
    mnt = mkdtempSync(join(tmpdir(), "hmon-small-fs-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt]);
    hub = await startHub({ under: mnt, interval: "200ms" });
    const sc = new Scenario({
      gpus: [{ name: "NVIDIA H200", memory_total: 150754820096, memory_used: 10 * GiB, utilization_gpu: 42, temperature: 50 }],
    });
    agent = startAgent(hub, "full", sc, "200ms");
    browser = await launch();
    page = await browser.newPage();
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
  });

  after(async () => {
    await browser?.close();
    await agent?.kill();
    await hub?.kill();
    if (mnt) {
      try { execFileSync("umount", ["-l", mnt]); } catch { /* already gone */ }
      rmSync(mnt, { recursive: true, force: true });
    }
  });

  test("the page says history is unavailable while live views go on, and clears it after", async () => {
    await page.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await until("the host live", async () => (await page.$$("#gpu-full-0")).length === 1);
    assert.equal(await page.isHidden("#health"), true);
    const filler = fill(mnt);
    await until("the warning on the page", async () =>
      /History unavailable: .*full/i.test((await page.textContent("#health")) ?? "") && (await page.isVisible("#health")), 45000);
    // Live: the host is up and its reports keep arriving.
    assert.equal(await page.$eval("#host-full", (e) => e.classList.contains("up")), true);
    const seq = async () => (await (await fetch(hub.url("/api/hosts"), { headers: { authorization: `Bearer ${VIEWER_TOKEN}` } })).json())
      .find((h) => h.id === "full").seq;
    const s0 = await seq();
    await new Promise((r) => setTimeout(r, 2000));
    assert.ok((await seq()) >= s0 + 5, "reports stopped while history was down");
    rmSync(filler);
    await until("the warning gone", async () => await page.isHidden("#health"), 45000);
    assert.deepEqual(errors, []);
  });
});
