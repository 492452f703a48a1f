// "Alerts": what fires now (and what is about to), the recent log, a form to be told once when
// GPUs are free (a one-shot subscription the hub sends to a lab member's contacts or to a
// channel), and, for an admin who pastes the admin token, silences. All from the hub's
// `GET /api/alerts`, asked every few seconds while the page is visible.
//
// Everything the hub lists is untrusted (an agent names its own host, a summary quotes process
// and mount names, anyone with the page can name a host pattern): text nodes only.
//
// A subscription is "yours" when this browser holds its cancel token: the hub answers it once,
// to the request that made it, and the page keeps it in localStorage with the subscription's
// id and creation time (an id alone can come back: a hub on a fresh data directory counts from
// 1 again). Ages and times left are counted on the hub's clock (`generated_ms`), not the
// browser's, which may be off. The admin token is kept
// in sessionStorage only (gone with the tab), sent as a Bearer on admin routes only, never in a
// URL.

import { el, txt, whileVisible } from "./dom";
import { bytes, duration } from "./fmt";

/** How often the panel asks, while the page is visible. */
const REFRESH_MS = 5000;
/** A request that takes longer than this is given up (and asked again at the next refresh). */
const TIMEOUT_MS = 10000;
/** The cancel tokens of the subscriptions made from this browser: `{ id: { token, created_ms } }`. */
const SUBS_KEY = "hmonitor.subscriptions";
/** The admin token, for this tab only. */
const ADMIN_KEY = "hmonitor.adminToken";
/** How long "Silence" silences. */
const SILENCE_FOR = "1h";
const EXPIRIES = [
  ["1h", "1 hour"],
  ["4h", "4 hours"],
  ["1d", "1 day"],
  ["7d", "7 days"],
] as const;
const DEFAULT_EXPIRY = "4h";

// --- what the hub answers ------------------------------------------------------------------

/** A firing or pending alert (the fields this panel reads). */
interface Alert {
  rule: string;
  kind: string;
  entity: string;
  phase: string;
  since_ms: number;
  host: string;
  gpu?: number;
  user?: string;
  summary: string;
  /** Until when a silence holds its messages back (the hub's matching); absent: not silenced. */
  silenced_until_ms?: number;
}

interface LogEntry {
  at_ms: number;
  rule: string;
  entity: string;
  phase: string;
  /** For a told subscription: its created_ms. */
  since_ms?: number;
  host: string;
  summary: string;
}

interface Sub {
  id: number;
  count: number;
  min_mem: number;
  host?: string;
  target: { user?: string; channel?: string };
  created_ms: number;
  expires_ms: number;
}

interface Silence {
  id: number;
  rule?: string;
  host?: string;
  gpu?: number;
  until_ms: number;
  comment: string;
}

interface Overview {
  /** The hub's clock when it answered (Unix ms). */
  generated_ms: number;
  firing: Alert[];
  pending: Alert[];
  recent: LogEntry[];
  subscriptions: Sub[];
  silences: Silence[];
  channels: string[];
  users: string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (o: Obj, k: string) => typeof o[k] === "string";
const int = (o: Obj, k: string) => Number.isInteger(o[k]);
const optStr = (o: Obj, k: string) => o[k] === undefined || o[k] === null || typeof o[k] === "string";
const optInt = (o: Obj, k: string) => o[k] === undefined || o[k] === null || Number.isInteger(o[k]);

/** The items of `a[k]` that pass `ok`; anything else is dropped, not trusted. */
function list<T>(a: Obj, k: string, ok: (o: Obj) => boolean): T[] {
  const v = a[k];
  if (!Array.isArray(v)) throw new Error(`the hub's answer has no ${k} list`);
  return v.filter((o): o is Obj => isObj(o) && ok(o)) as T[];
}

function overviewOf(a: unknown): Overview {
  if (!isObj(a)) throw new Error("the hub's answer is not an object");
  if (!int(a, "generated_ms")) throw new Error("the hub's answer has no generated_ms");
  const alert = (o: Obj) => str(o, "rule") && str(o, "entity") && str(o, "host") && str(o, "summary") && int(o, "since_ms") && optInt(o, "gpu") &&
    optStr(o, "user") && optInt(o, "silenced_until_ms");
  return {
    generated_ms: a.generated_ms as number,
    firing: list<Alert>(a, "firing", alert),
    pending: list<Alert>(a, "pending", alert),
    recent: list<LogEntry>(a, "recent", (o) => int(o, "at_ms") && str(o, "rule") && str(o, "phase") && str(o, "summary") && optStr(o, "entity") && optInt(o, "since_ms")),
    subscriptions: list<Sub>(a, "subscriptions", (o) =>
      int(o, "id") && int(o, "count") && int(o, "min_mem") && int(o, "created_ms") && int(o, "expires_ms") && optStr(o, "host") && isObj(o.target) &&
      (typeof o.target.user === "string" || typeof o.target.channel === "string")),
    silences: list<Silence>(a, "silences", (o) => int(o, "id") && int(o, "until_ms") && optStr(o, "rule") && optStr(o, "host") && optInt(o, "gpu")),
    channels: list<Obj>(a, "channels", (o) => str(o, "name")).map((c) => c.name as string),
    users: (Array.isArray(a.users) ? a.users : []).filter((u): u is string => typeof u === "string"),
  };
}

// --- talking to the hub --------------------------------------------------------------------

/** An answer: its status (0: the hub could not be reached) and its body as text. */
interface Answer {
  status: number;
  body: string;
}

async function ask(path: string, init: RequestInit = {}): Promise<Answer> {
  try {
    // The viewer's token goes as the page's cookie, as with every /api/ request of the page.
    const r = await fetch(path, { credentials: "same-origin", signal: AbortSignal.timeout(TIMEOUT_MS), ...init });
    return { status: r.status, body: await r.text() };
  } catch {
    return { status: 0, body: "" };
  }
}

/** The hub says why in a line of text (or JSON with `error`): that line, cut short. */
function reason(a: Answer): string {
  const body = a.body.trim();
  let msg = body;
  try {
    const e = (JSON.parse(body) as { error?: unknown }).error;
    if (e !== undefined) msg = String(e);
  } catch {
    /* text */
  }
  return msg.split("\n")[0].slice(0, 200);
}

/** "cannot reach the hub", "the hub answered 400 (count: 1 to 64 GPUs)". */
function failure(a: Answer): string {
  if (a.status === 0) return "cannot reach the hub";
  const msg = reason(a);
  return `the hub answered ${a.status}${msg ? ` (${msg})` : ""}`;
}

function json(method: string, body: unknown, headers: Record<string, string> = {}): RequestInit {
  return { method, headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) };
}

// --- what this browser keeps ---------------------------------------------------------------

interface Kept {
  token: string;
  /** The subscription's created_ms (the hub's clock): with the id, what names it. */
  created_ms: number;
}

function storage(kind: "localStorage" | "sessionStorage"): Storage | undefined {
  try {
    return window[kind];
  } catch {
    return undefined; // storage disabled: kept for the page's life only
  }
}

/** The cancel tokens this browser holds, by subscription id. */
class Tokens {
  private mem: Record<string, Kept> = {};
  private load(): Record<string, Kept> {
    const s = storage("localStorage");
    if (!s) return this.mem;
    try {
      const v: unknown = JSON.parse(s.getItem(SUBS_KEY) ?? "{}");
      if (!isObj(v)) return {};
      const out: Record<string, Kept> = {};
      // One kept without created_ms (by an older page) cannot be told from a reused id: dropped.
      for (const [id, k] of Object.entries(v)) if (isObj(k) && str(k, "token") && int(k, "created_ms")) out[id] = { token: k.token as string, created_ms: k.created_ms as number };
      return out;
    } catch {
      return {};
    }
  }
  private save(m: Record<string, Kept>) {
    this.mem = m;
    try {
      storage("localStorage")?.setItem(SUBS_KEY, JSON.stringify(m));
    } catch {
      /* full or refused: kept in memory */
    }
  }
  /** The token of `s`, when this browser made it: same id, same creation time. */
  get(s: { id: number; created_ms: number }): string | undefined {
    const k = this.load()[String(s.id)];
    return k && k.created_ms === s.created_ms ? k.token : undefined;
  }
  add(id: number, token: string, created_ms: number) {
    this.save({ ...this.load(), [String(id)]: { token, created_ms } });
  }
  drop(id: number) {
    const m = this.load();
    delete m[String(id)];
    this.save(m);
  }
  /** The kept subscriptions the hub's answer made at `generated` does not list (told, expired,
   * cancelled, or gone with the hub's data): those made before it only, since one made in the
   * same millisecond may be missing from it yet. */
  missing(listed: Sub[], generated: number): { id: number; created_ms: number }[] {
    const here = new Set(listed.map((s) => `${s.id}/${s.created_ms}`));
    return Object.entries(this.load())
      .map(([id, k]) => ({ id: Number(id), created_ms: k.created_ms }))
      .filter((k) => !here.has(`${k.id}/${k.created_ms}`) && k.created_ms < generated);
  }
}

let adminMem: string | null = null;
function adminToken(): string | null {
  const s = storage("sessionStorage");
  return s ? s.getItem(ADMIN_KEY) : adminMem;
}
function setAdminToken(t: string | null) {
  adminMem = t;
  const s = storage("sessionStorage");
  if (!s) return;
  if (t === null) s.removeItem(ADMIN_KEY);
  else s.setItem(ADMIN_KEY, t);
}

// --- drawing -------------------------------------------------------------------------------

const pad = (n: number) => String(n).padStart(2, "0");
/** "12-04 14:03:09" in the browser's time zone. */
function when(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
/** "14:03" today, else "12-04 14:03". */
function clock(ms: number, now: number): string {
  const d = new Date(ms);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.toDateString() === new Date(now).toDateString() ? hm : `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
}

/** "gpu-07 · GPU 3 · alice". */
function where(a: { host: string; gpu?: number | null; user?: string | null }): string {
  return [a.host, a.gpu != null ? `GPU ${a.gpu}` : "", a.user ?? ""].filter(Boolean).join(" · ");
}

function age(a: Alert, now: number): string {
  const d = duration((now - a.since_ms) / 1000);
  return a.phase === "pending" ? `pending for ${d}` : `for ${d}`;
}

function target(s: Sub): string {
  return s.target.user !== undefined ? `tell ${s.target.user}` : `to channel ${s.target.channel}`;
}

function subText(s: Sub): string {
  const gpus = `${s.count} GPU${s.count === 1 ? "" : "s"}`;
  const mem = s.min_mem > 0 ? ` with ${bytes(s.min_mem)} free` : "";
  return `${gpus}${mem} on ${s.host ? s.host : "any host"}, ${target(s)}`;
}

function silenceText(s: Silence): string {
  const what = `${s.rule ?? "every rule"} on ${s.host ?? "every host"}${s.gpu != null ? ` GPU ${s.gpu}` : ""}`;
  return s.comment ? `${what} (${s.comment})` : what;
}

function button(cls: string, text: string, focus: string, title?: string): HTMLButtonElement {
  const b = el("button", cls, text);
  b.type = "button";
  // Names the button across redraws: focus goes back to it when its list is drawn again.
  b.dataset.focus = focus;
  if (title) b.title = title;
  return b;
}

/** Replaces `ul`'s items; a button in it that had the keyboard focus gets it back. */
function redraw(ul: HTMLElement, items: HTMLElement[]) {
  const a = document.activeElement;
  const f = a instanceof HTMLElement && ul.contains(a) ? a.dataset.focus : undefined;
  ul.replaceChildren(...items);
  if (f) [...ul.querySelectorAll<HTMLElement>("[data-focus]")].find((e) => e.dataset.focus === f)?.focus();
}

/** A bare number is GiB (what a person means by "20"); else the hub reads the unit. */
export function memOf(v: string): string | undefined {
  const t = v.trim();
  if (!t) return undefined;
  return /^\d+(\.\d+)?$/.test(t) ? `${t}GiB` : t;
}

/** A label and its field. Named by `for`, not by wrapping: a wrapping label's name would take in
 * a select's chosen option ("tell alice"). */
function field(label: string, input: HTMLInputElement | HTMLSelectElement, hint?: string): HTMLElement {
  const box = el("span", "al-field");
  const l = el("label", "al-label", label);
  l.htmlFor = input.id;
  if (hint) input.title = hint;
  box.append(l, input);
  return box;
}

export interface Alerts {
  /** Asks the hub now. */
  refresh(): Promise<void>;
}

/** Fills `root` (`#alerts`) and keeps it current; `me` is the page's "I am" (the default whom to tell). */
export function installAlerts(root: HTMLElement, me: () => string = () => ""): Alerts {
  const count = root.querySelector<HTMLElement>(".al-count") ?? el("span", "al-count");
  const status = el("p", "al-loading", "loading…");
  const error = el("p", "al-error");
  error.setAttribute("role", "status");
  error.hidden = true;
  // Everything drawn from the hub's answer: hidden, not left stale, when it cannot be asked.
  const body = el("div", "al-body");
  body.hidden = true;

  const alertsList = el("ul", "al-alerts");
  alertsList.setAttribute("aria-label", "Firing and pending alerts");
  const none = el("p", "al-none al-nofiring", "nothing is firing");

  const log = el("details", "al-log");
  const logSum = el("summary", "al-logsum", "Recent");
  const logList = el("ol", "al-entries");
  const logNone = el("p", "al-none al-nolog", "nothing has fired yet");
  log.append(logSum, logList, logNone);

  const silBox = el("section", "al-silbox");
  const silList = el("ul", "al-silences");
  silBox.append(el("h3", "al-h", "Silenced"), silList);

  // The form: built once; only the list of whom to tell follows the hub.
  const form = el("form", "al-form");
  form.setAttribute("aria-label", "Notify me when GPUs are free");
  const fCount = el("input", "al-num");
  fCount.type = "number";
  fCount.min = "1";
  fCount.max = "64";
  fCount.step = "1";
  fCount.value = "1";
  fCount.required = true;
  fCount.id = "al-f-count";
  const fMem = el("input", "al-mem");
  fMem.id = "al-f-mem";
  fMem.placeholder = "e.g. 20GiB";
  fMem.autocomplete = "off";
  fMem.size = 8;
  const fHost = el("input", "al-host");
  fHost.id = "al-f-host";
  fHost.placeholder = "anywhere";
  fHost.autocomplete = "off";
  fHost.size = 10;
  fHost.setAttribute("list", "hostlist");
  const fTo = el("select", "al-to");
  fTo.id = "al-f-to";
  fTo.required = true;
  const fExp = el("select", "al-exp");
  fExp.id = "al-f-exp";
  for (const [v, t] of EXPIRIES) {
    const o = el("option", undefined, t);
    o.value = v;
    o.selected = v === DEFAULT_EXPIRY;
    fExp.append(o);
  }
  const submit = el("button", "al-submit", "Notify me");
  submit.type = "submit";
  const formMsg = el("p", "al-formmsg");
  formMsg.setAttribute("role", "status");
  formMsg.hidden = true;
  form.append(
    field("GPUs", fCount),
    field("memory free", fMem, "GPU memory free on each GPU: 20GiB, 512MiB; a bare number is GiB; empty: any"),
    field("host", fHost, "a host id, or a pattern (gpu-*); empty: any host"),
    field("tell", fTo),
    field("for", fExp, "how long the request waits before it is dropped"),
    submit,
  );
  const noTarget = el("p", "al-none al-notarget", "The hub has no lab member with contacts and no channel to tell ([users] and [[alerts.channel]] in hub.toml).");
  noTarget.hidden = true;
  const subList = el("ul", "al-subs");
  subList.setAttribute("aria-label", "Waiting to be told");
  const subNone = el("p", "al-none al-subnone", "no one is waiting for free GPUs");
  const subBox = el("section", "al-subbox");
  subBox.append(el("h3", "al-h", "Notify me when free"), form, formMsg, noTarget, subList, subNone);

  // The admin area: a token for this tab, checked before it is kept.
  const admin = el("details", "al-admin");
  const adminSum = el("summary", "al-adminsum", "admin");
  const adminForm = el("form", "al-adminform");
  adminForm.setAttribute("aria-label", "Admin token");
  const aToken = el("input", "al-token");
  aToken.type = "password";
  aToken.id = "al-admin-token";
  aToken.autocomplete = "off";
  aToken.spellcheck = false;
  const aUse = el("button", "al-use", "Use token");
  aUse.type = "submit";
  const aForget = button("al-forget", "Forget token", "forget");
  const aMsg = el("p", "al-adminmsg");
  aMsg.setAttribute("role", "status");
  aMsg.hidden = true;
  adminForm.append(field("Admin token", aToken, "kept for this tab only (sessionStorage)"), aUse, aForget);
  admin.append(adminSum, adminForm, aMsg);

  body.append(alertsList, none, silBox, log, subBox, admin);
  root.append(status, error, body);

  const tokens = new Tokens();
  let data: Overview | null = null;
  /** The hub's clock less the browser's, as of the last answer. */
  let offset = 0;
  const hubNow = () => Date.now() + offset;
  /** Kept requests missing from an answer whose log does not say they were told (yet): when
   * first missed, on the hub's clock. The hub drops a told request from its list a moment
   * before its log says so: the verdict waits for an answer made after that. */
  const unsure = new Map<string, number>();
  let recheck: ReturnType<typeof setTimeout> | undefined;
  const keys = { alerts: "", log: "", subs: "", sil: "", to: "" };
  let busy = false;
  let again = false;

  const isAdmin = () => adminToken() !== null;

  const adminSay = (s: string, bad = false) => {
    aMsg.textContent = s;
    aMsg.classList.toggle("bad", bad);
    aMsg.hidden = !s;
  };
  const formSay = (s: string, bad = false) => {
    formMsg.textContent = s;
    formMsg.classList.toggle("bad", bad);
    formMsg.hidden = !s;
  };

  /** An admin request; a 401 forgets the token (it is wrong, or the hub's changed). */
  const adminAsk = async (path: string, init: RequestInit): Promise<Answer | null> => {
    const t = adminToken();
    if (t === null) return null;
    const a = await ask(path, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${t}` } });
    if (a.status === 401) {
      setAdminToken(null);
      admin.open = true;
      adminSay("admin token wrong: paste it again", true);
      draw();
    }
    return a;
  };

  const drawAlerts = (d: Overview, now: number, adm: boolean) => {
    const all = [...d.firing, ...d.pending];
    // Drawn again only when what they say changed; their ages move in place.
    // A silence that ended since the hub answered holds nothing now.
    const until = (a: Alert) => (a.silenced_until_ms != null && a.silenced_until_ms > now ? a.silenced_until_ms : undefined);
    const k = JSON.stringify([adm, all.map((a) => [a.rule, a.entity, a.phase, a.host, a.gpu, a.user, a.summary, until(a)])]);
    if (k !== keys.alerts) {
      keys.alerts = k;
      redraw(alertsList, all.map((a) => {
        const li = el("li", `al-alert al-${a.phase === "pending" ? "pending" : "firing"}`);
        li.dataset.rule = a.rule;
        li.dataset.host = a.host;
        li.dataset.entity = a.entity;
        li.dataset.phase = a.phase;
        if (a.gpu != null) li.dataset.gpu = String(a.gpu);
        const s = until(a);
        li.append(
          el("span", "al-phase", a.phase === "pending" ? "pending" : "FIRING"),
          el("span", "al-rule", a.rule),
          el("span", "al-where", where(a)),
          el("span", "al-summary", a.summary),
          el("span", "al-for", age(a, now)),
        );
        if (s !== undefined) li.append(el("span", "al-silenced", `silenced until ${clock(s, now)}`));
        if (adm && a.phase !== "pending" && s === undefined) {
          const b = button("al-silence", `Silence ${SILENCE_FOR}`, `silence:${a.rule}/${a.entity}`,
            `hold the messages of ${a.rule} on ${where({ host: a.host, gpu: a.gpu })} for ${SILENCE_FOR}`);
          b.addEventListener("click", () => void silence(a, b));
          li.append(b);
        }
        return li;
      }));
    } else {
      const all2 = alertsList.querySelectorAll<HTMLElement>(".al-for");
      all.forEach((a, i) => all2[i] && txt(all2[i], age(a, now)));
    }
    none.hidden = all.length > 0;
  };

  const drawLog = (d: Overview) => {
    txt(logSum, `Recent (${d.recent.length})`);
    logNone.hidden = d.recent.length > 0;
    const k = JSON.stringify(d.recent.map((e) => [e.at_ms, e.rule, e.entity, e.phase, e.summary]));
    if (k === keys.log) return;
    keys.log = k;
    redraw(logList, d.recent.map((e) => {
      const li = el("li", `al-entry al-${e.phase === "resolved" ? "resolved" : "firing"}`);
      li.dataset.phase = e.phase;
      li.dataset.rule = e.rule;
      const t = el("time", "al-at", when(e.at_ms));
      t.dateTime = new Date(e.at_ms).toISOString();
      li.append(t, el("span", "al-word", e.phase === "resolved" ? "RESOLVED" : "FIRING"), el("span", "al-summary", `${e.rule}: ${e.summary}`));
      return li;
    }));
  };

  const drawSilences = (d: Overview, now: number, adm: boolean) => {
    const live = d.silences.filter((s) => s.until_ms > now);
    silBox.hidden = live.length === 0;
    const k = JSON.stringify([adm, Math.floor(now / 60000), live.map((s) => [s.id, s.rule, s.host, s.gpu, s.until_ms, s.comment])]);
    if (k === keys.sil) return;
    keys.sil = k;
    redraw(silList, live.map((s) => {
      const li = el("li", "al-sil");
      li.dataset.id = String(s.id);
      li.append(el("span", "al-what", silenceText(s)), el("span", "al-until", `until ${clock(s.until_ms, now)} (${duration((s.until_ms - now) / 1000)} left)`));
      if (adm) {
        const b = button("al-remove", "Remove", `remove:${s.id}`, "send this rule's messages again");
        b.addEventListener("click", () => void unsilence(s.id, b));
        li.append(b);
      }
      return li;
    }));
  };

  const drawTargets = (d: Overview) => {
    const k = JSON.stringify([d.users, d.channels]);
    const empty = d.users.length + d.channels.length === 0;
    noTarget.hidden = !empty;
    fTo.disabled = submit.disabled = empty;
    if (k === keys.to) return;
    const first = keys.to === "";
    keys.to = k;
    const was = fTo.value;
    const group = (label: string, kind: string, names: string[]) => {
      const g = el("optgroup");
      g.label = label;
      for (const n of names) {
        const o = el("option", undefined, n);
        o.value = `${kind}:${n}`;
        g.append(o);
      }
      return g;
    };
    const gs = [];
    if (d.users.length) gs.push(group("lab members", "user", d.users));
    if (d.channels.length) gs.push(group("channels", "channel", d.channels));
    fTo.replaceChildren(...gs);
    // What was chosen stays chosen; at first, the page's "I am" when the hub knows that name.
    const mine = `user:${me().trim()}`;
    const want = !first && was ? was : mine;
    if ([...fTo.options].some((o) => o.value === want)) fTo.value = want;
  };

  const drawSubs = (d: Overview, now: number, adm: boolean) => {
    subNone.hidden = d.subscriptions.length > 0;
    const rows = d.subscriptions.map((s) => ({ s, yours: tokens.get(s) !== undefined }));
    const k = JSON.stringify([adm, Math.floor(now / 60000), rows.map((r) => [r.s.id, subText(r.s), r.s.expires_ms, r.yours])]);
    if (k === keys.subs) return;
    keys.subs = k;
    redraw(subList, rows.map(({ s, yours }) => {
      const li = el("li", `al-sub${yours ? " yours" : ""}`);
      li.dataset.id = String(s.id);
      li.append(el("span", "al-what", subText(s)), el("span", "al-expires", `expires in ${duration((s.expires_ms - now) / 1000)}`));
      if (yours) li.append(el("span", "al-yours", "yours"));
      if (yours || adm) {
        const b = button("al-cancel", "Cancel", `cancel:${s.id}`, yours ? "cancel this request" : "cancel this request (as admin)");
        b.addEventListener("click", () => void cancel(s, yours, b));
        li.append(b);
      }
      return li;
    }));
  };

  function draw() {
    const adm = isAdmin();
    aForget.hidden = !adm;
    aUse.textContent = adm ? "Replace token" : "Use token";
    adminSum.textContent = adm ? "admin (token in use)" : "admin";
    if (!data) return;
    const d = data;
    const now = hubNow();
    const nf = d.firing.length, np = d.pending.length;
    txt(count, nf || np ? [nf ? `${nf} firing` : "", np ? `${np} pending` : ""].filter(Boolean).join(", ") : "none firing");
    root.classList.toggle("firing", nf > 0);
    drawAlerts(d, now, adm);
    drawSilences(d, now, adm);
    drawLog(d);
    drawTargets(d);
    drawSubs(d, now, adm);
  }

  /** A request of this browser's that the hub no longer lists was told, or expired, or an admin
   * cancelled it: said, so that "Asked: …" does not stay as if it still waited. */
  const settle = (d: Overview) => {
    const told: string[] = [];
    const gone: number[] = [];
    let wait = false;
    for (const k of tokens.missing(d.subscriptions, d.generated_ms)) {
      const key = `${k.id}/${k.created_ms}`;
      // Its entry in the log: the same id, made at the same time (an id can come back).
      const e = d.recent.find((e) => e.rule === "gpus_free" && e.phase === "firing" && e.entity === `subscription/${k.id}` &&
        (e.since_ms == null || e.since_ms === k.created_ms));
      if (e) {
        told.push(`Your request ${k.id} was told: GPUs free on ${e.host}.`);
      } else {
        const first = unsure.get(key);
        if (first === undefined || first >= d.generated_ms) {
          unsure.set(key, first ?? d.generated_ms);
          wait = true;
          continue;
        }
        gone.push(k.id);
      }
      unsure.delete(key);
      tokens.drop(k.id);
    }
    if (told.length || gone.length) {
      const n = gone.length;
      const why = n ? [`Your request${n === 1 ? "" : "s"} ${gone.join(", ")} no longer wait${n === 1 ? "s" : ""} (expired or cancelled by an admin).`] : [];
      formSay([...told, ...why].join(" "));
    }
    // Asked again soon, not at the next refresh, for the verdict on one missed.
    clearTimeout(recheck);
    recheck = wait ? setTimeout(() => void refresh(), 1000) : undefined;
  };

  const fail = (why: string) => {
    data = null;
    for (const k of Object.keys(keys) as (keyof typeof keys)[]) if (k !== "to") keys[k] = "";
    body.hidden = true;
    txt(count, "unavailable");
    root.classList.remove("firing");
    error.textContent = why;
    error.hidden = false;
  };

  const refresh = async (): Promise<void> => {
    // One request at a time; one asked meanwhile (after a change) follows it.
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      const a = await ask("api/alerts");
      status.hidden = true;
      if (a.status !== 200) {
        fail(a.status === 401 || a.status === 403
          ? `Alerts unavailable: not allowed (${a.status}); open the page with its ?token= link again.`
          : `Alerts unavailable: ${failure(a)}.`);
        return;
      }
      try {
        data = overviewOf(JSON.parse(a.body));
      } catch (e) {
        fail(`Alerts unavailable: ${(e as Error).message}.`);
        return;
      }
      offset = data.generated_ms - Date.now();
      settle(data);
      error.hidden = true;
      body.hidden = false;
      draw();
    } finally {
      busy = false;
      if (again) {
        again = false;
        void refresh();
      }
    }
  };

  // --- what a person does ------------------------------------------------------------------

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void subscribe();
  });

  async function subscribe() {
    const n = Number(fCount.value);
    if (!Number.isInteger(n) || n < 1 || n > 64) {
      formSay("Not asked: GPUs is a whole number, 1 to 64.", true);
      fCount.focus();
      return;
    }
    const [kind, ...rest] = fTo.value.split(":");
    const name = rest.join(":");
    if ((kind !== "user" && kind !== "channel") || !name) {
      formSay("Not asked: choose whom to tell.", true);
      fTo.focus();
      return;
    }
    const req: Record<string, unknown> = { count: n, [kind]: name, expires: fExp.value };
    const mem = memOf(fMem.value);
    if (mem) req.min_mem = mem;
    const host = fHost.value.trim();
    if (host) req.host = host;
    submit.disabled = true;
    try {
      const a = await ask("api/alerts/subscriptions", json("POST", req));
      if (a.status !== 201) {
        formSay(`Not asked: ${a.status === 400 ? reason(a) : failure(a)}.`, true);
        return;
      }
      let made: unknown;
      try {
        made = JSON.parse(a.body);
      } catch {
        made = null;
      }
      // `{ id, cancel_token, subscription }`: the token is kept with the id and created_ms.
      const m = isObj(made) ? made : {};
      const sub = isObj(m.subscription) ? m.subscription : {};
      const kept = int(m, "id") && str(m, "cancel_token") && sub.id === m.id && int(sub, "created_ms");
      if (kept) tokens.add(m.id as number, m.cancel_token as string, sub.created_ms as number);
      const where = host ? `on ${host}` : "anywhere";
      formSay(`Asked: ${kind === "user" ? name : `channel ${name}`} will be told once when ${n} GPU${n === 1 ? " is" : "s are"} free ${where}.` +
        (kept ? "" : " (This browser could not keep its cancel token: an admin can cancel it.)"));
      await refresh();
    } finally {
      submit.disabled = fTo.disabled;
    }
  }

  async function cancel(s: Sub, yours: boolean, b: HTMLButtonElement) {
    const id = s.id;
    b.disabled = true;
    const token = tokens.get(s);
    const a = yours && token !== undefined
      ? await ask(`api/alerts/subscriptions/${id}`, { method: "DELETE", headers: { "x-cancel-token": token } })
      : await adminAsk(`api/admin/alerts/subscriptions/${id}`, { method: "DELETE" });
    if (!a) {
      // No token (forgotten meanwhile): nothing was sent.
      b.disabled = false;
      return;
    }
    if (a.status === 200 || a.status === 404) {
      // Gone either way (404: told or expired meanwhile).
      tokens.drop(id);
      formSay(a.status === 200 ? `Cancelled request ${id}.` : `Request ${id} was already gone.`);
    } else if (a.status === 403 && yours) {
      // The token no longer cancels it (the hub's store was replaced): not "yours" any more.
      tokens.drop(id);
      formSay(`Not cancelled: the hub refused this browser's token for request ${id}.`, true);
    } else if (a.status !== 401) {
      formSay(`Not cancelled: ${failure(a)}.`, true);
    }
    b.disabled = false;
    keys.subs = "";
    await refresh();
  }

  async function silence(al: Alert, b: HTMLButtonElement) {
    b.disabled = true;
    const req: Record<string, unknown> = { rule: al.rule, host: al.host, for: SILENCE_FOR, comment: "from the page" };
    if (al.gpu != null) req.gpu = al.gpu;
    const a = await adminAsk("api/admin/alerts/silences", json("POST", req));
    if (!a) {
      // No token (forgotten meanwhile): nothing was sent.
      b.disabled = false;
      return;
    }
    b.disabled = false;
    if (a.status === 201) adminSay(`Silenced ${al.rule} on ${where({ host: al.host, gpu: al.gpu })} for ${SILENCE_FOR}.`);
    else if (a.status !== 401) {
      admin.open = true;
      adminSay(`Not silenced: ${failure(a)}.`, true);
    }
    await refresh();
  }

  async function unsilence(id: number, b: HTMLButtonElement) {
    b.disabled = true;
    const a = await adminAsk(`api/admin/alerts/silences/${id}`, { method: "DELETE" });
    if (!a) {
      // No token (forgotten meanwhile): nothing was sent.
      b.disabled = false;
      return;
    }
    b.disabled = false;
    if (a.status === 200 || a.status === 404) adminSay(`Silence ${id} removed.`);
    else if (a.status !== 401) {
      admin.open = true;
      adminSay(`Not removed: ${failure(a)}.`, true);
    }
    await refresh();
  }

  // The token is tried on a read-only admin route before it is kept: a wrong one is said at
  // once, not at the first silence.
  adminForm.addEventListener("submit", (e) => {
    e.preventDefault();
    void useToken();
  });

  async function useToken() {
    const t = aToken.value.trim();
    if (!t) {
      adminSay("Paste the admin token first.", true);
      aToken.focus();
      return;
    }
    aUse.disabled = true;
    const a = await ask("api/admin/hosts", { headers: { authorization: `Bearer ${t}` } });
    aUse.disabled = false;
    if (a.status === 200) {
      setAdminToken(t);
      aToken.value = "";
      adminSay("Admin token in use in this tab: firing alerts can be silenced, silences removed, any request cancelled.");
    } else if (a.status === 401) {
      adminSay("admin token wrong", true);
      aToken.select();
    } else {
      adminSay(`Token not checked: ${failure(a)}.`, true);
    }
    draw();
  }

  aForget.addEventListener("click", () => {
    setAdminToken(null);
    adminSay("Admin token forgotten.");
    draw();
    aToken.focus();
  });

  // Opening the panel shows what is true now, not up to a refresh ago.
  root.addEventListener("toggle", () => {
    if ((root as HTMLDetailsElement).open) void refresh();
  });

  draw();
  whileVisible(refresh, REFRESH_MS);

  return { refresh };
}
