// History on the page (the hub's /api/history and /api/usage): a details panel with charts of
// a host's or a GPU's series, a cluster-over-time view, and "who used what" over a span with a
// CSV export. Charts are uPlot: drag across a chart to zoom, double-click to zoom out.

import uPlot from "uplot";
import { el } from "./dom";
import { bytes } from "./fmt";

export const SPANS: Record<string, number> = {
  "1h": 3600e3,
  "24h": 24 * 3600e3,
  "7d": 7 * 24 * 3600e3,
  "30d": 30 * 24 * 3600e3,
};

interface Series {
  id: string;
  metric: string;
  tier: string;
  step_ms: number;
  t: number[];
  mean: (number | null)[];
  max: (number | null)[];
}

interface UserUsage {
  user: string;
  gpu_hours: number;
  gpu_mem_gib_hours: number;
  /** Of gpu_hours, those on GPUs that sat idle. */
  idle_gpu_hours: number;
  /** Mean utilization (%) of the GPUs held, over the time held; null: no GPU reported one. */
  mean_util: number | null;
  /** Energy drawn by the GPUs held (kWh); null: none reported power. */
  energy_kwh: number | null;
  hosts: string[];
}

interface Usage {
  from: number;
  to: number;
  users: UserUsage[];
}

/** "12.34", and a small amount with two figures ("0.0042"), not "0.00". */
export function amount(v: number): string {
  if (v === 0) return "0.00";
  return Math.abs(v) < 0.01 ? v.toPrecision(2) : v.toFixed(2);
}

/** A reading, or null when the hub has none (or an older hub does not say). */
const reading = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const amountOf = (v: unknown) => {
  const n = reading(v);
  return n === null ? null : amount(n);
};

/** A usage column: its heading, what it means, and its cell's text (null: no reading). */
const USAGE_COLUMNS: { key: string; head: string; title: string; text: (u: UserUsage) => string | null }[] = [
  { key: "gpu-hours", head: "GPU-hours", title: "hours of GPUs held, summed over GPUs", text: (u) => amountOf(u.gpu_hours) },
  { key: "mem-gib-hours", head: "GPU memory GiB-hours", title: "GPU memory the user's processes held, GiB × hours", text: (u) => amountOf(u.gpu_mem_gib_hours) },
  { key: "idle-gpu-hours", head: "idle GPU-hours", title: "of the GPU-hours, those on GPUs held but idle", text: (u) => amountOf(u.idle_gpu_hours) },
  { key: "mean-util", head: "mean util while held", title: "mean utilization of the GPUs held, over the time held",
    text: (u) => {
      const v = reading(u.mean_util);
      return v === null ? null : `${v.toFixed(0)} %`;
    } },
  { key: "energy-kwh", head: "energy kWh", title: "energy the GPUs held drew (GPUs that report power)",
    text: (u) => amountOf(u.energy_kwh) },
];

type Unit = "pct" | "bytes" | "num" | "c" | "w";
type Kind = "host" | "gpu" | "user" | "cluster";
/** One metric of one kind of id, as the hub's catalog names it (`/api/history/metrics`). */
interface MetricInfo {
  name: string;
  label: string;
  unit: Unit;
}

// The hub's catalog of what history keeps: the page takes metric names, labels and units from
// it, so a metric added to the hub appears here without a second list to keep in step.
let catalog: Promise<Record<Kind, MetricInfo[]>> | null = null;
function metricsOf(kind: Kind): Promise<MetricInfo[]> {
  catalog ??= getJson<Record<Kind, MetricInfo[]>>("api/history/metrics");
  return catalog.then(
    (c) => c[kind] ?? [],
    (e: unknown) => {
      catalog = null; // asked again next time
      throw e;
    },
  );
}

function fmtValue(u: Unit, v: number | null | undefined): string {
  if (v === null || v === undefined) return "n/a";
  switch (u) {
    case "bytes": return bytes(v);
    case "pct": return `${v.toFixed(0)} %`;
    case "c": return `${v.toFixed(0)} °C`;
    case "w": return `${v.toFixed(0)} W`;
    default: return v.toFixed(v < 10 ? 2 : 0);
  }
}

async function getJson<T>(path: string): Promise<T> {
  const r = await fetch(path, { credentials: "same-origin" });
  if (!r.ok) {
    let msg = `${r.status}`;
    try {
      msg = ((await r.json()) as { error?: string }).error ?? msg;
    } catch {
      /* not JSON */
    }
    throw new Error(msg);
  }
  return (await r.json()) as T;
}

function colors(): [string, string] {
  const cs = getComputedStyle(document.documentElement);
  return [cs.getPropertyValue("--spark-mem").trim() || "#48f", cs.getPropertyValue("--muted").trim() || "#888"];
}

/** One chart of one metric: mean (line) and max (thin); fetched for [from, to]. */
class Chart {
  readonly box = el("figure", "chart");
  private readonly caption = el("figcaption");
  private readonly note = el("span", "chartnote");
  private plot: uPlot | null = null;

  constructor(private readonly id: string, private readonly metric: string, label: string, private readonly unit: Unit) {
    this.box.dataset.metric = metric;
    this.caption.append(label, " ", this.note);
    this.box.append(this.caption);
  }

  async load(from: number, to: number, width: number) {
    this.note.textContent = "loading…";
    let s: Series;
    try {
      s = await getJson<Series>(`api/history?id=${encodeURIComponent(this.id)}&metric=${this.metric}&from=${Math.floor(from)}&to=${Math.floor(to)}`);
    } catch (e) {
      this.note.textContent = `unavailable: ${(e as Error).message}`;
      this.box.dataset.state = "error";
      return;
    }
    const points = s.t.length;
    this.box.dataset.points = String(points);
    this.box.dataset.state = "ok";
    const last = [...s.mean].reverse().find((v) => v !== null);
    this.note.textContent = `${s.tier === "raw" ? "raw samples" : `${s.tier} means and maxima`} · ${points} points${last !== undefined ? ` · last ${fmtValue(this.unit, last)}` : ""}`;
    const data: uPlot.AlignedData = [s.t.map((t) => t / 1000), s.mean, s.max];
    const [c1, c2] = colors();
    const fmt = (_u: uPlot, v: number | null) => fmtValue(this.unit, v);
    if (this.plot) this.plot.destroy();
    this.plot = new uPlot(
      {
        width, height: 160,
        scales: { x: { time: true, min: from / 1000, max: to / 1000 } },
        axes: [{ stroke: c2, grid: { stroke: "rgba(128,128,128,.15)" } },
               { stroke: c2, size: 70, grid: { stroke: "rgba(128,128,128,.15)" }, values: (_u, vs) => vs.map((v) => fmtValue(this.unit, v)) }],
        series: [{}, { label: "mean", stroke: c1, width: 1.5, value: fmt, spanGaps: false },
                 { label: "max", stroke: c1, width: 0.75, dash: [4, 3], value: fmt, spanGaps: false }],
        legend: { live: true },
      },
      data,
      this.box,
    );
    // For tests and the console: the chart's current x range (zoom state).
    (this.box as HTMLElement & { uplot?: uPlot }).uplot = this.plot;
    // A double-click zooms back out to the whole span (uPlot's own goes to the data's extent,
    // which for a young series is a few seconds).
    const plot = this.plot;
    plot.over.addEventListener("dblclick", () => plot.setScale("x", { min: from / 1000, max: to / 1000 }));
  }

  destroy() {
    this.plot?.destroy();
  }
}

/** A row of span buttons (1h, 24h, 7d, 30d). */
function spanButtons(current: string, onPick: (span: string) => void): HTMLElement {
  const g = el("div", "spans");
  g.setAttribute("role", "group");
  g.setAttribute("aria-label", "time span");
  for (const k of Object.keys(SPANS)) {
    const b = el("button", "span", k);
    b.type = "button";
    b.dataset.span = k;
    b.setAttribute("aria-pressed", String(k === current));
    b.onclick = () => {
      for (const o of g.querySelectorAll("button")) o.setAttribute("aria-pressed", String(o === b));
      onPick(k);
    };
    g.append(b);
  }
  return g;
}

/** A set of charts over a span, reloaded when the span changes. */
class ChartSet {
  readonly root = el("div", "chartset");
  private charts: Chart[] = [];
  private span = "1h";

  private readonly note = el("p", "chartnote");

  constructor(private readonly id: string, private readonly kind: Kind) {
    this.root.append(spanButtons(this.span, (s) => {
      this.span = s;
      void this.load();
    }));
  }

  private built: Promise<boolean> | null = null;

  /** The charts, one per metric of the catalog, made once (a second load waits for it). */
  private build(): Promise<boolean> {
    this.built ??= (async () => {
      try {
        for (const m of await metricsOf(this.kind)) {
          const c = new Chart(this.id, m.name, m.label, m.unit);
          this.charts.push(c);
          this.root.append(c.box);
        }
        this.note.remove();
        return true;
      } catch (e) {
        this.built = null;
        this.note.textContent = `history not available: ${(e as Error).message}`;
        this.root.append(this.note);
        return false;
      }
    })();
    return this.built;
  }

  async load() {
    if (!(await this.build())) return;
    const to = Date.now(), from = to - SPANS[this.span];
    const w = Math.max(260, Math.min(760, this.root.clientWidth || 600) - 8);
    await Promise.all(this.charts.map((c) => c.load(from, to, w)));
  }

  destroy() {
    for (const c of this.charts) c.destroy();
  }
}

// --- the details panel -------------------------------------------------------------------

const panel = el("aside", "details");
panel.id = "details";
panel.hidden = true;
panel.setAttribute("role", "dialog");
panel.setAttribute("aria-modal", "false");
const panelTitle = el("h2");
panelTitle.id = "details-title";
panel.setAttribute("aria-labelledby", panelTitle.id);
const closeBtn = el("button", "close", "close");
closeBtn.type = "button";
closeBtn.setAttribute("aria-label", "Close the details");
const panelHead = el("header");
panelHead.append(panelTitle, closeBtn);
const panelBody = el("div");
panel.append(panelHead, panelBody);
let current: ChartSet | null = null;
let returnFocus: HTMLElement | null = null;

export function openDetails(id: string, title: string, kind: "host" | "gpu", from?: HTMLElement) {
  current?.destroy();
  returnFocus = from ?? null;
  panelTitle.textContent = title;
  panel.dataset.id = id;
  current = new ChartSet(id, kind);
  panelBody.replaceChildren(current.root);
  panel.hidden = false;
  closeBtn.focus();
  void current.load();
}

function closeDetails() {
  panel.hidden = true;
  current?.destroy();
  current = null;
  returnFocus?.focus();
}
closeBtn.onclick = closeDetails;
panel.addEventListener("keydown", (e) => {
  if (e.key === "Escape") closeDetails();
});

// --- cluster over time and who used what --------------------------------------------------

function clusterSection(): HTMLElement {
  const d = el("details", "history");
  d.id = "cluster";
  const s = el("summary", undefined, "Cluster over time");
  d.append(s);
  let set: ChartSet | null = null;
  d.addEventListener("toggle", () => {
    if (d.open && !set) {
      set = new ChartSet("cluster", "cluster");
      d.append(set.root);
    }
    if (d.open) void set?.load();
  });
  return d;
}

function usageSection(): HTMLElement {
  const d = el("details", "history");
  d.id = "usage";
  d.append(el("summary", undefined, "Who used what"));
  const body = el("div");
  const status = el("p", "chartnote");
  const csv = el("a", "csv", "export CSV");
  csv.id = "usage-csv";
  const table = el("table", "usage");
  const head = el("tr");
  head.append(el("th", undefined, "user"));
  for (const c of USAGE_COLUMNS) {
    const th = el("th", "num", c.head);
    th.dataset.col = c.key;
    th.title = c.title;
    head.append(th);
  }
  head.append(el("th", undefined, "hosts"));
  const thead = el("thead");
  thead.append(head);
  const tbody = el("tbody");
  table.append(thead, tbody);
  let span = "24h";
  // Spans picked quickly: only the last one's answer is drawn.
  let asked = 0;
  const load = async () => {
    const n = ++asked;
    const to = Date.now(), from = to - SPANS[span];
    const q = `from=${from}&to=${to}`;
    csv.href = `api/usage?${q}&format=csv`;
    csv.setAttribute("download", "");
    status.textContent = "loading…";
    try {
      const u = await getJson<Usage>(`api/usage?${q}`);
      if (n !== asked) return;
      // The span drawn (the hub's from and to), for tests and the console.
      table.dataset.from = String(u.from);
      table.dataset.to = String(u.to);
      tbody.replaceChildren(
        ...u.users.map((r) => {
          const tr = el("tr");
          tr.dataset.user = r.user;
          tr.dataset.gpuHours = String(r.gpu_hours);
          tr.append(el("td", undefined, r.user));
          for (const c of USAGE_COLUMNS) {
            const v = c.text(r);
            // Unknown is said so, never shown as 0.
            const td = el("td", v === null ? "num na" : "num", v ?? "–");
            td.dataset.col = c.key;
            if (v === null) td.title = "no reading";
            tr.append(td);
          }
          tr.append(el("td", undefined, r.hosts.join(", ")));
          return tr;
        }),
      );
      status.textContent = u.users.length ? `${u.users.length} users over the last ${span}` : `nobody held a GPU in the last ${span}`;
    } catch (e) {
      if (n === asked) status.textContent = `unavailable: ${(e as Error).message}`;
    }
  };
  body.append(spanButtons(span, (s) => {
    span = s;
    void load();
  }), status, table, csv);
  d.append(body);
  d.addEventListener("toggle", () => {
    if (d.open) void load();
  });
  return d;
}

/** Adds the history views to the page; `main` holds the host cards and rows. */
export function installHistory(main: HTMLElement) {
  const bar = el("div", "historybar");
  bar.append(clusterSection(), usageSection());
  main.before(bar);
  document.body.append(panel);
  const open = (target: HTMLElement) => {
    const gpu = target.closest<HTMLElement>("tr.gpu, .chip");
    const host = target.closest<HTMLElement>("article.host, tr.hrow");
    if (gpu?.dataset.gpu !== undefined) {
      const h = gpu.closest<HTMLElement>("[data-host]")?.dataset.host ?? gpu.dataset.host;
      if (!h) return false;
      openDetails(`${h}/gpu${gpu.dataset.gpu}`, `${h} · GPU ${gpu.dataset.gpu}`, "gpu", gpu);
      return true;
    }
    if (host?.dataset.host) {
      openDetails(host.dataset.host, `host ${host.dataset.host}`, "host", host);
      return true;
    }
    return false;
  };
  main.addEventListener("click", (e) => {
    const t = e.target as HTMLElement;
    if (t.closest("a, button, input, select, .proclist")) return;
    // A click that ends a text selection is not a request for details.
    if (String(window.getSelection() ?? "") !== "") return;
    open(t);
  });
  main.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    const t = e.target as HTMLElement;
    if (!t.matches("tr.gpu, article.host, tr.hrow")) return;
    if (open(t)) e.preventDefault();
  });
}
