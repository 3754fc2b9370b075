// Picks the next jobs to lease: oldest due first, no more per domain than the domain has room
// for, and without reading through the backlog of a domain that is at its limit.
import type Database from 'better-sqlite3';

/** How many of the oldest due jobs the cheap path reads before it falls back to a per-domain look. */
const WINDOW = 64;

export interface DueJob {
  readonly id: string;
  readonly domain: string;
  readonly nextAttemptAt: number;
}

export interface DuePick {
  /** Jobs to lease now, oldest due first. */
  readonly jobs: readonly DueJob[];
  /** When the next scheduled job falls due (undefined: none is scheduled); a wake-up time, not a promise. */
  readonly nextDueAt: number | undefined;
}

/**
 * Reads due jobs from the `jobs` table. The usual case is one indexed range read of the oldest
 * due jobs. When those all belong to domains at their limit (a bulk send to one provider), it
 * walks the distinct domains with a loose index scan instead, so a backlog of 100 000 jobs for
 * one domain costs a seek per domain, not a read of 100 000 rows at every finished attempt.
 */
export class DueJobs {
  readonly #window: Database.Statement;
  readonly #domains: Database.Statement;
  readonly #ofDomain: Database.Statement;
  readonly #next: Database.Statement;

  constructor(db: Database.Database) {
    this.#window = db.prepare(
      `SELECT id, domain, next_attempt_at AS nextAttemptAt FROM jobs INDEXED BY jobs_due
       WHERE state = 'scheduled' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ${WINDOW}`,
    );
    // One seek per distinct domain on jobs_sched (state, domain, next_attempt_at).
    this.#domains = db
      .prepare(
        `WITH RECURSIVE d(domain) AS (
           SELECT (SELECT domain FROM jobs WHERE state = 'scheduled' ORDER BY domain LIMIT 1)
           UNION ALL
           SELECT (SELECT domain FROM jobs WHERE state = 'scheduled' AND domain > d.domain ORDER BY domain LIMIT 1)
           FROM d WHERE d.domain IS NOT NULL
         )
         SELECT domain FROM d WHERE domain IS NOT NULL`,
      )
      .pluck();
    this.#ofDomain = db.prepare(
      `SELECT id, domain, next_attempt_at AS nextAttemptAt FROM jobs INDEXED BY jobs_sched
       WHERE state = 'scheduled' AND domain = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?`,
    );
    this.#next = db
      .prepare(
        `SELECT min(next_attempt_at) FROM jobs INDEXED BY jobs_due
         WHERE state = 'scheduled' AND next_attempt_at > ?`,
      )
      .pluck();
  }

  /** Up to `max` due jobs, taking no more from a domain than `room(domain)` allows. */
  pick(now: number, max: number, room: (domain: string) => number): DuePick {
    const taken = new Map<string, number>();
    const jobs: DueJob[] = [];
    const fits = (domain: string): boolean => room(domain) - (taken.get(domain) ?? 0) > 0;
    const take = (job: DueJob): void => {
      jobs.push(job);
      taken.set(job.domain, (taken.get(job.domain) ?? 0) + 1);
    };

    let read = 0;
    for (const job of this.#window.iterate(now) as IterableIterator<DueJob>) {
      read++;
      if (fits(job.domain)) take(job);
      if (jobs.length >= max) break; // leaving the loop ends the statement
    }
    if (jobs.length < max && read === WINDOW) {
      // The window was full of jobs we could not take: look at every domain with room instead.
      const seen = new Set(jobs.map((j) => j.id));
      const candidates: DueJob[] = [];
      for (const domain of this.#domains.all() as string[]) {
        const left = room(domain) - (taken.get(domain) ?? 0);
        if (left <= 0) continue;
        for (const job of this.#ofDomain.all(domain, now, left + (taken.get(domain) ?? 0)) as DueJob[]) {
          if (!seen.has(job.id)) candidates.push(job);
        }
      }
      candidates.sort((a, b) => a.nextAttemptAt - b.nextAttemptAt);
      for (const job of candidates) {
        if (jobs.length >= max) break;
        if (fits(job.domain)) take(job);
      }
    }
    const next = this.#next.get(now) as number | null;
    return { jobs, nextDueAt: next ?? undefined };
  }
}
