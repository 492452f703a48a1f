// Test helpers: the real hmonitor-hub and hmonitor agents (on the NVML stand-in) as child
// processes on loopback, and Debian's Chromium driven by playwright-core.

import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../..");
const target = resolve(repo, process.env.CARGO_TARGET_DIR ?? "target");
const profile = join(target, process.env.HMON_PROFILE ?? "debug");

/** Where test artifacts (screenshots) go: the repository's target/ (ignored by git). */
export const artifacts = join(repo, "target", "page-tests");
mkdirSync(artifacts, { recursive: true });

export const AGENT_TOKEN = "page-test-enrollment-token";
export const VIEWER_TOKEN = "page-test-viewer-token";

function bin(name) {
  const p = join(profile, name);
  if (!existsSync(p)) throw new Error(`${p} missing: build first (cargo build --workspace)`);
  return p;
}

export function stubLib() {
  for (const p of [join(profile, "libnvidia_ml.so"), join(profile, "deps/libnvidia_ml.so")]) if (existsSync(p)) return p;
  throw new Error(`libnvidia_ml.so (the NVML stand-in) not found under ${profile}`);
}

function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("HMON_") && !k.startsWith("GOHM_") && k !== "STATE_DIRECTORY") env[k] = v;
  }
  return { ...env, HMON_LOG: "info", ...extra };
}

/** A child process with its stderr kept; `ready(re)` resolves with the first match. */
export class Proc {
  constructor(cmd, args, env) {
    this.log = "";
    this.child = spawn(cmd, args, { env, stdio: ["ignore", "ignore", "pipe"] });
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (d) => (this.log += d));
    this.exited = new Promise((r) => this.child.on("exit", r));
  }
  ready(re, ms = 30000) {
    return new Promise((res, rej) => {
      const t0 = Date.now();
      const poll = () => {
        const m = this.log.match(re);
        if (m) return res(m);
        if (this.child.exitCode !== null || Date.now() - t0 > ms)
          return rej(new Error(`not ready (${re}): ${this.log}`));
        setTimeout(poll, 20);
      };
      poll();
    });
  }
  async kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

export async function startHub({ listen = "127.0.0.1:0", interval = "300ms", extra = [], under = tmpdir() } = {}) {
  const data = mkdtempSync(join(under, "hmon-page-hub-"));
  const p = new Proc(
    bin("hmonitor-hub"),
    ["--listen", listen, "--grpc-listen", "127.0.0.1:0", "--interval", interval, "--data-dir", data, ...extra],
    cleanEnv({ HMON_TOKEN: AGENT_TOKEN, HMON_VIEWER_TOKEN: VIEWER_TOKEN }),
  );
  // Its data dir (history.sqlite) goes with it: test runs must not fill the disk.
  const kill = p.kill.bind(p);
  p.kill = async () => {
    await kill();
    rmSync(data, { recursive: true, force: true });
  };
  const m = await p.ready(/hub listening on ([0-9.:]+)/);
  p.addr = m[1];
  p.url = (path = "/") => `http://${p.addr}${path}`;
  return p;
}

export class Scenario {
  constructor(value) {
    this.dir = mkdtempSync(join(tmpdir(), "hmon-page-scn-"));
    this.path = join(this.dir, "scenario.json");
    this.write(value);
  }
  /** Atomically, as the stand-in wants (temp file + rename). */
  write(value) {
    writeFileSync(this.path + ".tmp", JSON.stringify(value));
    renameSync(this.path + ".tmp", this.path);
  }
}

export function startAgent(hub, id, scenario, interval = "300ms") {
  return new Proc(
    bin("hmonitor"),
    [],
    cleanEnv({
      HMON_HUB: `ws://${hub.addr}/api/agent`,
      HMON_TOKEN: AGENT_TOKEN,
      HMON_ID: id,
      HMON_INTERVAL: interval,
      HMON_NVML_LIB: stubLib(),
      HMON_STUB_SCENARIO: scenario.path,
    }),
  );
}

/**
 * `n` simulated agents from `hmonitor-load` (4 GPUs and 8 processes each unless told: user k
 * of alice, bchen, … hlopez runs process k and k + 8 …, process p on GPU p mod GPUs), each
 * sending `rate` frames a second.
 */
export function startLoad(hub, n, { gpus = 4, procs = 8, rate = 2 } = {}) {
  return new Proc(
    bin("hmonitor-load"),
    ["--hub", `ws://${hub.addr}`, "--token", AGENT_TOKEN, "--agents", String(n), "--gpus", String(gpus),
     "--procs", String(procs), "--rate", String(rate), "--ramp", "1", "--warmup", "0", "--duration", "3600"],
    cleanEnv({}),
  );
}

/**
 * A real process named `name` (a copy of /bin/sleep), so that the agent finds its user and
 * name in /proc like a real GPU job's.
 */
export function job(name) {
  const dir = mkdtempSync(join(tmpdir(), "hmon-page-job-"));
  const exe = join(dir, name);
  copyFileSync("/bin/sleep", exe);
  const child = spawn(exe, ["600"], { stdio: "ignore" });
  return { pid: child.pid, kill: () => child.kill("SIGKILL") };
}

/** Chromium flags for this machine (shared/FACTS.md): no sandbox as root, no stray traffic. */
export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
];

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
  });
}

/** Polls `f` (async) until it returns a truthy value; fails with `what` after `ms`. */
export async function until(what, f, ms = 15000) {
  const t0 = Date.now();
  let last;
  for (;;) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Asks the hub's HTTP API (as the viewer unless told; `token: null` sends none), with `body` as
 * JSON; the answer's body is its JSON where it parses, else its text.
 */
export async function api(hub, path, { token = VIEWER_TOKEN, method = "GET", body } = {}) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(hub.url(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* text */
  }
  return { status: r.status, body: json ?? text };
}
