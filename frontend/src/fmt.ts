// Formatting: units a person reads at a glance. `undefined` means unavailable, never 0.

export const NA = "n/a";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

export function bytes(b: number | undefined): string {
  if (b === undefined) return NA;
  if (b >= 1024 * GiB) return `${(b / (1024 * GiB)).toFixed(1)} TiB`;
  if (b >= GiB) return `${(b / GiB).toFixed(1)} GiB`;
  if (b >= MiB) return `${Math.round(b / MiB)} MiB`;
  if (b === 0) return "0 B";
  return `${Math.round(b / 1024)} KiB`;
}

/** "3 h 12 min", "4 d 2 h", "45 s". */
export function duration(s: number | undefined): string {
  if (s === undefined) return NA;
  s = Math.max(0, Math.floor(s));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

/** "5 min ago", from unix ms. */
export function ago(ms: number, now: number): string {
  if (!ms) return "never";
  const s = (now - ms) / 1000;
  if (s < 5) return "just now";
  return `${duration(s)} ago`;
}

export function pct(v: number | undefined): string {
  return v === undefined ? NA : `${Math.round(v)} %`;
}

export function num(v: bigint | number | undefined): number | undefined {
  return v === undefined ? undefined : Number(v);
}

/** A host clock's difference from the hub's, when it is large enough to matter (2 s and more:
 * below that it is mostly network delay); "" otherwise. */
export function clockSkew(ms: bigint | undefined): string {
  if (ms === undefined) return "";
  const v = Number(ms);
  if (Math.abs(v) < 2000) return "";
  return `clock ${duration(Math.round(Math.abs(v) / 1000))} ${v > 0 ? "ahead" : "behind"}`;
}

/** Who holds a GPU: the user name, or "uid N" for a uid without one. */
export function holder(h: { uid: number; username: string }): string {
  return h.username || `uid ${h.uid}`;
}

/** Minutes left until `untilMs` (Unix ms), rounded up: a hold with 3 min 10 s left has 4. */
export function minutesLeft(untilMs: bigint | number, now: number): number {
  return Math.max(0, Math.ceil((Number(untilMs) - now) / 60000));
}

/** "held by alice for 4 min", "held by uid 1001 for 1 h 5 min" (time left, rounded up). */
export function heldBy(h: { uid: number; username: string; untilMs: bigint | number }, now: number): string {
  return `held by ${holder(h)} for ${duration(minutesLeft(h.untilMs, now) * 60)}`;
}
