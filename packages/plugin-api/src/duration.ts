// The one grammar for lengths of time in options and config: milliseconds, or a count and a unit
// as operators say them ('250ms', '30s', '5m', '1.5h', '5d', '10 min', '2 hours'). Rate windows,
// retry schedules, timeouts and the CLI all read durations through here.
import { z } from 'zod';
import { shown } from './options.js';

/** A length of time: milliseconds, or a string such as `'90s'`, `'5m'`, `'1.5h'`, `'5d'`, `'10 min'`. */
export type Duration = number | string;

/** How to write a duration, for error messages. */
export const DURATION_HINT = "milliseconds, or a string like '30s', '5m', '4h', '5d'";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: SECOND,
  sec: SECOND,
  second: SECOND,
  seconds: SECOND,
  m: MINUTE,
  min: MINUTE,
  minute: MINUTE,
  minutes: MINUTE,
  h: HOUR,
  hour: HOUR,
  hours: HOUR,
  d: DAY,
  day: DAY,
  days: DAY,
};

const PATTERN = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/;

export interface DurationRules {
  /** Refuse 0 (a window, a timeout). Default false. */
  readonly positive?: boolean;
  /** Refuse fractions of a millisecond (what a limiter counts in). Default false. */
  readonly whole?: boolean;
  /** Read a string of bare digits as milliseconds, as command lines and environment variables give them. Default false. */
  readonly digitsAreMs?: boolean;
}

/**
 * Milliseconds of a duration, or undefined when `value` is not one: a negative, infinite or NaN
 * number, a string without a known unit, or a value the `rules` refuse.
 */
export function parseDuration(value: unknown, rules: DurationRules = {}): number | undefined {
  let ms: number;
  if (typeof value === 'number') {
    ms = value;
  } else if (typeof value === 'string' && rules.digitsAreMs === true && /^\s*\d+(\.\d+)?\s*$/.test(value)) {
    ms = Number(value);
  } else if (typeof value === 'string') {
    const match = PATTERN.exec(value.trim().toLowerCase());
    const unit = match ? UNIT_MS[match[2] as string] : undefined;
    if (!match || unit === undefined) return undefined;
    ms = Number(match[1]) * unit;
  } else {
    return undefined;
  }
  if (!Number.isFinite(ms) || ms < 0) return undefined;
  if (rules.positive === true && ms === 0) return undefined;
  if (rules.whole === true && !Number.isSafeInteger(ms)) return undefined;
  return ms;
}

/** What a duration must be, worded for an error message. */
function expected(rules: DurationRules): string {
  const above = rules.positive === true ? ' above 0' : '';
  const whole = rules.whole === true ? ' (whole milliseconds)' : '';
  return `a duration${above}${whole}: ${DURATION_HINT}`;
}

/** Milliseconds of a duration; throws a RangeError naming `field` and how to write one. */
export function durationMs(value: Duration, field = 'duration', rules: DurationRules = {}): number {
  const ms = parseDuration(value, rules);
  if (ms === undefined) throw new RangeError(`${field}: ${shown(value)} is not ${expected(rules)}`);
  return ms;
}

/**
 * A zod (Standard Schema) schema of a duration, read into milliseconds: what option and config
 * schemas use, so every package accepts durations in the same words.
 */
export function durationSchema(rules: DurationRules = {}): z.ZodType<number, Duration> {
  return z
    .custom<Duration>(() => true)
    .transform((value, ctx) => {
      const ms = parseDuration(value, rules);
      if (ms !== undefined) return ms;
      ctx.issues.push({ code: 'custom', input: value, message: `${shown(value)} is not ${expected(rules)}` });
      return z.NEVER;
    });
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
