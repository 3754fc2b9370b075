// Per-destination ready gates, shared by both backends: once a limit refused a job of a domain,
// jobs of that domain start only at the limit's pace, while every other domain goes on as before.
// The limiter (in Redis across nodes) stays the authority; this only keeps jobs that would be
// refused out of worker slots and off the retry schedule.
import type { LimitWait } from './contract.js';

/** How long a domain stays paced after its last refusal (default 10 s): then it may burst again. */
export const DEFAULT_PACE_QUIET_MS = 10_000;
/** Longest jitter added to a refusal's wait, so jobs refused together do not come back together. */
const MAX_JITTER_MS = 250;

interface Pace {
  /** When the next job may start. */
  nextAt: number;
  /** The end of the reserved slots: where the next job that cannot start now is put. */
  cursor: number;
  spacing: number;
  burst: number;
  lastRefusal: number;
}

export class DestinationPacer {
  readonly #paces = new Map<string, Pace>();
  readonly #quietMs: number;
  readonly #random: () => number;

  constructor(options: { quietMs?: number; random?: () => number } = {}) {
    this.#quietMs = options.quietMs ?? DEFAULT_PACE_QUIET_MS;
    this.#random = options.random ?? Math.random;
  }

  /** A limit refused a job of `domain`: no job of it starts before the limit has room, plus jitter. */
  refused(domain: string, wait: LimitWait, now: number): void {
    const spacing = Number.isFinite(wait.spacingMs) ? Math.max(0, wait.spacingMs) : 0;
    const burst = Math.max(1, Math.floor(Number.isFinite(wait.burst) ? wait.burst : 1));
    const retryAfter = Number.isFinite(wait.retryAfterMs) ? Math.max(0, wait.retryAfterMs) : 60_000;
    const open = now + retryAfter + this.#jitter(spacing);
    const pace = this.#paces.get(domain);
    if (pace === undefined) {
      this.#paces.set(domain, { nextAt: open, cursor: open, spacing, burst, lastRefusal: now });
      return;
    }
    pace.nextAt = Math.max(pace.nextAt, open);
    pace.cursor = Math.max(pace.cursor, pace.nextAt);
    pace.spacing = spacing;
    pace.burst = burst;
    pace.lastRefusal = now;
  }

  /** How many jobs of `domain` may start now (Infinity when it is not paced). */
  room(domain: string, now: number): number {
    const pace = this.#current(domain, now);
    if (pace === undefined) return Number.POSITIVE_INFINITY;
    if (now < pace.nextAt) return 0;
    if (pace.spacing === 0) return pace.burst;
    return Math.min(pace.burst, 1 + Math.floor((now - pace.nextAt) / pace.spacing));
  }

  /** `count` jobs of `domain` started now: the next ones start a spacing later each. */
  started(domain: string, count: number, now: number): void {
    const pace = this.#paces.get(domain);
    if (pace === undefined || pace.spacing === 0 || count <= 0) return;
    const base = Math.max(pace.nextAt, now - (pace.burst - 1) * pace.spacing);
    pace.nextAt = base + count * pace.spacing;
    pace.cursor = Math.max(pace.cursor, pace.nextAt);
  }

  /**
   * For a backend that must put a job somewhere when it cannot start (BullMQ's delayed set):
   * undefined when the job may start now (counted as started), else the time of its own slot, one
   * spacing after the last slot handed out, so a backlog comes back at the pace, not all at once.
   */
  reserve(domain: string, now: number): number | undefined {
    if (this.room(domain, now) >= 1) {
      this.started(domain, 1, now);
      return undefined;
    }
    const pace = this.#paces.get(domain) as Pace;
    const at = Math.max(pace.cursor, pace.nextAt, now);
    pace.cursor = at + pace.spacing;
    return at + this.#jitter(pace.spacing);
  }

  /** The earliest time a paced domain opens after `now` (for a worker's wake-up), if any. */
  nextOpening(now: number): number | undefined {
    let next: number | undefined;
    for (const [domain] of this.#paces) {
      const pace = this.#current(domain, now);
      if (pace !== undefined && pace.nextAt > now && (next === undefined || pace.nextAt < next)) {
        next = pace.nextAt;
      }
    }
    return next;
  }

  /** The domains paced now and when each opens, for the dashboard and `tern queue`. */
  snapshot(now: number): { domain: string; nextAt: number; spacingMs: number }[] {
    const out: { domain: string; nextAt: number; spacingMs: number }[] = [];
    for (const [domain] of this.#paces) {
      const pace = this.#current(domain, now);
      if (pace !== undefined) out.push({ domain, nextAt: pace.nextAt, spacingMs: pace.spacing });
    }
    return out;
  }

  /** The domain's pace, dropped once it has been quiet (no refusal, no slot handed out) for a while. */
  #current(domain: string, now: number): Pace | undefined {
    const pace = this.#paces.get(domain);
    if (pace === undefined) return undefined;
    if (now - pace.lastRefusal > this.#quietMs && pace.cursor <= now && pace.nextAt <= now) {
      this.#paces.delete(domain);
      return undefined;
    }
    return pace;
  }

  #jitter(spacing: number): number {
    return Math.floor(this.#random() * Math.min(MAX_JITTER_MS, Math.max(spacing, 20)));
  }
}
