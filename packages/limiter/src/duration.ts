// Windows are written the way operators say them ('30s', '5m', '1h', '1d'); the limiter works in ms.

/** A window: `'<n>s'`, `'<n>m'`, `'<n>h'`, `'<n>d'` (also `sec`, `min`, `hour`, `day`), or milliseconds. */
export type Duration = string | number;

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  second: 1000,
  seconds: 1000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
  days: 86_400_000,
};

const PATTERN = /^(\d+)\s*([a-z]+)$/;

/** The window in milliseconds, or undefined when `value` is not a positive duration. */
export function durationMs(value: unknown): number | undefined {
  if (typeof value === 'number') {
    return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  }
  if (typeof value !== 'string') return undefined;
  const match = PATTERN.exec(value.trim().toLowerCase());
  if (!match) return undefined;
  const unit = UNIT_MS[match[2] as string];
  if (unit === undefined) return undefined;
  const ms = Number(match[1]) * unit;
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

/** Like {@link durationMs} but throws, for values that were validated before. */
export function toMs(value: Duration): number {
  const ms = durationMs(value);
  if (ms === undefined)
    throw new TypeError(`not a duration: ${String(value)} (use e.g. '30s', '5m', '1h', '1d')`);
  return ms;
}

/** A wait as a person reads it in an SMTP reply: "37 s", "5 min", "2 h", "1 d" (rounded up). */
export function formatWait(ms: number): string {
  if (!Number.isFinite(ms)) return 'a while';
  const s = Math.max(1, Math.ceil(ms / 1000));
  if (s < 120) return `${s} s`;
  const min = Math.ceil(s / 60);
  if (min < 120) return `${min} min`;
  const h = Math.ceil(min / 60);
  if (h < 48) return `${h} h`;
  return `${Math.ceil(h / 24)} d`;
}
