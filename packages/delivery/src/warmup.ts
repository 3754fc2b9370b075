// Warm-up of a new egress source: day by day it may send only so many messages to each provider
// (or domain), rising until the schedule ends and the source counts as warmed. Counted per UTC
// day with the same limiter as every other limit (so cluster-wide in Redis); what is over the cap
// spills to the other sources of the pool.
import type { Throttle } from './throttle.js';

const DAY = 86_400_000;

export interface WarmupSchedule {
  /** The source's first day of sending (`YYYY-MM-DD`, UTC): day 1. */
  readonly since: string;
  /** Messages a day to each destination (provider or domain) on day 1, 2, ...; past the end: no cap. */
  readonly caps: readonly number[];
  /** Other schedules for some providers (or domains), e.g. a slower one for `google`. */
  readonly destinations?: Readonly<Record<string, readonly number[]>>;
}

/** One source's warm-up as the dashboard and `tern queue shaping` show it. */
export interface WarmupStatus {
  readonly source: string;
  /** 1 on the first day; past the schedule's length the source is warmed. */
  readonly day: number;
  readonly warmed: boolean;
  /** Today's cap for destinations without a schedule of their own (undefined once warmed). */
  readonly cap?: number;
  /** Messages sent today by this process, by destination, with that destination's cap. */
  readonly use: readonly { readonly destination: string; readonly used: number; readonly cap?: number }[];
}

/** Checks a schedule, naming the field: a bad date or cap stops start-up. */
export function checkWarmup(schedule: WarmupSchedule, where: string): number {
  const since = Date.parse(`${schedule.since}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(schedule.since ?? '') || Number.isNaN(since)) {
    throw new TypeError(
      `${where}.since: expected the first day as YYYY-MM-DD, got ${JSON.stringify(schedule.since)}`,
    );
  }
  const check = (caps: readonly number[] | undefined, at: string): void => {
    if (!Array.isArray(caps) || caps.length === 0 || caps.some((c) => !Number.isSafeInteger(c) || c < 1)) {
      throw new TypeError(`${at}: expected daily caps as whole numbers of at least 1, e.g. [50, 100, 500]`);
    }
  };
  check(schedule.caps, `${where}.caps`);
  for (const [name, caps] of Object.entries(schedule.destinations ?? {}))
    check(caps, `${where}.destinations.${name}`);
  return since;
}

/** Most (source, destination) use counters kept for display; the oldest go first past it. */
const MAX_COUNTERS = 10_000;

export class Warmup {
  readonly #schedules = new Map<string, { schedule: WarmupSchedule; since: number }>();
  readonly #throttle: Throttle;
  /** `source|destination` → today's use in this process (for display). */
  readonly #use = new Map<string, { day: number; used: number }>();

  constructor(
    schedules: Readonly<Record<string, WarmupSchedule | undefined>>,
    throttle: Throttle,
    where: string,
  ) {
    this.#throttle = throttle;
    for (const [source, schedule] of Object.entries(schedules)) {
      if (schedule !== undefined)
        this.#schedules.set(source, { schedule, since: checkWarmup(schedule, `${where}.${source}.warmup`) });
    }
  }

  /** The source's day (1 = first) and its cap today for `destination`; no cap once warmed. */
  capOf(
    source: string,
    destination: string | undefined,
    now: number,
  ): { day: number; cap?: number } | undefined {
    const entry = this.#schedules.get(source);
    if (entry === undefined) return undefined;
    const day = Math.floor((now - entry.since) / DAY) + 1;
    const caps =
      (destination === undefined ? undefined : entry.schedule.destinations?.[destination]) ??
      entry.schedule.caps;
    // Before its first day a source sends at day 1's cap.
    const cap = caps[Math.max(day, 1) - 1];
    return cap === undefined ? { day } : { day, cap };
  }

  /**
   * Takes one message of today's cap of (source, destination): true when the source may send it
   * (or is not warming up), false when today's cap is used up.
   */
  async take(source: string, destination: string, now: number): Promise<boolean> {
    const warming = this.capOf(source, destination, now);
    if (warming?.cap === undefined) return true;
    const today = Math.floor(now / DAY);
    const result = await this.#throttle.take(`warmup:${source}|${destination}|${today}`, {
      limit: warming.cap,
      per: DAY,
    });
    if (!result.allowed) return false;
    const key = `${source}|${destination}`;
    const use = this.#use.get(key);
    if (use === undefined || use.day !== today) {
      if (this.#use.size >= MAX_COUNTERS) {
        const oldest = this.#use.keys().next().value;
        if (oldest !== undefined) this.#use.delete(oldest);
      }
      this.#use.set(key, { day: today, used: 1 });
    } else use.used++;
    return true;
  }

  /** How long until the next UTC day (when caps reset and rise). */
  untilTomorrow(now: number): number {
    return DAY - (now % DAY);
  }

  status(now: number): WarmupStatus[] {
    const today = Math.floor(now / DAY);
    return [...this.#schedules.keys()].map((source) => {
      const { day, cap } = this.capOf(source, undefined, now) as { day: number; cap?: number };
      const use = [...this.#use.entries()]
        .filter(([key, u]) => key.startsWith(`${source}|`) && u.day === today)
        .map(([key, u]) => {
          const destination = key.slice(source.length + 1);
          const own = this.capOf(source, destination, now)?.cap;
          return { destination, used: u.used, ...(own === undefined ? {} : { cap: own }) };
        });
      return { source, day, warmed: cap === undefined, ...(cap === undefined ? {} : { cap }), use };
    });
  }
}
