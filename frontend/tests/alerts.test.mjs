// The Alerts panel against a real hub with a hub.toml: a webhook channel to a receiver in this
// test (node:http on loopback), a host_down rule, alice as a lab member with that channel, and
// an admin token. Agents are raw WebSocket clients speaking the protobuf contract (a host that
// stops reporting and a GPU that goes idle are easiest to say directly). The hub runs with
// `--free-settle 0`: an idle GPU is free at once, so a "notify me" request is told at once.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { bundleForNode, src } from "./bundle.mjs";
import { api, artifacts, launch, startHub, until, VIEWER_TOKEN } from "./harness.mjs";
import { bundleContract, rawAgent } from "./rawagent.mjs";

const GiB = 1024 ** 3;
const H200 = 150754820096;
const ADMIN_TOKEN = "page-test-admin-token";
const EVIL_HOST = "<img src=x onerror=window.__xss=1>";

let pb, done;

before(async () => {
  ({ m: pb, done } = await bundleContract("alerts-test"));
});
after(() => done?.());

/** A GPU of `host`: busy at `util` % with `used` bytes in use. */
function gpu(host, id, util, used) {
  return { id, name: "NVIDIA H200", uuid: `GPU-${host}-${id}-0000-0000-000000000000`, memTotal: BigInt(H200), memUsed: BigInt(used), utilization: util, temp: 40 };
}

/** The webhook target: every POST's path and JSON body, in order. */
async function receiver() {
  const hits = [];
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      let json = null;
      try {
        json = JSON.parse(body);
      } catch {
        /* kept as null */
      }
      hits.push({ method: req.method, path: req.url, body: json });
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { hits, url: (p) => `http://127.0.0.1:${server.address().port}${p}`, close: () => new Promise((ok) => server.close(ok)) };
}

describe("the panel's helpers", () => {
  let m, drop;
  before(async () => {
    ({ m, done: drop } = await bundleForNode("alerts-helpers", `export { memOf } from ${JSON.stringify(join(src, "alerts.ts"))};\n`));
  });
  after(() => drop?.());

  test("a bare number of memory is GiB; a unit is left to the hub", () => {
    assert.equal(m.memOf(""), undefined);
    assert.equal(m.memOf(" 20 "), "20GiB");
    assert.equal(m.memOf("1.5"), "1.5GiB");
    assert.equal(m.memOf("512MiB"), "512MiB");
    assert.equal(m.memOf("lots"), "lots");
  });
});

describe("the Alerts panel: firing alerts, notify me when free, silences", () => {
  let rx, dir, hub, gone, busy, browser, page;
  const errors = [];
  let busyGpus = () => [gpu("busy", 0, 90, 30 * GiB)];

  const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());
  const firing = () => rx.hits.filter((h) => h.path === "/lab" && h.body?.state === "firing");
  const alertRow = (host) => `#alerts li.al-alert[data-rule="host_down"][data-host="${host}"]`;
  /** The waiting requests the panel lists: id → { text, yours, cancel }. */
  const subs = () =>
    page.$$eval("#alerts li.al-sub", (ls) =>
      Object.fromEntries(ls.map((l) => [l.dataset.id, {
        text: l.querySelector(".al-what").textContent, yours: l.classList.contains("yours"),
        cancel: l.querySelector("button.al-cancel") !== null,
      }])));
  const kept = () => page.evaluate(() => JSON.parse(localStorage.getItem("hmonitor.subscriptions") ?? "{}"));
  const overview = async () => (await api(hub, "/api/alerts")).body;
  /** The panel asks now (opening it does), not at its next refresh. */
  const nudge = async () => {
    const asked = page.waitForResponse((r) => new URL(r.url()).pathname === "/api/alerts", { timeout: 12000 });
    await page.click("#alerts > summary");
    await page.click("#alerts > summary");
    await asked;
  };

  before(async () => {
    rx = await receiver();
    dir = mkdtempSync(join(tmpdir(), "hmon-page-alerts-"));
    const cfg = join(dir, "hub.toml");
    writeFileSync(cfg, `[alerts]
interval = "200ms"

[[alerts.channel]]
name = "lab"
kind = "webhook"
url = "${rx.url("/lab")}"
timeout = "2s"

[[alerts.rule]]
kind = "host_down"
for = "1s"
notify = ["lab"]

[users.alice]
notify = ["lab"]
`);
    hub = await startHub({ extra: ["--config", cfg, "--admin-token", ADMIN_TOKEN, "--free-settle", "0"] });
    gone = await rawAgent(pb, hub, "gone", () => [gpu("gone", 0, 0, 2 * 1024 * 1024)]);
    busy = await rawAgent(pb, hub, "busy", () => busyGpus());
    browser = await launch();
    const context = await browser.newContext({ viewport: { width: 1300, height: 1000 } });
    page = await context.newPage();
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(String(e)));
  });

  after(async () => {
    gone?.close();
    busy?.close();
    await browser?.close();
    await hub?.kill();
    await rx?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("a host that stops reporting: one message, and the panel shows it firing", async () => {
    await until("both hosts", async () => (await api(hub, "/api/gpus")).body.gpus?.length === 2);
    await page.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
    await page.click("#alerts > summary");
    await until("the panel drawn", async () => /none firing/.test(await text("#alerts .al-count")));
    assert.equal(await page.isVisible("#alerts .al-nofiring"), true);
    assert.equal(await text("#alerts .al-nofiring"), "nothing is firing");
    // No admin token: no admin controls.
    assert.equal(await page.$$eval("#alerts button.al-silence, #alerts button.al-remove", (b) => b.length), 0);

    gone.close();
    await until("host_down firing in the panel", async () =>
      (await page.$(`${alertRow("gone")}[data-phase="firing"]`)) !== null, 12000);
    const row = await page.$eval(alertRow("gone"), (l) => ({
      phase: l.querySelector(".al-phase").textContent, rule: l.querySelector(".al-rule").textContent,
      where: l.querySelector(".al-where").textContent, summary: l.querySelector(".al-summary").textContent,
      age: l.querySelector(".al-for").textContent,
    }));
    assert.deepEqual({ ...row, age: undefined }, { phase: "FIRING", rule: "host_down", where: "gone", summary: "host gone stopped reporting", age: undefined });
    assert.match(row.age, /^for \d+ s$/);
    assert.equal(await text("#alerts .al-count"), "1 firing");
    assert.equal(await page.isVisible("#alerts .al-nofiring"), false);
    // The log: collapsed, newest first, with the firing.
    assert.equal(await page.$eval("#alerts details.al-log", (d) => d.open), false);
    await page.click("#alerts details.al-log > summary");
    assert.match(await text("#alerts .al-logsum"), /^Recent \(\d+\)$/);
    const first = await page.$eval("#alerts .al-entry", (l) => [l.querySelector(".al-at").textContent, l.querySelector(".al-word").textContent, l.querySelector(".al-summary").textContent]);
    assert.match(first[0], /^\d\d-\d\d \d\d:\d\d:\d\d$/);
    assert.deepEqual(first.slice(1), ["FIRING", "host_down: host gone stopped reporting"]);
    // The receiver: exactly one firing message, about it.
    await until("the webhook", async () => firing().length >= 1);
    assert.equal(firing().length, 1, JSON.stringify(rx.hits));
    assert.equal(firing()[0].body.rule, "host_down");
    assert.equal(firing()[0].body.host, "gone");
  });

  test("notify me when free: asked from the form, cancelled, asked again and told once", async () => {
    // The choices: alice (a lab member with contacts) and the lab channel.
    assert.deepEqual(await page.$$eval("#al-f-to option", (os) => os.map((o) => o.value)), ["user:alice", "channel:lab"]);
    assert.equal(await page.inputValue("#al-f-count"), "1");
    assert.equal(await page.inputValue("#al-f-exp"), "4h");
    // Labels for every field: reachable by name.
    for (const name of ["GPUs", "memory free", "host", "tell", "for"]) assert.equal(await page.getByLabel(name, { exact: true }).count(), 1, name);

    // A size the hub cannot read: its reason, next to the form.
    await page.fill("#al-f-mem", "lots");
    await page.click("#alerts button.al-submit");
    await until("the 400 reason", async () => /not a size/.test(await text("#alerts .al-formmsg")));
    assert.match(await text("#alerts .al-formmsg"), /^Not asked: min_mem: "lots" is not a size/);
    assert.equal(await page.getAttribute("#alerts .al-formmsg", "role"), "status");
    assert.deepEqual((await overview()).subscriptions, []);

    // busy's only GPU runs at 90 %: the request waits.
    await page.fill("#al-f-mem", "20");
    await page.fill("#al-f-host", "busy");
    await page.selectOption("#al-f-to", "user:alice");
    await page.selectOption("#al-f-exp", "1h");
    // Submitted from the keyboard, as a form is.
    await page.focus("#al-f-host");
    await page.keyboard.press("Enter");
    await until("the request listed", async () => Object.keys(await subs()).length === 1);
    let [[id, s]] = Object.entries(await subs());
    assert.deepEqual(s, { text: "1 GPU with 20.0 GiB free on busy, tell alice", yours: true, cancel: true });
    assert.match(await text(`#alerts li.al-sub[data-id="${id}"] .al-expires`), /^expires in (59 min|1 h)$/);
    const listed = (await overview()).subscriptions;
    assert.equal(listed.length, 1);
    assert.deepEqual({ ...listed[0], created_ms: 0, expires_ms: 0, by: "" },
      { id: Number(id), count: 1, min_mem: 20 * GiB, host: "busy", target: { user: "alice" }, created_ms: 0, expires_ms: 0, by: "" });
    // Kept with the id and the time the hub made it (an id alone can come back).
    assert.deepEqual(Object.keys(await kept()), [id]);
    assert.equal(typeof (await kept())[id].token, "string");
    assert.equal((await kept())[id].created_ms, listed[0].created_ms);
    assert.match(await text("#alerts .al-formmsg"), /^Asked: alice will be told once when 1 GPU is free on busy\.$/);

    // Cancelled: gone from the page, the hub and this browser.
    await page.click(`#alerts li.al-sub[data-id="${id}"] button.al-cancel`);
    await until("the request gone", async () => Object.keys(await subs()).length === 0);
    assert.deepEqual((await overview()).subscriptions, []);
    assert.deepEqual(await kept(), {});
    assert.equal(await page.isVisible("#alerts .al-subnone"), true);

    // Again (any memory); then busy's GPU goes idle: alice is told once, the request is gone.
    await page.fill("#al-f-mem", "");
    await page.click("#alerts button.al-submit");
    await until("the request listed again", async () => Object.keys(await subs()).length === 1);
    [[id, s]] = Object.entries(await subs());
    assert.deepEqual(s, { text: "1 GPU on busy, tell alice", yours: true, cancel: true });
    const before = rx.hits.length;
    busyGpus = () => [gpu("busy", 0, 0, 2 * 1024 * 1024)];
    await until("the gpus_free message", async () => rx.hits.some((h) => h.body?.rule === "gpus_free"), 10000);
    const told = rx.hits.filter((h) => h.body?.rule === "gpus_free");
    assert.equal(told.length, 1, JSON.stringify(rx.hits));
    assert.equal(told[0].body.host, "busy");
    assert.match(told[0].body.summary, /GPU-busy-0-0000-0000-000000000000/);
    assert.ok(rx.hits.length > before);
    await until("the request gone from the page", async () => Object.keys(await subs()).length === 0, 12000);
    assert.deepEqual((await overview()).subscriptions, []);
    assert.deepEqual(await kept(), {}, "the told request's token is dropped");
    // The hub's log says it was told (not expired, not cancelled).
    const entry = (await overview()).recent.find((e) => e.entity === `subscription/${id}`);
    assert.equal(entry?.rule, "gpus_free");
    assert.equal(entry?.phase, "firing");
    await until("the told line", async () => (await text("#alerts .al-formmsg")) === `Your request ${id} was told: GPUs free on busy.`);
    // Still one: a request is told once.
    assert.equal(rx.hits.filter((h) => h.body?.rule === "gpus_free").length, 1);
  });

  test("silences: behind the admin token, kept for the tab only", async () => {
    await page.click("#alerts details.al-admin > summary");
    // A wrong token: said at once, not kept.
    await page.fill("#al-admin-token", "not-the-token");
    await page.click("#alerts button.al-use");
    await until("the wrong-token line", async () => (await text("#alerts .al-adminmsg")) === "admin token wrong");
    assert.equal(await page.getAttribute("#alerts .al-adminmsg", "role"), "status");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("hmonitor.adminToken")), null);
    assert.equal(await page.$$eval("#alerts button.al-silence", (b) => b.length), 0);

    // The right one, pasted and submitted with Enter.
    await page.fill("#al-admin-token", ADMIN_TOKEN);
    await page.press("#al-admin-token", "Enter");
    await until("the Silence button", async () => (await page.$(`${alertRow("gone")} button.al-silence`)) !== null);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("hmonitor.adminToken")), ADMIN_TOKEN);
    assert.equal(await page.evaluate(() => JSON.stringify(localStorage).includes("page-test-admin")), false, "never in localStorage");
    assert.ok(!page.url().includes(ADMIN_TOKEN), "never in the URL");
    assert.equal(await page.inputValue("#al-admin-token"), "", "not left in the field");
    assert.equal(await text(`${alertRow("gone")} button.al-silence`), "Silence 1h");

    // Someone else's request: an admin can cancel it too (not "yours").
    const other = await api(hub, "/api/alerts/subscriptions", { method: "POST", body: { count: 8, channel: "lab", expires: "1d" } });
    assert.equal(other.status, 201);

    await page.click(`${alertRow("gone")} button.al-silence`);
    await until("the silence listed", async () => (await page.$$("#alerts li.al-sil")).length === 1);
    assert.match(await text("#alerts li.al-sil .al-what"), /^host_down on gone \(from the page\)$/);
    // An end after midnight carries its date ("until 12-05 00:10"): the test may run at 23:30.
    assert.match(await text("#alerts li.al-sil .al-until"), /^until (\d\d-\d\d )?\d\d:\d\d \((59 min|1 h) left\)$/);
    const sil = (await overview()).silences;
    assert.equal(sil.length, 1);
    assert.equal(sil[0].rule, "host_down");
    assert.equal(sil[0].host, "gone");
    assert.ok(sil[0].until_ms > Date.now() + 59 * 60 * 1000);
    await until("the alert marked silenced", async () => (await page.$(`${alertRow("gone")} .al-silenced`)) !== null);
    assert.equal(await page.$(`${alertRow("gone")} button.al-silence`), null);

    await until("the other request", async () => (await subs())[other.body.id] !== undefined);
    assert.deepEqual((await subs())[other.body.id], { text: "8 GPUs on any host, to channel lab", yours: false, cancel: true });
    await page.locator("#alerts").screenshot({ path: join(artifacts, "alerts.png") });

    await page.click(`#alerts li.al-sub[data-id="${other.body.id}"] button.al-cancel`);
    await until("the other request cancelled", async () => (await subs())[other.body.id] === undefined);
    assert.deepEqual((await overview()).subscriptions, []);

    await page.click("#alerts li.al-sil button.al-remove");
    await until("the silence removed", async () => (await page.$$("#alerts li.al-sil")).length === 0);
    assert.deepEqual((await overview()).silences, []);
    await until("Silence offered again", async () => (await page.$(`${alertRow("gone")} button.al-silence`)) !== null);

    // A token that stops working (the hub's was changed): the action says so, the controls go.
    await page.evaluate(() => sessionStorage.setItem("hmonitor.adminToken", "stale"));
    await page.click(`${alertRow("gone")} button.al-silence`);
    await until("the 401 line", async () => /admin token wrong/.test(await text("#alerts .al-adminmsg")));
    await until("no admin controls", async () => (await page.$$("#alerts button.al-silence")).length === 0);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("hmonitor.adminToken")), null);
    assert.deepEqual((await overview()).silences, []);
  });

  test("a request is yours for the same id and creation time only; one gone untold is said so", async () => {
    // No admin token here (the last test's was refused): only "yours" may be cancelled.
    assert.equal(await page.evaluate(() => sessionStorage.getItem("hmonitor.adminToken")), null);
    const other = await api(hub, "/api/alerts/subscriptions", { method: "POST", body: { count: 8, channel: "lab", expires: "1d" } });
    assert.equal(other.status, 201);
    // The answer: the id, the token once, and the whole subscription.
    const { id, cancel_token, subscription } = other.body;
    assert.equal(typeof cancel_token, "string");
    assert.deepEqual({ ...subscription, created_ms: 0, expires_ms: 0, by: "" },
      { id, count: 8, min_mem: 0, target: { channel: "lab" }, created_ms: 0, expires_ms: 0, by: "" });
    assert.ok(subscription.expires_ms - subscription.created_ms === 24 * 3600 * 1000);
    assert.deepEqual((await overview()).subscriptions.find((s) => s.id === id), subscription);

    // A token kept for an earlier request of the same id (a hub on a fresh data dir counts
    // from 1 again): not this one's, so not "yours"; the earlier one is said to be gone.
    await page.evaluate(([id, k]) => localStorage.setItem("hmonitor.subscriptions", JSON.stringify({ [id]: k })),
      [id, { token: cancel_token, created_ms: subscription.created_ms - 60000 }]);
    await nudge();
    await until("the earlier one said gone", async () =>
      (await text("#alerts .al-formmsg")) === `Your request ${id} no longer waits (expired or cancelled by an admin).`, 12000);
    assert.deepEqual(await kept(), {});
    await until("the request listed", async () => (await subs())[id] !== undefined);
    assert.deepEqual((await subs())[id], { text: "8 GPUs on any host, to channel lab", yours: false, cancel: false });

    // One kept by an older page (no created_ms) cannot be told apart either: not "yours".
    await page.evaluate(([id, k]) => localStorage.setItem("hmonitor.subscriptions", JSON.stringify({ [id]: k })),
      [id, { token: cancel_token, at: Date.now() }]);
    await nudge();
    await page.waitForTimeout(200);
    assert.equal((await subs())[id].yours, false);

    // The same id and creation time: yours, and cancelled from the page with its token.
    await page.evaluate(([id, k]) => localStorage.setItem("hmonitor.subscriptions", JSON.stringify({ [id]: k })),
      [id, { token: cancel_token, created_ms: subscription.created_ms }]);
    await nudge();
    await until("yours", async () => (await subs())[id]?.yours === true, 12000);
    assert.deepEqual((await subs())[id], { text: "8 GPUs on any host, to channel lab", yours: true, cancel: true });
    await page.click(`#alerts li.al-sub[data-id="${id}"] button.al-cancel`);
    await until("cancelled", async () => (await subs())[id] === undefined);
    assert.equal(await text("#alerts .al-formmsg"), `Cancelled request ${id}.`);
    assert.deepEqual((await overview()).subscriptions, []);

    // Asked from the page (2 GPUs: busy has one), then cancelled by an admin elsewhere: not
    // told, so the page says it no longer waits, and why it may be.
    await page.fill("#al-f-count", "2");
    await page.fill("#al-f-host", "busy");
    await page.selectOption("#al-f-to", "channel:lab");
    await page.click("#alerts button.al-submit");
    await until("the request listed", async () => Object.values(await subs()).some((s) => s.yours));
    const [[mine]] = Object.entries(await subs());
    const made = (await overview()).subscriptions.find((s) => s.id === Number(mine)).created_ms;
    assert.equal((await kept())[mine].created_ms, made);
    assert.match(await text("#alerts .al-formmsg"), /^Asked: channel lab will be told once when 2 GPUs are free on busy\.$/);
    const del = await api(hub, `/api/admin/alerts/subscriptions/${mine}`, { token: ADMIN_TOKEN, method: "DELETE" });
    assert.equal(del.status, 200);
    await nudge();
    await until("the untold line", async () =>
      (await text("#alerts .al-formmsg")) === `Your request ${mine} no longer waits (expired or cancelled by an admin).`, 12000);
    assert.deepEqual(await kept(), {});
    // The log may name an earlier request of the same id (the hub reuses a freed id), told:
    // not this one, made later.
    assert.equal((await overview()).recent.some((e) => e.entity === `subscription/${mine}` && e.since_ms === made), false);
    await page.fill("#al-f-count", "1");
    await page.fill("#al-f-host", "");
  });

  test("ages and times left count on the hub's clock, not a browser's that is off", async () => {
    const sub = await api(hub, "/api/alerts/subscriptions", { method: "POST", body: { count: 8, channel: "lab", expires: "1h" } });
    assert.equal(sub.status, 201);
    const ctx = await browser.newContext({ viewport: { width: 1300, height: 1000 } });
    // This browser's clock is 3 hours ahead.
    await ctx.addInitScript(() => {
      const real = Date.now;
      Date.now = () => real() + 3 * 3600 * 1000;
    });
    const p2 = await ctx.newPage();
    const errs = [];
    p2.on("pageerror", (e) => errs.push(String(e)));
    try {
      await p2.goto(hub.url(`/?token=${VIEWER_TOKEN}`));
      assert.ok(await p2.evaluate(() => Date.now() - performance.timeOrigin - performance.now() > 2 * 3600 * 1000), "the clock is off");
      await p2.click("#alerts > summary");
      const row = `${alertRow("gone")} .al-for`;
      await until("the alert", async () => (await p2.$(row)) !== null);
      const since = (await overview()).firing.find((a) => a.host === "gone").since_ms;
      const age = await p2.$eval(row, (e) => e.textContent);
      // Firing since the first test: seconds or minutes, never "3 h".
      assert.match(age, /^for \d+ (s|min)$/);
      const shown = Number(age.match(/\d+/)[0]) * (age.endsWith("min") ? 60 : 1);
      const real = (Date.now() - since) / 1000;
      assert.ok(Math.abs(shown - real) < 75, `${age} vs ${real} s`);
      const left = `#alerts li.al-sub[data-id="${sub.body.id}"] .al-expires`;
      await until("the request", async () => (await p2.$(left)) !== null);
      assert.match(await p2.$eval(left, (e) => e.textContent), /^expires in (59 min|1 h)$/);
      assert.deepEqual(errs, []);
    } finally {
      await ctx.close();
      await api(hub, `/api/admin/alerts/subscriptions/${sub.body.id}`, { token: ADMIN_TOKEN, method: "DELETE" });
    }
  });

  test("the panel says so when the hub cannot be asked, and comes back", async () => {
    const alertsApi = (u) => u.pathname === "/api/alerts";
    await page.route(alertsApi, (r) => r.abort("connectionrefused"));
    await until("the error line", async () =>
      (await page.isVisible("#alerts .al-error")) && /cannot reach the hub/.test(await text("#alerts .al-error")), 12000);
    assert.equal(await text("#alerts .al-error"), "Alerts unavailable: cannot reach the hub.");
    assert.equal(await text("#alerts .al-count"), "unavailable");
    assert.equal(await page.isVisible(alertRow("gone")), false, "no stale list");
    await page.unroute(alertsApi);
    await until("the list again", async () => await page.isVisible(alertRow("gone")), 12000);
    assert.equal(await page.isVisible("#alerts .al-error"), false);
  });

  test("a host name with markup is shown as text, never run", async () => {
    const evil = await rawAgent(pb, hub, EVIL_HOST, () => [gpu("x", 0, 0, 0)]);
    await until("the evil host", async () => (await api(hub, "/api/gpus")).body.gpus?.some((g) => g.host === EVIL_HOST));
    evil.close();
    await until("its alert in the panel", async () =>
      (await page.$$eval("#alerts li.al-alert", (ls) => ls.filter((l) => l.dataset.host === "<img src=x onerror=window.__xss=1>" && l.dataset.phase === "firing").length)) === 1, 12000);
    const where = await page.$$eval("#alerts li.al-alert .al-where", (es) => es.map((e) => e.textContent));
    assert.ok(where.includes(EVIL_HOST));
    assert.equal(await page.$$eval("#alerts img", (es) => es.length), 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined, "markup from the hub ran");
    assert.equal(await text("#alerts .al-count"), "2 firing");
    // The first host's message was sent once, never repeated.
    assert.equal(firing().filter((h) => h.body.host === "gone").length, 1);
  });

  test("no console errors", () => {
    // The aborted requests, the refused tokens and the unreadable size are the test's own doing.
    assert.deepEqual(errors.filter((e) => !/api\/alerts|api\/admin|ERR_CONNECTION_REFUSED|ERR_FAILED|401|400 \(Bad Request\)/.test(e)), []);
  });
});
