// Operator operations and message timelines on the embedded store: summary and listing in SQL,
// per-message timelines (kept for a retention after the message is finished), destination
// suspensions and reroutes (cached in memory: only this process uses the store).
import type { NextHop } from '@tern/plugin-api';
import type Database from 'better-sqlite3';
import type {
  BounceNowOptions,
  BounceNowResult,
  DestinationCounts,
  DestinationSummary,
  IncomingMessage,
  MessageDetails,
  QueuedJob,
  QueueFilter,
  QueuePage,
  QueueSummary,
  RecipientState,
} from '../contract.js';
import { HEADER_READ_LIMIT, headerBlockOf } from '../dsn.js';
import {
  checkFilter,
  describeHop,
  finishedDetails,
  headerPairs,
  listLimit,
  matchesFilter,
  normalizeMessageId,
  OperationInputError,
  operatorBounce,
  sumCounts,
} from '../operations.js';
import { newQueueId } from '../plan.js';
import {
  type OperatorAction,
  type OperatorEvent,
  parseTimelineEvent,
  type TimelineEvent,
} from '../timeline.js';
import type { StoredBodies } from './bodies.js';
import { JOBS_OF, jobsOf, messageKey } from './store.js';

interface Destination {
  suspendedUntil?: number;
  nextHop?: NextHop;
}

interface JobListRow {
  id: string;
  queue_id: string;
  domain: string;
  recipients: string;
  attempts: number;
  next_attempt_at: number;
  state: 'scheduled' | 'active' | 'held' | 'done';
  envelope: string;
  created_at: number;
  message_id: string | null;
  size: number;
  next_hop: string | null;
  hold_reason: string | null;
}

export interface EmbeddedOperationsDeps {
  /** The queue's own enqueue (operator bounces go out through it). */
  readonly enqueue: (message: IncomingMessage) => Promise<string>;
  /** Wakes the worker (jobs became due). */
  readonly wake: () => void;
  /** How long a finished message's timeline is kept (ms). */
  readonly retentionMs: number;
  /** The store's message bodies (for header blocks). */
  readonly bodies: StoredBodies;
}

/** Rows read per step while listing with filters the SQL cannot apply (sender, recipient). */
const LIST_BATCH = 200;
const LIST_SCAN_BUDGET = 5000;
/** Expired timelines are removed at most this often. */
const PRUNE_EVERY_MS = 60_000;
/** The leading characters of a queue id that hold its receipt time (base 36 ms, see newQueueId). */
const QUEUE_ID_TIME_CHARS = 9;

export class EmbeddedOperations {
  readonly #db: Database.Database;
  readonly #d: EmbeddedOperationsDeps;
  readonly #sql: ReturnType<typeof prepare>;
  readonly #destinations = new Map<string, Destination>();
  #prunedAt = 0;

  constructor(db: Database.Database, deps: EmbeddedOperationsDeps) {
    this.#db = db;
    this.#d = deps;
    this.#sql = prepare(db);
    for (const row of this.#sql.destinations.all() as {
      domain: string;
      suspended_until: number | null;
      next_hop: string | null;
    }[]) {
      this.#destinations.set(row.domain, {
        ...(row.suspended_until === null ? {} : { suspendedUntil: row.suspended_until }),
        ...(row.next_hop === null ? {} : { nextHop: JSON.parse(row.next_hop) as NextHop }),
      });
    }
  }

  // ---- for the worker and enqueue (inside their transactions) ----

  /** Until when delivery to `domain` is suspended, if it is now. */
  suspendedUntil(domain: string, now: number): number | undefined {
    const until = this.#destinations.get(domain)?.suspendedUntil;
    return until !== undefined && until > now ? until : undefined;
  }

  /** An operator's reroute for a whole destination. */
  destinationHop(domain: string): NextHop | undefined {
    return this.#destinations.get(domain)?.nextHop;
  }

  /** Starts a message's timeline (in the enqueue transaction). */
  startTimeline(queueId: string, messageId: string | undefined, events: readonly TimelineEvent[]): void {
    const id = messageId === undefined ? null : normalizeMessageId(messageId);
    this.#sql.insertTimeline.run(queueId, id, id === null ? null : messageKey(id), timelineLines(events));
  }

  /** Appends to a timeline that still exists (schema 7: to its one row). */
  appendEvents(queueId: string, events: readonly TimelineEvent[]): void {
    if (events.length > 0) this.#sql.appendEvents.run(timelineLines(events), queueId);
  }

  /** The message is gone: its timeline, with `events` appended last, is kept for the retention from now. */
  finished(queueId: string, now: number, events: readonly TimelineEvent[] = []): void {
    this.#sql.expireTimeline.run(timelineLines(events), now + this.#d.retentionMs, queueId);
  }

  /**
   * Removes timelines past their retention, at most once a minute. Without an index on
   * `expires_at` (schema 8: it cost a page per finished message): a timeline expires `retention`
   * after its message finished, so after its message was received, and a queue id begins with
   * its receipt time (plan.ts), so only the queue ids received before `now - retention` can have
   * expired: a range of the primary key holding, besides the expired, only messages that stayed
   * queued long (or still are).
   */
  prune(now: number = Date.now()): void {
    if (now - this.#prunedAt < PRUNE_EVERY_MS) return;
    this.#prunedAt = now;
    const receivedBefore = newQueueId(Math.max(0, now - this.#d.retentionMs)).slice(0, QUEUE_ID_TIME_CHARS);
    this.#sql.pruneTimelines.run(receivedBefore, now);
  }

  // ---- QueueOperations ----

  async summary(): Promise<QueueSummary> {
    const now = Date.now();
    const rows = this.#sql.summary.all() as (DestinationCounts & { domain: string; oldest: number })[];
    const byDomain = new Map<string, DestinationSummary>();
    for (const r of rows) {
      byDomain.set(r.domain, {
        domain: r.domain,
        total: r.total,
        scheduled: r.scheduled,
        active: r.active,
        held: r.held,
        deferred: r.deferred,
        oldestCreatedAt: r.oldest,
      });
    }
    for (const [domain, d] of this.#destinations) {
      const suspended = this.suspendedUntil(domain, now);
      if (suspended === undefined && d.nextHop === undefined) continue;
      byDomain.set(domain, {
        ...(byDomain.get(domain) ?? { domain, total: 0, scheduled: 0, active: 0, held: 0, deferred: 0 }),
        ...(suspended === undefined ? {} : { suspendedUntil: suspended }),
        ...(d.nextHop === undefined ? {} : { nextHop: d.nextHop }),
      });
    }
    const destinations = [...byDomain.values()].sort(
      (a, b) => b.total - a.total || a.domain.localeCompare(b.domain),
    );
    return { at: now, totals: sumCounts(destinations), destinations };
  }

  async listJobs(filter: QueueFilter = {}): Promise<QueuePage> {
    checkFilter(filter);
    const limit = listLimit(filter);
    const jobs: QueuedJob[] = [];
    let after = filter.cursor ?? '';
    let scanned = 0;
    const state = filter.state === 'deferred' ? 'scheduled' : (filter.state ?? null);
    for (;;) {
      const rows = this.#sql.listPage.all({
        after,
        state,
        deferred: filter.state === 'deferred' ? 1 : 0,
        domain: filter.domain?.toLowerCase() ?? null,
        batch: LIST_BATCH,
      }) as JobListRow[];
      for (const [i, row] of rows.entries()) {
        const job = queuedJob(row);
        if (!matchesFilter(job, filter)) continue;
        jobs.push(job);
        if (jobs.length === limit) {
          const more = i < rows.length - 1 || rows.length === LIST_BATCH;
          return more ? { jobs, cursor: job.jobId } : { jobs };
        }
      }
      scanned += rows.length;
      const last = rows.at(-1);
      if (rows.length < LIST_BATCH || last === undefined) return { jobs };
      if (scanned >= LIST_SCAN_BUDGET) return { jobs, cursor: last.id };
      after = last.id;
    }
  }

  async details(queueId: string): Promise<MessageDetails | null> {
    this.prune();
    const timeline = this.#timeline(queueId);
    const message = this.#sql.message.get(queueId) as
      | {
          envelope: string;
          created_at: number;
          message_id: string | null;
          size: number;
          source: string | null;
          is_bounce: number;
          hold_reason: string | null;
        }
      | undefined;
    if (!message) return timeline.length === 0 ? null : finishedDetails(queueId, timeline);
    const rows = this.#sql.jobsOf.all(...jobsOf(queueId)) as JobListRow[];
    const held = rows.some((r) => r.state === 'held');
    return {
      queueId,
      state: 'queued',
      envelope: JSON.parse(message.envelope),
      createdAt: message.created_at,
      size: message.size,
      ...(message.message_id === null ? {} : { messageId: message.message_id }),
      ...(message.source === null ? {} : { source: JSON.parse(message.source) }),
      isBounce: message.is_bounce === 1,
      headers: headerPairs(this.#headerBlock(queueId)),
      held,
      ...(held && message.hold_reason !== null ? { holdReason: message.hold_reason } : {}),
      jobs: rows.map((r) => ({
        id: r.id,
        domain: r.domain,
        state: r.state,
        attempts: r.attempts,
        ...(r.state === 'done' ? {} : { nextAttemptAt: r.next_attempt_at }),
        recipients: JSON.parse(r.recipients) as RecipientState[],
        ...(r.next_hop === null ? {} : { nextHop: JSON.parse(r.next_hop) as NextHop }),
      })),
      timeline,
    };
  }

  async findByMessageId(messageId: string): Promise<string[]> {
    const id = normalizeMessageId(messageId);
    if (id === '') return [];
    // Every message has a timeline row (schema 7 gave one to those queued before timelines).
    const rows = this.#sql.findByMessageId.all(messageKey(id), id) as { queue_id: string }[];
    return [...new Set(rows.map((r) => r.queue_id))].sort();
  }

  async appendTimeline(queueId: string, events: readonly TimelineEvent[]): Promise<void> {
    this.appendEvents(queueId, events);
  }

  /** Operator events for hold, release and the others, written with the action. */
  record(queueId: string, action: OperatorAction, extra: Partial<OperatorEvent> = {}): void {
    this.appendEvents(queueId, [{ type: 'operator', at: Date.now(), action, ...extra }]);
  }

  /** True when any job of the message is held (or will be, after its attempt). */
  isHeld(queueId: string): boolean {
    return this.#sql.heldJobs.get(...jobsOf(queueId)) !== undefined;
  }

  /** Jobs of a message by state (undefined when the message is unknown). */
  /** A stored message's header block, read from its first bytes only. */
  #headerBlock(queueId: string): Buffer {
    return headerBlockOf(this.#d.bodies.head(queueId, HEADER_READ_LIMIT) ?? Buffer.alloc(0));
  }

  jobStates(queueId: string): string[] | undefined {
    if (this.#sql.messageExists.get(queueId) === undefined) return undefined;
    return (this.#sql.jobStates.all(...jobsOf(queueId)) as { state: string }[]).map((r) => r.state);
  }

  /** The bounce part of "bounce now", once the caller made sure no attempt is in flight. */
  async bounce(
    queueId: string,
    options: BounceNowOptions,
    remove: (event: OperatorEvent) => boolean,
  ): Promise<BounceNowResult> {
    const message = this.#sql.message.get(queueId) as
      | { envelope: string; created_at: number; is_bounce: number }
      | undefined;
    if (!message) return { ok: false, reason: 'unknown' };
    const pending = (this.#sql.jobsOf.all(...jobsOf(queueId)) as JobListRow[])
      .filter((r) => r.state !== 'done')
      .flatMap((r) => (JSON.parse(r.recipients) as RecipientState[]).filter((p) => p.status === 'pending'));
    const notice = operatorBounce(
      {
        queueId,
        envelope: JSON.parse(message.envelope),
        createdAt: message.created_at,
        isBounce: message.is_bounce === 1,
        headers: this.#headerBlock(queueId),
      },
      pending,
      options,
    );
    const noticeId = notice === undefined ? undefined : await this.#d.enqueue(notice);
    remove({
      type: 'operator',
      at: Date.now(),
      action: 'bounce',
      ...(options.reason === undefined ? {} : { detail: options.reason }),
      ...(noticeId === undefined ? {} : { notice: noticeId }),
    });
    return { ok: true, recipients: pending.length, ...(noticeId === undefined ? {} : { notice: noticeId }) };
  }

  async reroute(queueId: string, hop: NextHop | null, domain?: string): Promise<number> {
    const wanted = domain?.toLowerCase() ?? null;
    return this.#db.transaction(() => {
      const changes = this.#sql.reroute.run({
        hop: hop === null ? null : JSON.stringify(hop),
        from: jobsOf(queueId)[0],
        to: jobsOf(queueId)[1],
        domain: wanted,
      }).changes;
      if (changes > 0) {
        this.record(queueId, 'reroute', {
          ...(wanted === null ? {} : { domain: wanted }),
          detail: hop === null ? 'reroute cleared' : describeHop(hop),
        });
      }
      return changes;
    })();
  }

  async rerouteDestination(domain: string, hop: NextHop | null): Promise<void> {
    const d = domain.toLowerCase();
    const current = this.#destinations.get(d) ?? {};
    const { nextHop: _old, ...rest } = current;
    this.#saveDestination(d, hop === null ? rest : { ...rest, nextHop: hop });
  }

  async suspend(domain: string, until: number): Promise<void> {
    if (!Number.isFinite(until) || until <= Date.now()) {
      throw new OperationInputError('until: a suspension must end in the future');
    }
    const d = domain.toLowerCase();
    this.#saveDestination(d, { ...this.#destinations.get(d), suspendedUntil: Math.round(until) });
  }

  async resume(domain: string): Promise<number> {
    const d = domain.toLowerCase();
    const { suspendedUntil: _until, ...rest } = this.#destinations.get(d) ?? {};
    this.#saveDestination(d, rest);
    const due = (this.#sql.dueOfDomain.get(d, Date.now()) as { n: number }).n;
    this.#d.wake();
    return due;
  }

  #saveDestination(domain: string, destination: Destination): void {
    if (destination.suspendedUntil === undefined && destination.nextHop === undefined) {
      this.#sql.deleteDestination.run(domain);
      this.#destinations.delete(domain);
      return;
    }
    this.#sql.saveDestination.run(
      domain,
      destination.suspendedUntil ?? null,
      destination.nextHop === undefined ? null : JSON.stringify(destination.nextHop),
    );
    this.#destinations.set(domain, destination);
  }

  #timeline(queueId: string): TimelineEvent[] {
    const lines = (this.#sql.events.get(queueId) as string | undefined)?.split('\n') ?? [];
    return lines.map((line) => parseTimelineEvent(line)).filter((e): e is TimelineEvent => e !== undefined);
  }
}

/** Events as stored in `timelines.events`: one JSON text per line (JSON never has a raw newline). */
function timelineLines(events: readonly TimelineEvent[]): string {
  let text = '';
  for (const event of events) text += `${JSON.stringify(event)}\n`;
  return text;
}

function queuedJob(row: JobListRow): QueuedJob {
  return {
    queueId: row.queue_id,
    jobId: row.id,
    domain: row.domain,
    state: row.state === 'done' ? 'scheduled' : row.state,
    attempts: row.attempts,
    ...(row.attempts === 0 ? {} : { nextAttemptAt: row.next_attempt_at }),
    mailFrom: (JSON.parse(row.envelope) as { mailFrom: string }).mailFrom,
    // Operators see who is still to be delivered, as on the Redis backend.
    recipients: (JSON.parse(row.recipients) as RecipientState[]).filter((r) => r.status === 'pending'),
    createdAt: row.created_at,
    ...(row.message_id === null ? {} : { messageId: row.message_id }),
    size: row.size,
    ...(row.hold_reason === null ? {} : { holdReason: row.hold_reason }),
  };
}

const LIST_COLUMNS = `j.id, j.queue_id, j.domain, j.recipients, j.attempts, j.next_attempt_at, j.state,
  j.next_hop, m.envelope, m.created_at, m.message_id, m.size, m.hold_reason`;

function prepare(db: Database.Database) {
  return {
    destinations: db.prepare('SELECT domain, suspended_until, next_hop FROM destinations'),
    saveDestination: db.prepare(
      `INSERT INTO destinations (domain, suspended_until, next_hop) VALUES (?, ?, ?)
       ON CONFLICT (domain) DO UPDATE SET suspended_until = excluded.suspended_until, next_hop = excluded.next_hop`,
    ),
    deleteDestination: db.prepare('DELETE FROM destinations WHERE domain = ?'),
    insertTimeline: db.prepare(
      `INSERT INTO timelines (queue_id, message_id, message_key, events) VALUES (?, ?, ?, ?)
       ON CONFLICT (queue_id) DO UPDATE SET events = events || excluded.events`,
    ),
    appendEvents: db.prepare('UPDATE timelines SET events = events || ? WHERE queue_id = ?'),
    expireTimeline: db.prepare(
      'UPDATE timelines SET events = events || ?, expires_at = ? WHERE queue_id = ?',
    ),
    pruneTimelines: db.prepare('DELETE FROM timelines WHERE queue_id < ? AND expires_at < ?'),
    events: db.prepare('SELECT events FROM timelines WHERE queue_id = ?').pluck(),
    findByMessageId: db.prepare('SELECT queue_id FROM timelines WHERE message_key = ? AND message_id = ?'),
    summary: db.prepare(
      `SELECT j.domain AS domain, count(*) AS total,
         sum(j.state = 'scheduled') AS scheduled, sum(j.state = 'active') AS active,
         sum(j.state = 'held') AS held, sum(j.attempts > 0) AS deferred, min(m.created_at) AS oldest
       FROM jobs j JOIN messages m ON m.queue_id = j.queue_id
       WHERE j.state != 'done' GROUP BY j.domain`,
    ),
    listPage: db.prepare(
      `SELECT ${LIST_COLUMNS} FROM jobs j JOIN messages m ON m.queue_id = j.queue_id
       WHERE j.id > @after AND j.state != 'done'
         AND (@state IS NULL OR j.state = @state) AND (@deferred = 0 OR j.attempts > 0)
         AND (@domain IS NULL OR j.domain = @domain)
       ORDER BY j.id LIMIT @batch`,
    ),
    message: db.prepare(
      `SELECT envelope, created_at, message_id, size, source, is_bounce, hold_reason
       FROM messages WHERE queue_id = ?`,
    ),
    messageExists: db.prepare('SELECT 1 FROM messages WHERE queue_id = ?'),
    jobsOf: db.prepare(
      `SELECT ${LIST_COLUMNS} FROM jobs j JOIN messages m ON m.queue_id = j.queue_id
       WHERE j.id > ? AND j.id < ? ORDER BY j.id`,
    ),
    jobStates: db.prepare(`SELECT state FROM jobs WHERE ${JOBS_OF} AND state != 'done'`),
    heldJobs: db.prepare(
      `SELECT 1 FROM jobs WHERE ${JOBS_OF} AND (state = 'held' OR (state = 'active' AND hold_requested = 1)) LIMIT 1`,
    ),
    reroute: db.prepare(
      `UPDATE jobs SET next_hop = @hop
       WHERE id > @from AND id < @to AND state != 'done' AND (@domain IS NULL OR domain = @domain)`,
    ),
    dueOfDomain: db.prepare(
      "SELECT count(*) AS n FROM jobs WHERE domain = ? AND state = 'scheduled' AND next_attempt_at <= ?",
    ),
  };
}
