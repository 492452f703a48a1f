// One view per host, keyed by host id: a card (cards view) or a row (compact table view),
// built once and then updated in place, writing only what changed. Views off screen are not
// touched (nor their host's report decoded) until they scroll into view (main.ts tracks which
// are), which keeps the work per frame bounded by what a person can see, not by the cluster's
// size.

import uPlot from "uplot";
import { ErrorKind, HostStatus, type GPUInfo, type HostInfo, type ProcInfo } from "./gen/gpu_pb";
import { attr, bar, cls, el, show, txt } from "./dom";
import { ago, bytes, clockSkew, duration, heldBy, NA, num, pct } from "./fmt";
import type { View } from "./filters";
import {
  gpuState, holdActive, stateOf, STATE_LABEL, STATE_TITLE, verdicts, type Facts, type GpuState, type HostRec, type Match, type Ring,
  type Thresholds, type Verdict,
} from "./model";

const STATUS_LABEL: Record<number, string> = {
  [HostStatus.UP]: "up",
  [HostStatus.DOWN]: "down",
  [HostStatus.NEVER_SEEN]: "never seen",
  [HostStatus.UNSPECIFIED]: "unknown",
};

const baseClass = new WeakMap<HTMLElement, string>();

/** A value cell: grey italic "n/a" with a tooltip when unavailable. */
function na(e: HTMLElement, v: string) {
  let base = baseClass.get(e);
  if (base === undefined) baseClass.set(e, (base = e.className));
  txt(e, v);
  cls(e, v === NA ? `${base} na` : base);
  attr(e, "title", v === NA ? "unavailable" : "");
}

function procLine(p: ProcInfo): string {
  const parts = [
    p.username ?? (p.uid !== undefined ? `uid ${p.uid}` : "unknown user"),
    p.basename ?? `pid ${p.pid}`,
    p.mem !== undefined ? bytes(Number(p.mem)) : `mem ${NA}`,
    duration(num(p.expiration)),
    p.utilization !== undefined ? `SM ${p.utilization} %` : `SM ${NA}`,
  ];
  if (p.container) parts.push(`${p.containerRuntime ?? "container"} ${p.container.slice(0, 12)}`);
  return parts.join(" · ");
}

/** A process line: its text, and the pid, user and command line as attributes. */
function fillProc(li: HTMLLIElement, p: ProcInfo): HTMLLIElement {
  txt(li, procLine(p));
  attr(li, "data-pid", String(p.pid));
  attr(li, "data-user", p.username ?? "");
  attr(li, "title", p.cmdline ?? "");
  return li;
}

function sparkColors(): [string, string] {
  const cs = getComputedStyle(document.documentElement);
  return [cs.getPropertyValue("--spark-util").trim() || "#2a7", cs.getPropertyValue("--spark-mem").trim() || "#48f"];
}

const SPARK_W = 96, SPARK_H = 24;
let sparkPlot: uPlot | null = null;
/** Sparklines still allowed in this animation frame (each is about half a millisecond). */
let sparkBudget = 0;

/** GPU rows still allowed in this animation frame (each costs the browser layout and paint). */
let rowBudget = Infinity;

/** Called once per animation frame: how many sparklines and GPU rows that frame may redraw. */
export function sparkFrame(n: number, rows = Infinity) {
  sparkBudget = n;
  rowBudget = rows;
}

/**
 * Draws a sparkline with one shared, detached uPlot and returns it as an image. A canvas per
 * GPU row made the browser composite dozens of canvas layers on every frame (10 ms of each
 * frame's 30 at 500 hosts); images are plain content.
 */
function sparkline(data: uPlot.AlignedData): string {
  if (!sparkPlot) {
    const [cu, cm] = sparkColors();
    sparkPlot = new uPlot(
      {
        width: SPARK_W, height: SPARK_H, pxAlign: false,
        legend: { show: false }, cursor: { show: false }, select: { show: false, left: 0, top: 0, width: 0, height: 0 },
        axes: [{ show: false }, { show: false }],
        scales: { x: { time: false }, y: { range: [0, 100] } },
        series: [{}, { stroke: cu, width: 1.5, points: { show: false } }, { stroke: cm, width: 1, points: { show: false } }],
      },
      data,
    );
  } else {
    // batch(): draw now, not in a microtask, so the canvas holds this series when read.
    const p = sparkPlot;
    p.batch(() => p.setData(data));
  }
  return sparkPlot.ctx.canvas.toDataURL();
}

class GpuView {
  readonly tr = el("tr", "gpu");
  readonly procsTr = el("tr", "procs");
  // Values that change every second sit in fixed-size boxes (`.v`, size and layout containment): a new
  // text re-lays out that box alone, not the table and the card around it.
  private readonly idx = el("span", "v");
  private readonly name = el("td", "name");
  private readonly state = el("span", "state");
  private readonly memBar = el("span", "bar");
  private readonly memFill = el("span", "fill");
  private readonly memTxt = el("span", "bartxt");
  private readonly util = el("span", "v");
  private readonly temp = el("span", "v");
  private readonly fan = el("span", "v");
  private readonly power = el("span", "v");
  private readonly sparkTd = el("td", "spark");
  private readonly procList = el("ul", "proclist");
  private readonly gpuErr = el("p", "gpuerr");
  private readonly gpuHold = el("p", "gpuhold");
  private procKey = "";
  private readonly sparkImg = el("img", "sparkimg");
  sparkVersion = -1;
  st: GpuState = "unknown";

  constructor(hostId: string, readonly index: number) {
    this.tr.id = `gpu-${hostId}-${index}`;
    this.tr.dataset.host = hostId;
    this.tr.dataset.gpu = String(index);
    this.tr.tabIndex = 0;
    const cell = (c: string, ...kids: HTMLElement[]) => {
      const td = el("td", c);
      if (kids.length === 1 && kids[0].className === "v") td.append(kids[0]);
      else {
        const v = el("div", "v");
        v.append(...kids);
        td.append(v);
      }
      return td;
    };
    this.memBar.append(this.memFill);
    this.tr.append(
      cell("idx", this.idx), this.name, cell("st", this.state), cell("mem", this.memBar, this.memTxt),
      cell("util", this.util), cell("temp", this.temp), cell("fan", this.fan), cell("power", this.power), this.sparkTd,
    );
    const td = el("td");
    td.colSpan = 9;
    td.append(this.gpuErr, this.gpuHold, this.procList);
    this.procsTr.append(td);
    this.procsTr.dataset.host = hostId;
    this.procsTr.dataset.gpu = String(index);
    this.sparkImg.width = SPARK_W;
    this.sparkImg.height = SPARK_H;
    this.sparkImg.alt = "utilization (green) and memory (blue), last minutes";
    this.sparkImg.title = this.sparkImg.alt;
    this.sparkImg.decoding = "async";
    this.sparkTd.append(this.sparkImg);
  }

  /** `verdict`: whether the hub lists this GPU among its host's free or settling ones. */
  update(g: GPUInfo | undefined, up: boolean, th: Thresholds, verdict: Verdict = undefined, now = Date.now()) {
    if (!g) {
      // Was reported before, missing now: the GPU fell off the bus.
      this.st = up ? "lost" : "down";
      txt(this.state, up ? "lost" : STATE_LABEL.down);
      attr(this.state, "title", up ? "reported before, missing from the last report" : "");
      cls(this.state, `state s-${this.st}`);
      cls(this.tr, `gpu s-${this.st}`);
      show(this.procsTr, false);
      return;
    }
    this.st = gpuState(g, up, th, verdict, now);
    cls(this.tr, `gpu s-${this.st}`);
    txt(this.idx, String(g.id));
    txt(this.name, g.name || NA);
    txt(this.state, STATE_LABEL[this.st]);
    cls(this.state, `state s-${this.st}`);
    // Why a GPU is lost or in error goes on its own line, under the row.
    txt(this.gpuErr, g.err);
    show(this.gpuErr, g.err !== "");
    // Who holds it (advisory, `hmonitor wait` / `hold`) and for how long yet, likewise.
    const held = up && holdActive(g.hold, now) && g.hold ? heldBy(g.hold, now) : "";
    txt(this.gpuHold, held);
    show(this.gpuHold, held !== "");
    attr(this.state, "title", held || (STATE_TITLE[this.st] ?? ""));
    const used = num(g.memUsed), total = num(g.memTotal);
    bar(this.memBar, this.memFill, used !== undefined && total ? used / total : undefined);
    txt(this.memTxt, `${bytes(used)} / ${bytes(total)}`);
    na(this.util, pct(g.utilization));
    na(this.temp, g.temp === undefined ? NA : `${g.temp} °C`);
    na(this.fan, pct(g.fanspeed));
    const pw = g.powerDrawMw, pl = g.powerLimitMw;
    na(this.power, pw === undefined ? NA : `${Math.round(pw / 1000)}${pl !== undefined ? ` / ${Math.round(pl / 1000)}` : ""} W`);
    const key = g.procs.map(procLine).join("\n");
    if (key !== this.procKey) {
      this.procKey = key;
      const lis = this.procList.children as HTMLCollectionOf<HTMLLIElement>;
      if (lis.length === g.procs.length) {
        // The same processes, new figures (their running time moves every second): new text
        // in the existing lines, no new elements.
        g.procs.forEach((p, k) => fillProc(lis[k], p));
      } else this.procList.replaceChildren(...g.procs.map((p) => fillProc(el("li", "proc"), p)));
    }
    show(this.procsTr, g.procs.length > 0 || g.err !== "" || held !== "");
  }

  private sparkAt = 0;

  spark(ring: Ring | undefined, version: number) {
    if (!ring || version === this.sparkVersion) return;
    // Five minutes in 96 px: a new sample moves the line a third of a pixel. Redrawing every
    // 3 s shows the same picture for a fraction of the work.
    const now = performance.now();
    if (this.sparkImg.src && now - this.sparkAt < 3000) return;
    // Left for a later frame (the host's next report) when this one has drawn its share.
    if (sparkBudget <= 0) return;
    sparkBudget--;
    // Jittered, so that rows drawn together do not all come due in the same frame again.
    this.sparkAt = now + Math.random() * 1000;
    this.sparkVersion = version;
    this.sparkImg.src = sparkline(ring.series() as uPlot.AlignedData);
  }

  destroy() {}
}

const HEAD = ["#", "GPU", "state", "memory", "util", "temp", "fan", "power", "trend"];

export class HostView {
  readonly card = el("article", "host");
  readonly row = el("tr", "hrow");
  f: Facts | null = null;
  m: Match = { host: true, gpus: null };
  onScreen = false;
  drawn = -1; // rec.version last drawn
  factsFor = -1; // rec.version of `f` and `m`
  private built: View | null = null;
  private readonly gpus = new Map<number, GpuView>();
  // card parts
  private readonly status = el("span", "status");
  private readonly seen = el("span", "seen");
  private readonly hostname = el("span", "hostname");
  private readonly addr = el("span", "addr");
  private readonly skew = el("span", "skew");
  private readonly factsLine = el("p", "facts");
  private readonly disks = el("div", "disks");
  private disksKey = "";
  private readonly err = el("p", "err");
  private readonly tbody = el("tbody");
  private readonly gpuWrap = el("div", "gpuwrap");
  // row parts
  private readonly rStatus = el("td", "status");
  private readonly rAddr = el("td", "addr");
  private readonly rChips = el("td", "chips");
  private readonly rFree = el("td", "num");
  private readonly rUtil = el("td", "num");
  private readonly rMem = el("td", "num");
  private readonly rUsers = el("td", "users");
  private readonly rSeen = el("td", "seen");
  private chipKey = "";

  constructor(readonly id: string) {
    for (const e of [this.card, this.row]) {
      e.dataset.host = id;
      e.tabIndex = 0;
    }
    this.card.id = `host-${id}`;
    this.row.id = `row-${id}`;
  }

  private buildCard() {
    const h = el("header");
    const h2 = el("h2", "hid", this.id);
    h.append(h2, this.status, this.seen, this.hostname, this.addr, this.skew);
    const table = el("table", "gpus");
    const thead = el("thead");
    const tr = el("tr");
    for (const t of HEAD) tr.append(el("th", undefined, t));
    thead.append(tr);
    table.append(thead, this.tbody);
    const wrap = this.gpuWrap;
    wrap.append(table);
    this.card.setAttribute("aria-label", `host ${this.id}`);
    this.card.append(h, this.factsLine, this.disks, this.err, wrap);
  }

  private buildRow() {
    const idTd = el("th", "hid", this.id);
    idTd.scope = "row";
    this.row.append(idTd, this.rStatus, this.rAddr, this.rChips, this.rFree, this.rUtil, this.rMem, this.rUsers, this.rSeen);
  }

  element(view: View): HTMLElement {
    if (this.built !== view) {
      if (view === "cards" && !this.card.firstChild) this.buildCard();
      if (view === "table" && !this.row.firstChild) this.buildRow();
      this.built = view;
      this.drawn = -1;
    }
    return view === "cards" ? this.card : this.row;
  }

  /** Writes the host's state into the DOM of the current view. */
  /** `drawn` becomes the record's version once every part is drawn (a card may take two frames). */
  draw(r: HostRec, view: View, th: Thresholds, now: number) {
    if (view === "cards") {
      if (this.drawCard(r, th, now)) this.drawn = r.version;
    } else {
      this.drawRow(r, th, now);
      this.drawn = r.version;
    }
  }

  refreshSeen(r: HostRec, view: View, now: number) {
    const t = this.seenText(r, now);
    txt(view === "cards" ? this.seen : this.rSeen, t);
  }

  private seenText(r: HostRec, now: number, info?: HostInfo): string {
    if (r.status === HostStatus.UP) return view_uptime(info);
    return `last seen ${ago(r.lastSeenMs, now)}`;
  }

  /** GPU rows still to draw (from the last frame's) before the card is complete. */
  private nextGpu = 0;
  private partOf = -1;

  private drawCard(r: HostRec, th: Thresholds, now: number): boolean {
    const s = stateOf(r);
    if (!s) return true;
    const i = s.info, up = s.status === HostStatus.UP;
    cls(this.card, `host ${up ? "up" : "down"}`);
    txt(this.status, STATUS_LABEL[s.status] ?? "unknown");
    cls(this.status, `status st-${up ? "up" : "down"}`);
    txt(this.seen, this.seenText(r, now, i));
    txt(this.hostname, i?.hostname && i.hostname !== s.id ? i.hostname : "");
    const ips = [s.addr, i?.ip && i.ip !== s.addr ? `reports ${i.ip}` : ""].filter(Boolean).join(", ");
    txt(this.addr, ips);
    attr(this.addr, "title", "address as the hub saw it");
    txt(this.skew, clockSkew(s.clockSkewMs));
    attr(this.skew, "title", "this host's clock minus the hub's, from its last sample: set the host's clock (NTP)");
    if (i) {
      const load = i.load ? `load ${i.load.one.toFixed(2)} ${i.load.five.toFixed(2)} ${i.load.fifteen.toFixed(2)}` : `load ${NA}`;
      txt(
        this.factsLine,
        [
          `driver ${i.driverVersion ?? NA}`,
          `CUDA ${i.cudaVersion ?? NA}`,
          `CPU ${pct(i.cpuUtil)}${i.cpuCount ? ` of ${i.cpuCount}` : ""}`,
          `mem ${bytes(num(i.memUsed))} / ${bytes(num(i.memTotal))}`,
          load,
        ].join(" · "),
      );
      const dk = i.disks.map((d) => `${d.mount}|${d.used}|${d.total}`).join(";");
      if (dk !== this.disksKey) {
        this.disksKey = dk;
        this.disks.replaceChildren(
          ...i.disks.map((d) => {
            const used = Number(d.used), total = Number(d.total);
            const frac = total > 0 ? used / total : undefined;
            const wrap = el("span", "disk");
            const b = el("span", "bar"), f = el("span", "fill");
            b.append(f);
            bar(b, f, frac, 0.9);
            wrap.title = d.device;
            wrap.append(el("span", "mount", d.mount), b, el("span", "bartxt", `${bytes(used)} / ${bytes(total)}`));
            if (frac !== undefined && frac >= 0.9) wrap.classList.add("warn");
            return wrap;
          }),
        );
      }
    } else {
      txt(this.factsLine, "no report yet");
    }
    const err = [i?.err, i?.stale ? "report partly stale" : "", i?.errKind === ErrorKind.NO_DRIVER && !i.err ? "no NVIDIA driver" : ""]
      .filter(Boolean)
      .join("; ");
    txt(this.err, err);
    show(this.err, err !== "");
    // GPUs: keyed by index; one that disappears stays, shown as lost.
    const seenIdx = new Set<number>();
    const list = i?.gpus ?? [];
    const verdict = verdicts(s);
    // Rows left from an older report: the whole card again, from this one.
    if (this.partOf !== r.version) this.nextGpu = 0;
    for (let k = 0; k < list.length; k++) {
      const g = list[k];
      seenIdx.add(g.id);
      if (k < this.nextGpu) continue; // drawn in the last frame
      if (rowBudget <= 0) {
        // This frame has drawn its share of rows: the rest in the next one.
        this.nextGpu = k;
        this.partOf = r.version;
        return false;
      }
      rowBudget--;
      let gv = this.gpus.get(g.id);
      if (!gv) {
        gv = new GpuView(this.id, g.id);
        this.gpus.set(g.id, gv);
        this.insertGpu(gv);
      }
      gv.update(g, up, th, verdict.get(g.id), now);
      const keep = this.m.gpus === null || this.m.gpus.has(g.id);
      show(gv.tr, keep);
      if (!keep) show(gv.procsTr, false);
      if (keep && this.onScreen) gv.spark(r.rings.get(g.id), r.version);
    }
    this.nextGpu = 0;
    for (const [idx, gv] of this.gpus) if (!seenIdx.has(idx)) gv.update(undefined, up, th);
    show(this.gpuWrap, this.gpus.size > 0);
    return true;
  }

  private insertGpu(gv: GpuView) {
    // Keep rows in index order even when GPUs appear late.
    let before: Element | null = null;
    for (const [idx, other] of this.gpus) if (idx > gv.index && (!before || idx < Number((before as HTMLElement).dataset.gpu))) before = other.tr;
    this.tbody.insertBefore(gv.tr, before);
    this.tbody.insertBefore(gv.procsTr, before);
  }

  private drawRow(r: HostRec, th: Thresholds, now: number) {
    const s = stateOf(r);
    if (!s) return;
    const up = s.status === HostStatus.UP, f = this.f;
    cls(this.row, `hrow ${up ? "up" : "down"}`);
    txt(this.rStatus, STATUS_LABEL[s.status] ?? "unknown");
    txt(this.rAddr, s.addr);
    const gpus = s.info?.gpus ?? [];
    const verdict = verdicts(s);
    const states = gpus.map((g) => gpuState(g, up, th, verdict.get(g.id), now));
    const holds = gpus.map((g, k) => (states[k] === "held" && g.hold ? heldBy(g.hold, now) : ""));
    const key = gpus.map((g, k) => `${g.id}:${states[k]}:${g.utilization ?? "-"}:${holds[k]}:${this.m.gpus === null || this.m.gpus.has(g.id)}`).join(",");
    if (key !== this.chipKey) {
      this.chipKey = key;
      this.rChips.replaceChildren(
        ...gpus.map((g, k) => {
          const c = el("span", `chip s-${states[k]}`, g.utilization === undefined ? NA : `${g.utilization}`);
          c.dataset.gpu = String(g.id);
          c.id = `chip-${this.id}-${g.id}`;
          c.title = `GPU ${g.id} ${g.name}: ${holds[k] || STATE_LABEL[states[k]] + (STATE_TITLE[states[k]] ? ` (${STATE_TITLE[states[k]]})` : "")}, ${pct(g.utilization)}, ${bytes(num(g.memUsed))} / ${bytes(num(g.memTotal))}`;
          if (!(this.m.gpus === null || this.m.gpus.has(g.id))) c.classList.add("dim");
          return c;
        }),
      );
    }
    if (!gpus.length) txt(this.rChips, s.info?.err || "no GPUs");
    txt(this.rFree, f ? `${f.free} / ${f.gpus}` : NA);
    txt(this.rUtil, f && f.utilN ? `${Math.round(f.utilSum / f.utilN)} %` : NA);
    txt(this.rMem, f && f.memTotal ? `${bytes(f.memUsed)} / ${bytes(f.memTotal)}` : NA);
    txt(this.rUsers, f ? [...f.users].sort().join(", ") : "");
    txt(this.rSeen, this.seenText(r, now, s.info));
  }

  destroy() {
    for (const g of this.gpus.values()) g.destroy();
    this.card.remove();
    this.row.remove();
  }
}

function view_uptime(i: HostInfo | undefined): string {
  return i?.uptimeS !== undefined ? `up ${duration(Number(i.uptimeS))}` : "";
}
