// Tiny DOM helpers: build once, then write only what changed.

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const last = new WeakMap<Node, string>();

/**
 * Sets the text only when it differs from what this code last wrote (no DOM read). An
 * element holding one text node gets that node's text changed, not a new node: the browser
 * then re-lays out the text, where `textContent` would replace the node (and its layout
 * object) on every update of a value that changes every second.
 */
export function txt(e: HTMLElement, v: string) {
  if (last.get(e) === v) return;
  last.set(e, v);
  const t = e.firstChild;
  if (t !== null && t === e.lastChild && t.nodeType === Node.TEXT_NODE && v !== "") (t as Text).data = v;
  else e.textContent = v;
}

const lastAttr = new WeakMap<Element, Map<string, string>>();

export function attr(e: Element, name: string, v: string) {
  let m = lastAttr.get(e);
  if (!m) lastAttr.set(e, (m = new Map()));
  if (m.get(name) !== v) {
    m.set(name, v);
    e.setAttribute(name, v);
  }
}

export function cls(e: Element, v: string) {
  attr(e, "class", v);
}

export function show(e: HTMLElement, on: boolean) {
  if (e.hidden === on) e.hidden = !on;
}

/**
 * Sets an element's width when it changed, through the CSSOM: the hub's Content-Security-Policy
 * (`style-src 'self'`) blocks style attributes, not style properties.
 */
function width(e: HTMLElement, v: string) {
  if (e.style.width !== v) e.style.width = v;
}

/** A used/total bar; `frac` undefined = unavailable (striped, no fill). */
export function bar(e: HTMLElement, fill: HTMLElement, frac: number | undefined, warnAt?: number) {
  if (frac === undefined) {
    cls(e, "bar na");
    width(fill, "0px");
    return;
  }
  const w = Math.max(0, Math.min(100, frac * 100));
  cls(e, warnAt !== undefined && frac >= warnAt ? "bar warn" : "bar");
  width(fill, `${w.toFixed(1)}%`);
}

/**
 * Calls `f` now and every `ms` while the page is visible, and again as soon as it is visible
 * again: a hidden tab asks nothing (the panels' refresh loops).
 */
export function whileVisible(f: () => Promise<void>, ms: number) {
  let timer: ReturnType<typeof setInterval> | undefined;
  const visible = () => {
    clearInterval(timer);
    timer = undefined;
    if (document.visibilityState !== "visible") return;
    void f();
    timer = setInterval(() => void f(), ms);
  };
  document.addEventListener("visibilitychange", visible);
  visible();
}
