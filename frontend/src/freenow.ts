// "Free now": the cluster's free GPUs, grouped per host, from the hub's `GET /api/gpus` (the
// one definition of a free GPU, judged by the hub), each host with a line to paste into a
// shell (`CUDA_VISIBLE_DEVICES=<uuid>,<uuid>`). GPUs someone holds (`hmonitor wait` / `hold`)
// are listed too, as held. One request per refresh: every row, split here into free and held.
// Refreshed every few seconds while the page is visible.
//
// Host and user names are untrusted (an agent names its own host): text nodes only.

import { el, whileVisible } from "./dom";
import { bytes, heldBy } from "./fmt";
import type { Thresholds } from "./model";

/** How often the panel asks, while the page is visible. */
const REFRESH_MS = 5000;
/** A request that takes longer than this is given up (and asked again at the next refresh). */
const TIMEOUT_MS = 10000;

/** One row of `GET /api/gpus` (the fields this panel reads). */
interface Row {
  host: string;
  index: number;
  uuid: string;
  name: string;
  mem_total: number | null;
  mem_used: number | null;
  util: number | null;
  state: string;
  held_by: { uid: number; username: string; since_ms: number; until_ms: number } | null;
}

interface Answer {
  generated_ms: number;
  gpus: Row[];
}

/** The rows of an answer that look like rows; anything else is dropped, not trusted. */
function rowsOf(a: unknown): Row[] {
  const gpus = (a as Partial<Answer> | null)?.gpus;
  if (!Array.isArray(gpus)) throw new Error("the hub's answer has no GPU list");
  return gpus.filter(
    (r): r is Row =>
      typeof r === "object" && r !== null && typeof r.host === "string" && Number.isInteger(r.index) && typeof r.state === "string",
  );
}

interface HostGroup {
  host: string;
  free: Row[];
  held: Row[];
}

/** Free rows that pass the page's own thresholds too (they can only narrow the hub's verdict). */
function passes(r: Row, th: Thresholds): boolean {
  return r.mem_used !== null && r.mem_used < th.memMiB * 1024 * 1024 && r.util !== null && r.util <= th.util;
}

function group(rows: Row[], th: Thresholds, now: number): HostGroup[] {
  const by = new Map<string, HostGroup>();
  const of = (h: string) => {
    let g = by.get(h);
    if (!g) by.set(h, (g = { host: h, free: [], held: [] }));
    return g;
  };
  for (const r of rows) {
    if (r.state === "free" && passes(r, th)) of(r.host).free.push(r);
    else if (r.state === "held" && r.held_by && r.held_by.until_ms > now) of(r.host).held.push(r);
  }
  const list = [...by.values()];
  for (const g of list) {
    g.free.sort((a, b) => a.index - b.index);
    g.held.sort((a, b) => a.index - b.index);
  }
  // Most free GPUs first, then by host id.
  list.sort((a, b) => b.free.length - a.free.length || (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  return list;
}

/** `CUDA_VISIBLE_DEVICES=…` for these GPUs: their UUIDs, or their indexes when a UUID is missing. */
export function visibleDevices(free: { index: number; uuid: string }[]): string {
  const ids = free.every((r) => r.uuid) ? free.map((r) => r.uuid) : free.map((r) => String(r.index));
  return `CUDA_VISIBLE_DEVICES=${ids.join(",")}`;
}

function memFree(r: Row): string {
  return r.mem_total !== null && r.mem_used !== null ? `${bytes(Math.max(0, r.mem_total - r.mem_used))} free` : "memory n/a";
}

/** Copies the line; where the clipboard API is refused (plain http off loopback), selects it. */
async function copy(code: HTMLElement, btn: HTMLButtonElement) {
  const text = code.textContent ?? "";
  const say = (s: string) => {
    btn.textContent = s;
    setTimeout(() => (btn.textContent = "copy"), 2000);
  };
  try {
    await navigator.clipboard.writeText(text);
    say("copied");
    return;
  } catch {
    // No clipboard API here, or not allowed: select the text instead.
  }
  const range = document.createRange();
  range.selectNodeContents(code);
  const sel = window.getSelection();
  sel?.removeAllRanges();
  sel?.addRange(range);
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  say(copied ? "copied" : "selected: press Ctrl+C");
}

function hostBlock(g: HostGroup, now: number): HTMLElement {
  const box = el("div", "fn-host");
  box.dataset.host = g.host;
  box.append(el("h3", "fn-hid", g.host));
  const ul = el("ul", "fn-gpus");
  for (const r of g.free) {
    const li = el("li", "fn-gpu", `GPU ${r.index} · ${r.name || "n/a"} · ${memFree(r)}`);
    li.dataset.gpu = String(r.index);
    li.dataset.uuid = r.uuid;
    ul.append(li);
  }
  for (const r of g.held) {
    const h = r.held_by!;
    const li = el("li", "fn-held", `GPU ${r.index} · ${r.name || "n/a"} · ${heldBy({ uid: h.uid, username: h.username, untilMs: h.until_ms }, now)}`);
    li.dataset.gpu = String(r.index);
    li.dataset.user = h.username;
    ul.append(li);
  }
  box.append(ul);
  if (g.free.length) {
    const line = el("div", "fn-copy");
    const code = el("code", "fn-line", visibleDevices(g.free));
    const btn = el("button", "fn-copybtn", "copy");
    btn.type = "button";
    btn.title = "copy this line, to paste before the command that starts your job";
    btn.addEventListener("click", () => void copy(code, btn));
    line.append(code, btn);
    box.append(line);
  }
  return box;
}

export interface FreeNow {
  /** The page's thresholds changed: the panel again, from the rows it has. */
  rethreshold(): void;
  /** Asks the hub now. */
  refresh(): Promise<void>;
}

/** Fills `root` (`#freenow`) and keeps it current; `thresholds` are the page's at each call. */
export function installFreeNow(root: HTMLElement, thresholds: () => Thresholds): FreeNow {
  const count = root.querySelector<HTMLElement>(".fn-count") ?? el("span", "fn-count");
  const none = el("p", "fn-none", "no GPU is free");
  const error = el("p", "fn-error");
  error.setAttribute("role", "status");
  const list = el("div", "fn-hosts");
  none.hidden = true;
  error.hidden = true;
  const status = el("p", "fn-loading", "loading…");
  root.append(status, error, none, list);

  let rows: Row[] | null = null;
  let key = "";
  let busy = false;

  const render = () => {
    if (!rows) return;
    const now = Date.now();
    const groups = group(rows, thresholds(), now);
    const nFree = groups.reduce((n, g) => n + g.free.length, 0);
    const hosts = groups.filter((g) => g.free.length).length;
    count.textContent = nFree ? `${nFree} GPU${nFree === 1 ? "" : "s"} free on ${hosts} host${hosts === 1 ? "" : "s"}` : "none free";
    none.hidden = nFree > 0;
    // Drawn again only when what it shows changed: a selection in it (the copy fallback) stays.
    const k = JSON.stringify(
      groups.map((g) => [g.host, g.free.map((r) => [r.index, r.uuid, r.name, memFree(r)]),
        g.held.map((r) => [r.index, r.name, heldBy({ uid: r.held_by!.uid, username: r.held_by!.username, untilMs: r.held_by!.until_ms }, now)])]),
    );
    if (k === key) return;
    key = k;
    list.replaceChildren(...groups.map((g) => hostBlock(g, now)));
  };

  const fail = (why: string) => {
    rows = null;
    key = "";
    list.replaceChildren();
    none.hidden = true;
    count.textContent = "unavailable";
    error.textContent = why;
    error.hidden = false;
  };

  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      let r: Response;
      try {
        // The viewer's token goes as the page's cookie, as with every /api/ request of the page.
        // Only the rows the panel shows: free and held GPUs (not every GPU with its processes).
        r = await fetch("api/gpus?state=free,held", { credentials: "same-origin", signal: AbortSignal.timeout(TIMEOUT_MS) });
      } catch {
        fail("Free GPUs unavailable: cannot reach the hub.");
        return;
      }
      if (!r.ok) {
        // The hub says why in a line of text (or JSON with `error`); shown as text, cut short.
        let msg = "";
        try {
          const body = (await r.text()).trim();
          try {
            msg = String((JSON.parse(body) as { error?: unknown }).error ?? body);
          } catch {
            msg = body;
          }
          msg = msg.split("\n")[0].slice(0, 200);
        } catch {
          /* no body */
        }
        fail(
          r.status === 401 || r.status === 403
            ? `Free GPUs unavailable: not allowed (${r.status}); open the page with its ?token= link again.`
            : `Free GPUs unavailable: the hub answered ${r.status}${msg ? ` (${msg})` : ""}.`,
        );
        return;
      }
      try {
        rows = rowsOf(await r.json());
      } catch (e) {
        fail(`Free GPUs unavailable: ${(e as Error).message}.`);
        return;
      }
      error.hidden = true;
      status.hidden = true;
      render();
    } finally {
      busy = false;
      status.hidden = true;
    }
  };

  whileVisible(refresh, REFRESH_MS);

  return { rethreshold: render, refresh };
}
