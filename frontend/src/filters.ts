// The view's settings: kept in the URL (so a view can be shared) except "I am", which is the
// user's own and kept in localStorage.

export type Sort = "id" | "free" | "util" | "mem" | "status";
export type View = "cards" | "table";

export interface Filters {
  q: string;
  host: string;
  user: string;
  mine: boolean;
  me: string;
  free: boolean;
  fmem: number;
  futil: number;
  sort: Sort;
  view: View;
}

export const DEFAULTS: Filters = {
  q: "", host: "", user: "", mine: false, me: "", free: false,
  fmem: 1024, futil: 5, sort: "id", view: "cards",
};

const ME_KEY = "hmonitor.me";
const SORTS: Sort[] = ["id", "free", "util", "mem", "status"];

function store(): Storage | undefined {
  try {
    return window.localStorage;
  } catch {
    return undefined; // storage disabled: "only mine" then lasts for the page's life
  }
}

export function load(): Filters {
  const p = new URLSearchParams(location.search);
  const n = (k: string, d: number) => {
    const v = Number(p.get(k));
    return p.has(k) && Number.isFinite(v) && v >= 0 ? v : d;
  };
  const sort = p.get("sort") as Sort;
  return {
    q: p.get("q") ?? "",
    host: p.get("host") ?? "",
    user: p.get("user") ?? "",
    mine: p.get("mine") === "1",
    me: store()?.getItem(ME_KEY) ?? "",
    free: p.get("free") === "1",
    fmem: n("fmem", DEFAULTS.fmem),
    futil: n("futil", DEFAULTS.futil),
    sort: SORTS.includes(sort) ? sort : DEFAULTS.sort,
    view: p.get("view") === "table" ? "table" : "cards",
  };
}

export function save(f: Filters) {
  const p = new URLSearchParams(location.search);
  const set = (k: string, v: string, d: string) => (v === d ? p.delete(k) : p.set(k, v));
  set("q", f.q, "");
  set("host", f.host, "");
  set("user", f.user, "");
  set("mine", f.mine ? "1" : "", "");
  set("free", f.free ? "1" : "", "");
  set("fmem", String(f.fmem), String(DEFAULTS.fmem));
  set("futil", String(f.futil), String(DEFAULTS.futil));
  set("sort", f.sort, DEFAULTS.sort);
  set("view", f.view, DEFAULTS.view);
  const qs = p.toString();
  history.replaceState(null, "", qs ? `?${qs}` : location.pathname);
  const s = store();
  if (s) {
    if (f.me) s.setItem(ME_KEY, f.me);
    else s.removeItem(ME_KEY);
  }
}
