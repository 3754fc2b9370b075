// The embedded queue backend: messages and delivery jobs in one SQLite file, used by one
// process, with no server to run. The quickstart runs on it.
import { randomBytes } from 'node:crypto';
import { closeSync, fsync, openSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import { type Logger, type NextHop, silentLogger } from '@tern/plugin-api';
import { memoryStream } from '@tern/plugin-api/host';
import type Database from 'better-sqlite3';
import { z } from 'zod';
import {
  type AttemptOutcome,
  type AttemptSettings,
  attemptSettings,
  runDeliveryAttempt,
} from '../attempt.js';
import { inlineChunks, slicesOf } from '../body.js';
import type {
  BounceNowOptions,
  BounceNowResult,
  Deliver,
  DeliveryJob,
  IncomingMessage,
  MessageDetails,
  MessageRecord,
  QueueBackend,
  QueueFilter,
  QueueHealth,
  QueueOperations,
  QueuePage,
  QueueSummary,
  RecipientState,
  WorkerOptions,
} from '../contract.js';
import { DEFAULT_WORKER_CONCURRENCY } from '../contract.js';
import { HEADER_READ_LIMIT, headerBlockOf } from '../dsn.js';
import { QueueUnavailableError } from '../errors.js';
import { HealthMonitor } from '../health.js';
import type { IdempotencyStore } from '../idempotency.js';
import { DestinationPacer } from '../pacing.js';
import { newQueueId, planJobs } from '../plan.js';
import { checkQueueOptions, embeddedQueueShape, workerShape } from '../schema.js';
import type { SuppressionStore } from '../suppression.js';
import {
  attemptEvent,
  DEFAULT_TIMELINE_RETENTION_MS,
  initialTimeline,
  type OperatorEvent,
  shapingEvents,
  type TimelineEvent,
} from '../timeline.js';
import type { TlsStore } from '../tls-store.js';
import {
  type EnqueueOptions,
  type OutboxWrite,
  outboxWritesOf,
  type WebhookOutbox,
} from '../webhook-outbox.js';
import { StoredBodies } from './bodies.js';
import { type DueJob, DueJobs, type DuePick } from './due.js';
import { EmbeddedIdempotency } from './idempotency.js';
import { EmbeddedOperations } from './operations.js';
import { closeStore, isOutOfSpace, isStoreFailure, JOBS_OF, jobsOf, openStore } from './store.js';
import { EmbeddedSuppressions } from './suppressions.js';
import { EmbeddedTlsStore } from './tls-store.js';
import { EmbeddedWebhookOutbox } from './webhook-outbox.js';

export type JobState = 'scheduled' | 'active' | 'held' | 'done';

export interface EmbeddedQueueOptions {
  /** The SQLite file (created, with its directory, when missing). One process at a time. */
  readonly path: string;
  /** Queue events (recovered jobs, dropped results); also the worker's logger unless `startWorker` gets one. */
  readonly logger?: Logger;
  /**
   * Longest an idle worker sleeps before it looks for due jobs again (default 5000 ms). Enqueues,
   * releases and finished attempts wake it at once and it sleeps exactly until the next due job;
   * this cap only bounds how long a wall-clock jump can delay mail. Also the longest wait between
   * two write probes while the store cannot write.
   */
  readonly pollIntervalMs?: number;
  /** Jobs towards one recipient domain in flight at once (default 20, as Postfix's default_destination_concurrency_limit), so one slow domain cannot take every slot. */
  readonly maxActivePerDomain?: number;
  /** How long a finished message's timeline stays retrievable (default 7 days). */
  readonly timelineRetentionMs?: number;
}

interface PreparedMessage {
  readonly queueId: string;
  readonly envelope: string;
  /** The whole message, or empty when it was written in `parts` slices before. */
  readonly body: Buffer;
  readonly parts: number;
  readonly size: number;
  readonly eightBit: number | null;
  readonly createdAt: number;
  readonly messageId: string | null;
  readonly source: string | null;
  readonly isBounce: number;
  readonly jobs: readonly PreparedJob[];
  readonly timeline: readonly TimelineEvent[];
  readonly holdReason: string | null;
  /** The envelope `envelope` serialises (read by a first attempt claimed at enqueue). */
  readonly envelopeValue: DeliveryJob['envelope'];
  /** Webhook events written in the message's transaction (see EnqueueOptions). */
  readonly outbox: readonly OutboxWrite[] | undefined;
}

interface PreparedJob {
  readonly id: string;
  readonly domain: string;
  /** RecipientState[] as stored (JSON). */
  readonly recipients: string;
  /** The same recipients as objects, handed to a first attempt claimed at enqueue (no parse). */
  readonly states: readonly RecipientState[];
}

interface WorkerState {
  readonly deliver: Deliver;
  readonly concurrency: number;
  readonly settings: AttemptSettings;
}

interface PendingEnqueue {
  readonly message: PreparedMessage;
  readonly resolve: (queueId: string) => void;
  readonly reject: (error: unknown) => void;
  /** Jobs its commit leased to this process (see #claimable), started once the commit is durable. */
  claimed?: JobRow[];
}

/** An attempt's outcome waiting for the next batch write (see #queueResult). */
interface PendingResult {
  readonly row: JobRow;
  readonly write: () => void;
  readonly worker: WorkerState;
  readonly log: Logger;
}

interface JobRow {
  id: string;
  queue_id: string;
  domain: string;
  recipients: string;
  attempts: number;
  next_attempt_at: number;
  state: JobState;
  delay_notified: number;
  next_hop: string | null;
  envelope: string;
  created_at: number;
  is_bounce: number;
  size: number;
  eight_bit: number | null;
  /**
   * A job claimed at enqueue (see #insert) carries what its first attempt needs from memory, so
   * the attempt neither reads the body back from the store (a blob copy) nor parses the JSON it
   * was just made from. Dropped when the attempt ends.
   */
  claimed?: {
    body: Buffer | undefined;
    envelope: DeliveryJob['envelope'];
    states: readonly RecipientState[];
    /** #interventions when it was claimed: unchanged, no operator can have held or removed it since. */
    interventions: number;
  };
}

const DEFAULT_POLL_MS = 5000;
const DEFAULT_PER_DOMAIN = 20;
/**
 * A lease outlives any sane attempt. Informative for operators: only this process uses the store,
 * so it knows which of its 'active' jobs it still holds and takes back the others (see #reclaim).
 */
const LEASE_MS = 30 * 60_000;
/** How often the worker looks for 'active' jobs that no attempt of this process holds. */
const RECLAIM_EVERY_MS = 60_000;
/**
 * After the store could not write, it counts as writable again only with this much free space on
 * its file system (and room for the largest message refused for lack of space meanwhile), so a
 * disk with a few pages free does not flap between the two states with every message.
 */
const MIN_FREE_BYTES = 1024 * 1024;
const EMPTY = Buffer.alloc(0);
/**
 * Longest an attempt's outcome waits to be written with others (it usually rides along with the
 * next enqueue's commit sooner). Each transaction writes every page it touches to the WAL, so
 * outcomes written one by one cost a few pages each; in batches they share them.
 */
const RESULT_BATCH_MS = 10;
/**
 * Longest an attempt started by its enqueue's commit waits, once delivered and that enqueue
 * durable, to have its outcome decided (it usually goes sooner, with the next fsync; see #sync).
 */
const GATE_MS = 10;

/** Opens (or creates) the embedded queue at `options.path`; fails when another process holds it. */
export function openEmbeddedQueue(options: EmbeddedQueueOptions): EmbeddedQueue {
  return new EmbeddedQueue(options);
}

export class EmbeddedQueue implements QueueBackend, QueueOperations {
  readonly kind = 'embedded' as const;
  readonly location: string;
  /** The suppression list, in the same store. */
  readonly suppressions: SuppressionStore;
  /** Idempotency keys of HTTP injection, in the same store. */
  readonly idempotency: IdempotencyStore;
  /** Webhook events waiting per endpoint, in the same store (schema 6). */
  readonly webhookOutbox: WebhookOutbox;
  readonly #outbox: EmbeddedWebhookOutbox;
  readonly #db: Database.Database;
  readonly #log: Logger;
  readonly #pollMs: number;
  readonly #perDomain: number;
  readonly #owner = `${process.pid}:${randomBytes(4).toString('hex')}`;
  #pending: PendingEnqueue[] = [];
  #closed = false;
  #closing: Promise<void> | undefined;
  #worker: WorkerState | undefined;
  readonly #running = new Set<Promise<void>>();
  readonly #activeByDomain = new Map<string, number>();
  /** Domains whose limit refused a job lately: their jobs start at the limit's pace, the others as before. */
  readonly #pacer = new DestinationPacer();
  #timer: NodeJS.Timeout | undefined;
  readonly #sql: ReturnType<typeof prepare>;
  readonly #due: DueJobs;
  readonly #ops: EmbeddedOperations;
  readonly #bodies: StoredBodies;
  readonly #health: HealthMonitor;
  /** MTA-STS policies, TLS-RPT counters and report claims, in this store (schema 4). */
  readonly tlsStore: TlsStore;
  /** Queue ids whose body slices are being written now (their parts are not orphans). */
  readonly #uploads = new Map<string, Promise<unknown>>();
  /** Jobs this process holds 'active': in an attempt, or waiting for the attempt's outcome to be written. */
  readonly #leased = new Set<string>();
  /** Outcomes of finished attempts the store could not write yet, by job id: written by the probe. */
  readonly #unwritten = new Map<string, () => void>();
  #reclaimedAt = 0;
  /** Outcomes of finished attempts not written yet: the next enqueue commit or the batch timer writes them. */
  #results: PendingResult[] = [];
  /**
   * The WAL file, opened once, for the enqueue fsync made on libuv's thread pool (see #durable);
   * undefined when it could not be opened: enqueues then commit with SQLite's own fsync.
   */
  readonly #walFd: number | undefined;
  /** Enqueues committed, waiting for the fsync that makes them durable before they resolve. */
  #unsynced: PendingEnqueue[] = [];
  /**
   * What the next fsync settles besides #unsynced: the gate that attempts started early (the jobs
   * those enqueues claimed) wait at before their outcome is decided, and whether the worker must
   * look for jobs they did not claim (see #durable).
   */
  #nextSync: { gate: Promise<void>; open: () => void; wake: boolean } | undefined;
  /** Gates whose fsync has ended, opened when the next fsync starts or GATE_MS later (see #sync). */
  #synced: (() => void)[] = [];
  #gateTimer: NodeJS.Timeout | undefined;
  #syncing: Promise<void> | undefined;
  #resultTimer: NodeJS.Timeout | undefined;
  /** The largest message refused for lack of space since the store became unwritable. */
  #refusedBytes = 0;
  /** Jobs claimed by enqueue commits whose flush has not ended yet: they hold delivery slots. */
  #claimedWaiting = 0;
  /** close() has begun: enqueues claim no more jobs. */
  #stopping = false;
  /** `synchronous` for worker writes (NORMAL) and at rest (FULL), prepared once (see #bookkeeping). */
  readonly #syncNormal: Database.Statement;
  readonly #syncFull: Database.Statement;
  /**
   * Runs a function in a transaction (a savepoint inside one). Made once: better-sqlite3 builds a
   * wrapper per `db.transaction(fn)` call, which cost more CPU than the savepoint itself.
   */
  readonly #tx: <T>(write: () => T) => T;
  /**
   * Within one enqueue commit: whether a scheduled job is due (an older one, or one this commit
   * inserted unclaimed), so a batch asks the store once (see #claimable); undefined: not asked yet.
   */
  #dueInBatch: boolean | undefined;
  /**
   * Counts operator writes that can keep a claimed job from its first attempt (hold, remove), so
   * #startClaimedNow reads a claimed job's row back only when one happened since its claim.
   */
  #interventions = 0;

  constructor(options: EmbeddedQueueOptions) {
    const checked = checkQueueOptions(z.looseObject(embeddedQueueShape), options, 'queue.embedded');
    this.#pollMs = checked.pollIntervalMs ?? DEFAULT_POLL_MS;
    this.#perDomain = checked.maxActivePerDomain ?? DEFAULT_PER_DOMAIN;
    this.#log = (options.logger ?? silentLogger).child({ queue: 'embedded' });
    this.#db = openStore(options.path);
    this.location = this.#db.name;
    this.#walFd = openWal(this.location);
    try {
      this.#sql = prepare(this.#db);
      this.#syncNormal = this.#db.prepare('PRAGMA synchronous = NORMAL');
      this.#syncFull = this.#db.prepare('PRAGMA synchronous = FULL');
      const tx = this.#db.transaction((write: () => unknown) => write());
      this.#tx = tx as unknown as <T>(write: () => T) => T;
      this.#due = new DueJobs(this.#db);
      this.#bodies = new StoredBodies(this.#db);
      this.tlsStore = new EmbeddedTlsStore(this.#db);
      this.suppressions = new EmbeddedSuppressions(this.#db);
      this.idempotency = new EmbeddedIdempotency(this.#db);
      this.#outbox = new EmbeddedWebhookOutbox(this.#db);
      this.webhookOutbox = this.#outbox;
      this.#ops = new EmbeddedOperations(this.#db, {
        enqueue: (message) => this.enqueue(message),
        wake: () => this.#wake(),
        retentionMs: options.timelineRetentionMs ?? DEFAULT_TIMELINE_RETENTION_MS,
        bodies: this.#bodies,
      });
      // Only one process may open the store, so a job still 'active' belongs to a process that
      // died mid-attempt: it runs again (at-least-once; a duplicate beats a loss). Body slices
      // without a message are from an enqueue that never committed: never acknowledged.
      this.#reclaim('jobs interrupted by a previous stop or crash were scheduled again');
    } catch (error) {
      closeStore(this.#db);
      if (this.#walFd !== undefined) closeSync(this.#walFd);
      throw error;
    }
    this.#health = new HealthMonitor({
      name: `embedded queue ${this.location}`,
      logger: this.#log,
      probe: () => this.#probe(),
      maxProbeIntervalMs: this.#pollMs,
      hint: (error) =>
        isOutOfSpace(error)
          ? `free space on the file system of ${dirname(this.location)}`
          : 'check the file system and its permissions',
    });
  }

  enqueue(message: IncomingMessage, options?: EnqueueOptions): Promise<string> {
    if (this.#closed) return Promise.reject(this.#closedError());
    const chunks = inlineChunks(message.content);
    if (chunks === undefined) return this.#enqueueSliced(message, options);
    // The fast path: body, envelope and jobs in one transaction shared with concurrent enqueues.
    const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, message.content.size);
    let prepared: PreparedMessage;
    try {
      prepared = prepareMessage(message, body, 0, body.length, options);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#commit(prepared);
  }

  /**
   * A message too large to hold (or spooled to disk by intake): its body goes into `body_parts`
   * slice by slice as it streams, each slice in a transaction without fsync, then the message and
   * its jobs are committed like any other, with an fsync. The WAL is one append-only file, so that
   * fsync makes the slices' earlier frames durable too; and any checkpoint that moved them into the
   * database file synced it (synchronous=NORMAL syncs the WAL before a checkpoint and the database
   * after it). Until that commit the slices belong to no message: a crash leaves orphans that the
   * next open removes, never a message without its body.
   */
  async #enqueueSliced(message: IncomingMessage, options: EnqueueOptions | undefined): Promise<string> {
    if (this.#closing) throw this.#closedError();
    if (!this.#health.writable) {
      // Fail fast instead of reading the whole body into a store that refused the last write.
      this.#refusedBytes = Math.max(this.#refusedBytes, message.content.size);
      throw unavailable(this.location, new Error(`the store cannot write: ${this.#health.get().lastError}`));
    }
    const prepared = prepareMessage(message, EMPTY, 0, message.content.size, options);
    const queueId = prepared.queueId;
    const upload = (async (): Promise<number> => {
      let parts = 0;
      try {
        // One slice buffer, reused: SQLite binds a copy of it.
        for await (const slice of slicesOf(message.content, 1)) {
          this.#bookkeeping(() => this.#bodies.writePart(queueId, parts, slice));
          parts++;
        }
      } catch (error) {
        this.#dropParts(queueId);
        throw this.#writeFailed(error, message.content.size);
      }
      return parts;
    })();
    this.#uploads.set(queueId, upload);
    try {
      const parts = await upload;
      return await this.#commit({ ...prepared, parts }).catch((error: unknown) => {
        this.#dropParts(queueId);
        throw error;
      });
    } finally {
      this.#uploads.delete(queueId);
    }
  }

  /** Removes a failed enqueue's slices now if the store lets us; the next reclaim does otherwise. */
  #dropParts(queueId: string): void {
    try {
      this.#bookkeeping(() => this.#bodies.removeParts(queueId));
    } catch {}
  }

  /**
   * Group commit: enqueues that arrive in the same turn of the event loop share one transaction
   * and so one fsync. Each promise still resolves only after that commit.
   */
  #commit(prepared: PreparedMessage): Promise<string> {
    if (this.#closed) return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => {
      this.#pending.push({ message: prepared, resolve, reject });
      if (this.#pending.length === 1) setImmediate(() => this.#flush());
    });
  }

  /** A write of an enqueue failed: what intake answers 451 for; a failure of the store also makes it unwritable. */
  #writeFailed(error: unknown, size: number): QueueUnavailableError {
    if (error instanceof QueueUnavailableError) return error;
    if (isStoreFailure(error)) {
      if (isOutOfSpace(error)) this.#refusedBytes = Math.max(this.#refusedBytes, size);
      this.#health.failed(error);
    }
    return unavailable(this.location, error);
  }

  #flush(): void {
    // While an fsync runs, enqueues wait for it and then commit together: they could not be
    // durable before the next fsync anyway, and one commit for all of them writes each index and
    // header page once instead of once per turn of the event loop (new connections per message
    // bring fewer enqueues per turn: 41 → 32 WAL page writes per message measured).
    const syncing = this.#syncing;
    if (syncing !== undefined && !this.#closed && this.#pending.length > 0) {
      syncing.then(() => this.#flush());
      return;
    }
    const batch = this.#pending;
    this.#pending = [];
    if (batch.length === 0) return;
    if (this.#closed) {
      for (const p of batch) p.reject(this.#closedError());
      return;
    }
    // Attempts' outcomes waiting for a write ride along in this transaction: no extra commit.
    const results = this.#takeResults();
    let unwritten: PendingResult[] = [];
    try {
      this.#commitEnqueues(batch, () => {
        unwritten = this.#applyResults(results);
        for (const p of batch) this.#insert(p);
      });
      this.#resultsWritten(results, unwritten);
      this.#durable(batch);
    } catch (error) {
      // Nothing of it was written: the outcomes go their own way, each with its error handling.
      this.#resultsWritten([], results);
      if (batch.length === 1) {
        const p = batch[0] as PendingEnqueue;
        p.reject(this.#writeFailed(error, p.message.size));
      } else {
        // One bad message must not cost the others their place: retry each on its own.
        const committed: PendingEnqueue[] = [];
        for (const p of batch) {
          try {
            this.#commitEnqueues([p], () => this.#insert(p));
            committed.push(p);
          } catch (single) {
            p.reject(this.#writeFailed(single, p.message.size));
          }
        }
        this.#durable(committed);
      }
    }
    // The worker hears of new jobs once they are durable (after the fsync, see #sync, or above).
  }

  /**
   * Commits `write` (the inserts of `batch`) without SQLite's fsync when #durable makes it durable
   * instead; with SQLite's (synchronous=FULL) otherwise. Jobs claimed in a transaction that fails
   * are given back: nothing of it was written.
   */
  #commitEnqueues(batch: readonly PendingEnqueue[], write: () => void): void {
    try {
      this.#dueInBatch = undefined;
      if (this.#walFd === undefined) this.#tx(write);
      else this.#bookkeeping(write);
    } catch (error) {
      for (const p of batch) {
        for (const row of p.claimed ?? []) this.#unclaim(row);
        delete p.claimed;
      }
      this.#outbox.rolledBack();
      throw error;
    }
  }

  /**
   * Resolves committed enqueues once the WAL holding them is on disk: one fsync of the WAL file,
   * made on libuv's thread pool, so the event loop serves SMTP sessions meanwhile instead of
   * waiting in SQLite's commit. Enqueues committed while an fsync runs wait for the next one, which
   * takes them all (group commit). The WAL is append-only, so the fsync also makes durable every
   * earlier frame (lease and outcome writes). A failed fsync fails the whole batch (451) and
   * marks the store unwritable; those messages may still be delivered (a duplicate, never a loss).
   */
  #durable(committed: readonly PendingEnqueue[]): void {
    if (committed.length === 0) return;
    if (this.#walFd === undefined) {
      for (const p of committed) p.resolve(p.message.queueId);
      if (this.#startClaimed(committed)) this.#wake();
      return;
    }
    this.#unsynced.push(...committed);
    this.#nextSync ??= nextSync();
    // Their attempts start now, while the fsync runs, instead of after the 250: the event loop
    // would wait idle for the disk, and the delivery's work (reading the body, the next hop's
    // commands) would otherwise delay the client's next transaction (with one session its MAIL,
    // RCPT and DATA waited behind it). Delivering before the fsync ends risks a duplicate (a
    // crash or a failed fsync answers 451 or nothing, the client sends again), never a loss; and
    // what follows the delivery (outcome, delivered/deferred/bounced hooks, bounces) waits at the
    // gate, so it still comes after the enqueue resolved and its `queued` hooks began.
    if (this.#startClaimed(committed, this.#nextSync.gate)) this.#nextSync.wake = true;
    if (this.#syncing === undefined) this.#sync(this.#walFd);
  }

  #sync(fd: number): void {
    const batch = this.#unsynced;
    const next = this.#nextSync;
    this.#unsynced = [];
    this.#nextSync = undefined;
    // In the next turn, so code that awaited the enqueues of the fsync that ended runs first.
    if (this.#synced.length > 0) setImmediate(() => this.#openGates());
    this.#syncing = new Promise((done) => {
      fsync(fd, (error) => {
        if (error) {
          this.#health.failed(error);
          for (const p of batch) p.reject(unavailable(this.location, error));
        } else {
          for (const p of batch) p.resolve(p.message.queueId);
        }
        // Committed either way: a failed flush answered 451, yet the jobs exist (a duplicate at
        // worst). The gate opens once the next fsync has started: the outcomes are decided while
        // the event loop waits for the disk, not between the 250 and the client's next command.
        if (next !== undefined) {
          this.#synced.push(next.open);
          this.#gateTimer ??= setTimeout(() => this.#openGates(), GATE_MS);
        }
        this.#syncing = undefined;
        if (this.#unsynced.length > 0) this.#sync(fd);
        if (next?.wake) this.#wake();
        done();
      });
    });
  }

  #openGates(): void {
    clearTimeout(this.#gateTimer);
    this.#gateTimer = undefined;
    const gates = this.#synced;
    this.#synced = [];
    for (const open of gates) open();
  }

  #closedError(): QueueUnavailableError {
    return new QueueUnavailableError(`queue unavailable: embedded queue ${this.location} is closed`);
  }

  /**
   * Inserts one message in the enqueue transaction. A job that a free delivery slot can take is
   * inserted 'active' under this process's lease (claimed): its first attempt starts once the
   * commit is durable, without a lease commit of its own (one commit per message for a single
   * session instead of two). A crash before the attempt ends runs it again after the next open,
   * as for any leased job.
   */
  #insert(p: PendingEnqueue): void {
    const m = p.message;
    const now = Date.now();
    this.#sql.insertMessage.run(
      m.queueId,
      m.envelope,
      m.body,
      m.size,
      m.parts,
      m.eightBit,
      m.createdAt,
      m.messageId,
      m.source,
      m.isBounce,
      m.holdReason,
    );
    for (const job of m.jobs) {
      const claim = m.holdReason === null && this.#claimable(job.domain, now);
      this.#sql.insertJob.run(
        job.id,
        m.queueId,
        job.domain,
        job.recipients,
        m.createdAt,
        claim ? 'active' : m.holdReason === null ? 'scheduled' : 'held',
        claim ? this.#owner : null,
        claim ? now + LEASE_MS : null,
        m.createdAt,
      );
      if (!claim) {
        // Due now unless held: later messages of this commit wait behind it.
        if (m.holdReason === null) this.#dueInBatch = true;
        continue;
      }
      const row: JobRow = {
        id: job.id,
        queue_id: m.queueId,
        domain: job.domain,
        recipients: job.recipients,
        attempts: 0,
        next_attempt_at: m.createdAt,
        state: 'active',
        delay_notified: 0,
        next_hop: null,
        envelope: m.envelope,
        created_at: m.createdAt,
        is_bounce: m.isBounce,
        size: m.size,
        eight_bit: m.eightBit,
        claimed: {
          body: m.parts === 0 ? m.body : undefined,
          envelope: m.envelopeValue,
          states: job.states,
          interventions: this.#interventions,
        },
      };
      this.#claimedWaiting++;
      this.#taken(row, now);
      p.claimed ??= [];
      p.claimed.push(row);
    }
    this.#ops.startTimeline(m.queueId, m.messageId ?? undefined, m.timeline);
    // Its webhook events in the same transaction: no attempt sees the job before they are written.
    for (const write of m.outbox ?? []) {
      write.kept = this.#outbox.appendNow(write.endpoint, write.payloads, write.cap, now);
    }
  }

  /**
   * Whether a new job of `domain` may be claimed at enqueue: the worker runs and has a free slot,
   * the domain has room (limit, pace, no suspension), and no older job is due (those go first).
   */
  #claimable(domain: string, now: number): boolean {
    const worker = this.#worker;
    if (worker === undefined || this.#stopping) return false;
    if (this.#running.size + this.#claimedWaiting >= worker.concurrency) return false;
    if (this.#ops.suspendedUntil(domain, now) !== undefined) return false;
    const room = Math.min(
      this.#perDomain - (this.#activeByDomain.get(domain) ?? 0),
      this.#pacer.room(domain, now),
    );
    if (room <= 0) return false;
    this.#dueInBatch ??= this.#sql.anyDue.get(now) !== undefined;
    return !this.#dueInBatch;
  }

  /** A claimed job whose transaction failed: its slot and lease were never real. */
  #unclaim(row: JobRow): void {
    this.#claimedWaiting--;
    this.#forget(row);
  }

  /**
   * Starts the attempts of jobs claimed by these enqueues, committed, in the next turn of the
   * event loop. `durable` settles once their fsync has ended: each attempt waits for it after
   * delivering (see #durable); undefined when the commit was durable already. A job removed
   * meanwhile is dropped; at close, claimed jobs are given back. True when some new job was not
   * claimed: the worker has to look for it.
   */
  #startClaimed(batch: readonly PendingEnqueue[], durable?: Promise<void>): boolean {
    const rows = batch.flatMap((p) => p.claimed ?? []);
    const unclaimed = batch.some((p) => (p.claimed?.length ?? 0) < p.message.jobs.length);
    for (const p of batch) delete p.claimed;
    if (rows.length > 0) setImmediate(() => this.#startClaimedNow(rows, durable));
    return unclaimed;
  }

  #startClaimedNow(rows: readonly JobRow[], durable: Promise<void> | undefined): void {
    this.#claimedWaiting -= rows.length;
    const worker = this.#worker;
    const giveBack: JobRow[] = [];
    let started = 0;
    for (const [i, row] of rows.entries()) {
      // No hold or remove since the claim: the row is as the commit wrote it (active, ours, not held).
      let current: { state: JobState; lease_owner: string | null; hold_requested: number } | undefined =
        row.claimed?.interventions === this.#interventions
          ? { state: 'active', lease_owner: this.#owner, hold_requested: 0 }
          : undefined;
      try {
        current ??= this.#sql.jobState.get(row.id) as typeof current;
      } catch (error) {
        // Left 'active' and no longer ours: the next reclaim schedules them again.
        this.#log.error({ err: error }, 'could not start claimed jobs; the next reclaim schedules them');
        for (const rest of rows.slice(i)) this.#forget(rest);
        break;
      }
      const ours = current?.state === 'active' && current.lease_owner === this.#owner;
      if (ours && current?.hold_requested === 0 && worker !== undefined && this.#closing === undefined) {
        this.#start(row, worker, durable);
        started++;
      } else if (ours) giveBack.push(row);
      else this.#forget(row); // removed by an operator meanwhile
    }
    if (giveBack.length > 0) {
      try {
        this.#bookkeeping(() => {
          for (const row of giveBack) this.#sql.putBack.run(Date.now(), row.id, this.#owner);
        });
      } catch (error) {
        this.#log.error({ err: error }, 'could not give back claimed jobs; the next reclaim schedules them');
      }
      for (const row of giveBack) this.#forget(row);
    }
    // A slot not used as planned: the worker may fill it.
    if (started < rows.length) this.#wake();
  }

  /** A job this process no longer holds (see #taken). */
  #forget(row: JobRow): void {
    this.#leased.delete(row.id);
    this.#release(row.domain);
  }

  async startWorker(deliver: Deliver, options: WorkerOptions = {}): Promise<void> {
    if (this.#closed) throw new Error(`embedded queue ${this.location} is closed`);
    if (this.#worker) throw new Error(`embedded queue ${this.location}: the worker is already running`);
    const concurrency =
      checkQueueOptions(z.looseObject(workerShape), options, 'worker').concurrency ??
      DEFAULT_WORKER_CONCURRENCY;
    this.#worker = {
      deliver,
      concurrency,
      settings: attemptSettings({ ...options, logger: options.logger ?? this.#log }),
    };
    this.#pump();
  }

  /** Leases due jobs into the free slots, then sleeps until the next job falls due. */
  #pump(): void {
    const worker = this.#worker;
    if (!worker || this.#closing) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const free = worker.concurrency - this.#running.size - this.#claimedWaiting;
    if (free <= 0) return; // a finishing attempt pumps again
    const now = Date.now();
    let pick: DuePick;
    let leased: JobRow[];
    try {
      this.#ops.prune(now);
      if (now - this.#reclaimedAt >= RECLAIM_EVERY_MS)
        this.#reclaim('jobs no attempt held were scheduled again');
      // A suspended destination has no room: its jobs stay scheduled, attempts untouched.
      // A domain waiting for its limit has only the room its pace gives.
      pick = this.#due.pick(now, free, (domain) =>
        this.#ops.suspendedUntil(domain, now) === undefined
          ? Math.min(this.#perDomain - (this.#activeByDomain.get(domain) ?? 0), this.#pacer.room(domain, now))
          : 0,
      );
      leased = this.#lease(now, pick.jobs);
    } catch (error) {
      // The store failed (disk full, I/O error): keep the worker alive and look again later.
      if (isStoreFailure(error)) this.#health.failed(error);
      else this.#log.error({ err: error }, 'could not read or lease due jobs; trying again');
      this.#timer = setTimeout(() => this.#pump(), this.#pollMs);
      return;
    }
    for (const row of leased) this.#start(row, worker);
    if (this.#running.size + this.#claimedWaiting >= worker.concurrency) return;
    // Jobs due now but not taken wait for a slot of their domain: a finishing attempt pumps.
    const opens = this.#pacer.nextOpening(now);
    const nextAt =
      pick.nextDueAt === undefined || (opens !== undefined && opens < pick.nextDueAt)
        ? opens
        : pick.nextDueAt;
    const wait = nextAt === undefined ? this.#pollMs : Math.min(Math.max(nextAt - now, 0), this.#pollMs);
    this.#timer = setTimeout(() => this.#pump(), wait);
  }

  #start(row: JobRow, worker: WorkerState, durable?: Promise<void>): void {
    const attempt: Promise<void> = this.#attempt(row, worker, durable).finally(() => {
      this.#running.delete(attempt);
      this.#release(row.domain);
      this.#pump();
    });
    this.#running.add(attempt);
  }

  #wake(): void {
    if (this.#worker && !this.#closing) setImmediate(() => this.#pump());
  }

  /** Marks the picked jobs active under this process's lease, in one transaction. */
  #lease(now: number, jobs: readonly DueJob[]): JobRow[] {
    if (jobs.length === 0) return [];
    const leased = this.#bookkeeping(() => {
      const rows: JobRow[] = [];
      for (const job of jobs) {
        if (this.#sql.lease.run(this.#owner, now + LEASE_MS, now, job.id).changes === 0) continue;
        rows.push(this.#sql.jobRow.get(job.id) as JobRow);
      }
      return rows;
    });
    // Counted only once committed, so a failed transaction cannot leak a domain's slots.
    for (const row of leased) this.#taken(row, now);
    return leased;
  }

  /** A job this process now holds 'active': it counts against its domain's limit and pace. */
  #taken(row: JobRow, now: number): void {
    this.#leased.add(row.id);
    this.#activeByDomain.set(row.domain, (this.#activeByDomain.get(row.domain) ?? 0) + 1);
    this.#pacer.started(row.domain, 1, now);
  }

  #release(domain: string): void {
    const count = (this.#activeByDomain.get(domain) ?? 1) - 1;
    if (count <= 0) this.#activeByDomain.delete(domain);
    else this.#activeByDomain.set(domain, count);
  }

  /**
   * One attempt of one leased job, start to finish. Never rejects: every failure is logged and
   * rescheduled. With `durable`, the outcome is decided only once it settles (see #durable).
   */
  async #attempt(row: JobRow, worker: WorkerState, durable?: Promise<void>): Promise<void> {
    const log = this.#log.child({ queueId: row.queue_id, jobId: row.id, domain: row.domain });
    let record: () => void;
    const claimed = row.claimed;
    row.claimed = undefined;
    try {
      const stored = claimed?.states ?? (JSON.parse(row.recipients) as RecipientState[]);
      const envelope = claimed?.envelope ?? (JSON.parse(row.envelope) as DeliveryJob['envelope']);
      const body = claimed?.body;
      // An operator's reroute: the job's own, else its destination's.
      const nextHop: NextHop | undefined =
        row.next_hop === null ? this.#ops.destinationHop(row.domain) : JSON.parse(row.next_hop);
      const job: DeliveryJob = {
        ...(nextHop === undefined ? {} : { nextHop }),
        id: row.id,
        queueId: row.queue_id,
        domain: row.domain,
        // As planned at enqueue: the envelope of one job names only that job's recipients.
        envelope: { ...envelope, recipients: stored.map(({ status, lastReply, remoteMta, ...r }) => r) },
        recipients: stored.filter((r) => r.status === 'pending'),
        attempts: row.attempts,
        createdAt: row.created_at,
        isBounce: row.is_bounce === 1,
        delayNotified: row.delay_notified === 1,
        size: row.size,
        ...(row.eight_bit === null ? {} : { eightBit: row.eight_bit === 1 }),
      };
      const deliver: Deliver =
        durable === undefined
          ? worker.deliver
          : async (...args) => {
              try {
                return await worker.deliver(...args);
              } finally {
                await durable;
              }
            };
      const outcome = await runDeliveryAttempt(
        job,
        deliver,
        {
          openMessage: async () =>
            body === undefined
              ? this.#stored(job.queueId, this.#bodies.open(job.queueId))
              : memoryStream([body]),
          readHeaders: async () =>
            headerBlockOf(this.#stored(job.queueId, this.#bodies.head(job.queueId, HEADER_READ_LIMIT))),
          enqueue: (notice) => this.enqueue(notice),
        },
        worker.settings,
      );
      const waiting = outcome.waiting;
      if (waiting === undefined) record = () => this.#persist(job, stored, outcome);
      else {
        // Not an attempt: the job goes back as it was, due as before, and its domain is paced.
        this.#pacer.refused(row.domain, waiting, Date.now());
        const events = shapingEvents(job, outcome.report, Date.now());
        record = () => {
          this.#bookkeeping(() => {
            this.#ops.appendEvents(job.queueId, events);
            this.#sql.putBack.run(Date.now(), row.id, this.#owner);
          });
        };
      }
    } catch (error) {
      // A fault of ours, not a delivery result: defer the whole job on the schedule, as Redis does.
      record = this.#deferral(row, worker, error, log);
    }
    this.#queueResult({ row, write: record, worker, log });
  }

  /**
   * Keeps an attempt's outcome for a batch write: with the next enqueue's commit, or at most
   * RESULT_BATCH_MS later. Like every worker write it has no fsync of its own; until it is written the
   * job stays leased by this process, and a crash meanwhile runs the attempt again (at-least-once).
   */
  #queueResult(result: PendingResult): void {
    this.#results.push(result);
    this.#resultTimer ??= setTimeout(() => this.#flushResults(), RESULT_BATCH_MS);
  }

  #takeResults(): PendingResult[] {
    const results = this.#results;
    this.#results = [];
    clearTimeout(this.#resultTimer);
    this.#resultTimer = undefined;
    return results;
  }

  /** Writes the outcomes kept so far in one transaction. */
  #flushResults(): void {
    const results = this.#takeResults();
    if (results.length === 0) return;
    let unwritten: PendingResult[] = results;
    try {
      this.#bookkeeping(() => {
        unwritten = this.#applyResults(results);
      });
    } catch {
      unwritten = results;
    }
    this.#resultsWritten(results, unwritten);
  }

  /** Inside a transaction: each outcome in a savepoint of its own; returns those that failed. */
  #applyResults(results: readonly PendingResult[]): PendingResult[] {
    const failed: PendingResult[] = [];
    for (const result of results) {
      try {
        this.#tx(result.write);
      } catch {
        failed.push(result);
      }
    }
    return failed;
  }

  /** After the batch: written outcomes free their jobs; the others are written one by one, with their error handling. */
  #resultsWritten(results: readonly PendingResult[], unwritten: readonly PendingResult[]): void {
    const failed = new Set(unwritten);
    for (const result of results) if (!failed.has(result)) this.#leased.delete(result.row.id);
    for (const { row, write, worker, log } of unwritten) this.#record(row, write, worker, log);
    if (results.length > 0) this.#wake();
  }

  #stored<T>(queueId: string, value: T | null): T {
    if (value === null) throw new Error(`message ${queueId} is no longer in the queue`);
    return value;
  }

  /** The write that defers a whole job on the schedule after a fault of ours (not a delivery result). */
  #deferral(row: JobRow, worker: WorkerState, error: unknown, log: Logger): () => void {
    const at = Date.now() + worker.settings.schedule.delayAfter(row.attempts + 1);
    log.error({ err: error, retryAt: new Date(at).toISOString() }, 'delivery step failed; deferring the job');
    return () => {
      this.#bookkeeping(() => this.#sql.unlease.run(at, Date.now(), row.id, this.#owner));
    };
  }

  /**
   * Writes what an attempt left to write. When the store cannot write (disk full), the write is
   * kept and done by the health probe once it can: the job stays leased meanwhile, so it neither
   * runs twice in this process nor ends silently. A write that fails for another reason (a bug)
   * defers the job instead; if even that fails, the next reclaim schedules it again.
   */
  #record(row: JobRow, write: () => void, worker: WorkerState, log: Logger): void {
    let defer: () => void;
    try {
      write();
      this.#leased.delete(row.id);
      return;
    } catch (error) {
      if (this.#keepUnwritten(row.id, write, error, log)) return;
      defer = this.#deferral(row, worker, error, log);
    }
    try {
      defer();
      this.#leased.delete(row.id);
    } catch (again) {
      if (this.#keepUnwritten(row.id, defer, again, log)) return;
      log.error({ err: again }, 'could not defer the job either; the next reclaim schedules it again');
      this.#leased.delete(row.id);
    }
  }

  /** Keeps a write the store refused, for the probe to do once it can; false for other errors. */
  #keepUnwritten(jobId: string, write: () => void, error: unknown, log: Logger): boolean {
    if (!isStoreFailure(error)) return false;
    this.#unwritten.set(jobId, write);
    this.#health.failed(error);
    log.warn({ err: error }, 'the attempt is recorded once the store can write again; the job waits');
    return true;
  }

  /**
   * Schedules again every 'active' job that no attempt of this process holds (only this process
   * uses the store: at open, that is every one) and removes body slices no message owns.
   */
  #reclaim(reason: string): void {
    const now = Date.now();
    this.#reclaimedAt = now;
    const { jobs, parts } = this.#bookkeeping(() => {
      let jobs = 0;
      for (const { id } of this.#sql.activeJobs.all() as { id: string }[]) {
        if (!this.#leased.has(id)) jobs += this.#sql.reclaim.run(now, id).changes;
      }
      return { jobs, parts: this.#bodies.removeOrphans(new Set(this.#uploads.keys())) };
    });
    if (jobs > 0) this.#log.warn({ jobs, path: this.location }, reason);
    if (parts > 0)
      this.#log.info({ parts, path: this.location }, 'removed body slices of enqueues that never committed');
  }

  /**
   * While the store cannot write: writes the outcomes kept meanwhile, then a probe row, and checks
   * the file system has room again. Throws while any of it fails; the monitor tries again later.
   */
  #probe(): void {
    if (this.#closed) throw new Error('the queue is closed');
    for (const [jobId, write] of this.#unwritten) {
      try {
        write();
      } catch (error) {
        if (isStoreFailure(error)) throw error;
        // Not the store's fault, so it never will work: the reclaim below schedules the job again.
        this.#log.error(
          { err: error, jobId },
          'could not record an attempt kept for later; the job runs again',
        );
      }
      this.#unwritten.delete(jobId);
      this.#leased.delete(jobId);
      this.#wake();
    }
    this.#bookkeeping(() => this.#sql.probe.run(Date.now()));
    const free = freeBytes(dirname(this.location));
    const wanted = Math.max(MIN_FREE_BYTES, this.#refusedBytes);
    if (free !== undefined && free < wanted) {
      throw new Error(
        `${free} bytes free on the file system of ${dirname(this.location)}, fewer than the ${wanted} wanted to take mail again`,
      );
    }
    this.#refusedBytes = 0;
    this.#reclaim('jobs no attempt held were scheduled again');
    this.#wake();
  }

  /** Writes one attempt's outcome, and removes the message once none of its jobs is left, atomically. */
  #persist(job: DeliveryJob, stored: readonly RecipientState[], outcome: AttemptOutcome): void {
    // The job row keeps every recipient with its state; the outcome speaks of this attempt's only.
    const updated = new Map<string, RecipientState>();
    for (const s of [...outcome.decision.delivered, ...outcome.decision.failed]) {
      updated.set(s.recipient.address.toLowerCase(), s.recipient);
    }
    // Last: a failed recipient whose bounce could not be enqueued is pending again here.
    for (const r of outcome.next?.recipients ?? []) updated.set(r.address.toLowerCase(), r);
    const recipients = JSON.stringify(stored.map((r) => updated.get(r.address.toLowerCase()) ?? r));
    const now = Date.now();
    const event = attemptEvent(job, outcome, now);
    const events = [event, ...shapingEvents(job, outcome.report, now)];
    this.#bookkeeping(() => {
      const current = this.#sql.jobState.get(job.id) as
        | { state: JobState; lease_owner: string | null; hold_requested: number }
        | undefined;
      if (!current || current.state !== 'active' || current.lease_owner !== this.#owner) {
        // Removed by an operator while the attempt ran: nothing to record but the attempt, which did happen.
        this.#ops.appendEvents(job.queueId, events);
        this.#log.info(
          { queueId: job.queueId, jobId: job.id },
          'job removed during its attempt; result dropped',
        );
        return;
      }
      const next = outcome.next;
      if (next === undefined) {
        // The message's last open job: the delete takes the job with it (no 'done' row to write first).
        const others = this.#sql.otherOpenJobs.get(...jobsOf(job.queueId), job.id) as { n: number };
        if (others.n === 0) {
          this.#sql.deleteMessage.run(job.queueId);
          // The attempt and the expiry in one write of the timeline row.
          this.#ops.finished(job.queueId, now, events);
          return;
        }
        this.#ops.appendEvents(job.queueId, events);
        this.#sql.finish.run(recipients, now, job.id);
      } else {
        this.#ops.appendEvents(job.queueId, events);
        const state: JobState = current.hold_requested === 1 ? 'held' : 'scheduled';
        this.#sql.reschedule.run(
          state,
          recipients,
          next.at.getTime(),
          next.delayNotified ? 1 : 0,
          now,
          job.id,
        );
      }
    });
  }

  /**
   * Runs a worker write (a lease, an attempt's outcome) without its own fsync. Losing one to a
   * power cut only makes an attempt run again (at-least-once), never loses mail, and the WAL is
   * append-only, so the next enqueue's fsync makes it durable too. Halves the fsyncs per delivery.
   */
  #bookkeeping<T>(write: () => T): T {
    // Inside a batch's transaction, where #applyResults gave each outcome a savepoint of its own
    // (a second one here cost two statements per outcome): the batch's commit decides about the sync.
    if (this.#db.inTransaction) return write();
    this.#syncNormal.run();
    try {
      return this.#tx(write);
    } finally {
      this.#syncFull.run();
    }
  }

  async close(): Promise<void> {
    if (!this.#closing) {
      this.#stopping = true;
      this.#closing = (async () => {
        clearTimeout(this.#timer);
        // Enqueues already accepted in this turn are committed, not dropped.
        this.#flush();
        await Promise.allSettled([...this.#running, ...this.#uploads.values()]);
        this.#flush();
        this.#flushResults();
        while (this.#syncing) await this.#syncing;
        // Claimed jobs of the last flushes are given back (see #startClaimed) before the store closes.
        while (this.#claimedWaiting > 0) await new Promise((resolve) => setImmediate(resolve));
        // Outcomes the store could not write stay unwritten: their jobs are 'active' and run
        // again after the next open (a duplicate, never a loss).
        if (this.#unwritten.size > 0) {
          this.#log.warn(
            { jobs: this.#unwritten.size },
            'closing with attempts the store could not record; those jobs run again after the next start',
          );
        }
        this.#health.close();
        this.#closed = true;
        closeStore(this.#db);
        if (this.#walFd !== undefined) closeSync(this.#walFd);
      })();
    }
    return this.#closing;
  }

  /** The durability settings of the live connection, for start-up logs and tests. */
  storeSettings(): { journalMode: string; synchronous: string; lockingMode: string } {
    const synchronous = ['off', 'normal', 'full', 'extra'][
      this.#db.pragma('synchronous', { simple: true }) as number
    ];
    return {
      journalMode: String(this.#db.pragma('journal_mode', { simple: true })),
      synchronous: synchronous ?? 'unknown',
      lockingMode: String(this.#db.pragma('locking_mode', { simple: true })),
    };
  }

  async readMessage(queueId: string): Promise<Buffer | null> {
    return this.#bodies.read(queueId);
  }

  async openMessage(queueId: string): Promise<Readable | null> {
    return this.#bodies.open(queueId);
  }

  health(): QueueHealth {
    return this.#health.get();
  }

  onHealthChange(listener: (health: QueueHealth) => void): () => void {
    return this.#health.onChange(listener);
  }

  async inspect(queueId: string): Promise<MessageRecord | null> {
    const details = await this.#ops.details(queueId);
    if (details === null || details.state === 'finished' || details.envelope === undefined) return null;
    return {
      queueId,
      envelope: details.envelope,
      createdAt: details.createdAt ?? 0,
      ...(details.messageId === undefined ? {} : { messageId: details.messageId }),
      jobs: details.jobs.map(({ nextHop: _hop, ...job }) => job),
    };
  }

  /** Stops delivery of a message: its scheduled jobs wait until `release`; one in flight is held after its attempt. Returns the jobs affected. */
  async hold(queueId: string, event: OperatorEvent | null = operatorEvent('hold')): Promise<number> {
    const now = Date.now();
    this.#interventions++;
    return this.#db.transaction(() => {
      const held = this.#sql.hold.run(now, ...jobsOf(queueId)).changes;
      const marked = this.#sql.holdActive.run(now, ...jobsOf(queueId)).changes;
      if (held + marked > 0 && event !== null) this.#ops.appendEvents(queueId, [event]);
      return held + marked;
    })();
  }

  /** Lets a held message go on: each job is due at its scheduled time (at once if that has passed). */
  async release(queueId: string): Promise<number> {
    const now = Date.now();
    const changes = this.#db.transaction(() => {
      const released =
        this.#sql.release.run(now, ...jobsOf(queueId)).changes +
        this.#sql.unholdActive.run(now, ...jobsOf(queueId)).changes;
      if (released > 0) {
        this.#ops.record(queueId, 'release');
        this.#sql.clearHoldReason.run(queueId);
      }
      return released;
    })();
    this.#wake();
    return changes;
  }

  /** Makes a message's scheduled jobs due now (held ones stay held). Returns the jobs affected. */
  async retryNow(queueId: string): Promise<number> {
    // A held message stays held: release it first (as on every backend).
    if (this.#ops.isHeld(queueId) || this.#ops.jobStates(queueId) === undefined) return 0;
    const now = Date.now();
    const changes = this.#db.transaction(() => {
      const due = this.#sql.retryNow.run(now, now, ...jobsOf(queueId)).changes;
      this.#ops.record(queueId, 'retry', { detail: `${due} job(s) made due now` });
      return due;
    })();
    this.#wake();
    return changes;
  }

  /**
   * Deletes a message and its jobs without a bounce (an operator's decision). An attempt in
   * flight finishes, but its result is dropped. False when the message is unknown.
   */
  async remove(queueId: string): Promise<boolean> {
    return this.#removeWith(queueId, operatorEvent('delete'));
  }

  #removeWith(queueId: string, event: OperatorEvent): boolean {
    this.#interventions++;
    return this.#db.transaction(() => {
      if (this.#sql.deleteMessage.run(queueId).changes === 0) return false;
      this.#ops.finished(queueId, Date.now(), [event]);
      return true;
    })();
  }

  // ---- operator operations (QueueOperations); see operations.ts ----

  summary(): Promise<QueueSummary> {
    return this.#ops.summary();
  }

  listJobs(filter?: QueueFilter): Promise<QueuePage> {
    return this.#ops.listJobs(filter);
  }

  details(queueId: string): Promise<MessageDetails | null> {
    return this.#ops.details(queueId);
  }

  findByMessageId(messageId: string): Promise<string[]> {
    return this.#ops.findByMessageId(messageId);
  }

  appendTimeline(queueId: string, events: readonly TimelineEvent[]): Promise<void> {
    return this.#ops.appendTimeline(queueId, events);
  }

  async bounceNow(queueId: string, options: BounceNowOptions): Promise<BounceNowResult> {
    if (this.#ops.jobStates(queueId) === undefined) return { ok: false, reason: 'unknown' };
    // Held first, so no attempt starts while we bounce; one already running cannot be recalled.
    await this.hold(queueId, null);
    if (this.#ops.jobStates(queueId)?.includes('active')) {
      this.#ops.record(queueId, 'hold', { detail: 'held for a bounce: an attempt was in flight' });
      return { ok: false, reason: 'active' };
    }
    return this.#ops.bounce(queueId, options, (event) => this.#removeWith(queueId, event));
  }

  reroute(queueId: string, hop: NextHop | null, domain?: string): Promise<number> {
    return this.#ops.reroute(queueId, hop, domain);
  }

  rerouteDestination(domain: string, hop: NextHop | null): Promise<void> {
    return this.#ops.rerouteDestination(domain, hop);
  }

  suspend(domain: string, until: number): Promise<void> {
    return this.#ops.suspend(domain, until);
  }

  resume(domain: string): Promise<number> {
    return this.#ops.resume(domain);
  }
}

/** A store failure as intake sees it: 451 4.3.0 for the client, the SQLite error for the log. */
function unavailable(location: string, error: unknown): QueueUnavailableError {
  return new QueueUnavailableError(
    `queue unavailable: embedded queue ${location}: ${(error as Error)?.message}`,
    {
      cause: error,
    },
  );
}

/** A gate for the next fsync, closed until it ends (see EmbeddedQueue#durable). */
function nextSync(): { gate: Promise<void>; open: () => void; wake: boolean } {
  let open = (): void => {};
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { gate, open, wake: false };
}

/** The store's WAL file, for fsync; undefined when it cannot be opened (SQLite then syncs itself). */
function openWal(location: string): number | undefined {
  try {
    return openSync(`${location}-wal`, 'r');
  } catch {
    return undefined;
  }
}

/** Bytes free for this process on the file system holding `dir`; undefined when it cannot be told. */
function freeBytes(dir: string): number | undefined {
  try {
    const stats = statfsSync(dir);
    return stats.bavail * stats.bsize;
  } catch {
    return undefined;
  }
}

/**
 * Validates and serialises a message and its jobs (one per recipient domain, as every backend
 * plans them). `body` is the whole message, or empty when it is written in `parts` slices.
 */
function prepareMessage(
  message: IncomingMessage,
  body: Buffer,
  parts: number,
  size: number,
  options: EnqueueOptions | undefined,
): PreparedMessage {
  if (message.envelope.recipients.length === 0)
    throw new TypeError('enqueue: the envelope has no recipients');
  const queueId = newQueueId(message.receivedAt);
  return {
    queueId,
    envelope: JSON.stringify(message.envelope),
    body,
    parts,
    size,
    eightBit: message.eightBit === undefined ? null : message.eightBit ? 1 : 0,
    createdAt: message.receivedAt,
    messageId: message.messageId ?? null,
    source: message.source === undefined ? null : JSON.stringify(message.source),
    isBounce: message.isBounce === true ? 1 : 0,
    jobs: planJobs(queueId, message).map((job) => ({
      id: job.id,
      domain: job.domain,
      recipients: JSON.stringify(job.recipients),
      states: job.recipients,
    })),
    timeline: initialTimeline(message),
    holdReason: message.hold ?? null,
    envelopeValue: message.envelope,
    outbox: outboxWritesOf(options, queueId),
  };
}

function operatorEvent(action: OperatorEvent['action'], extra: Partial<OperatorEvent> = {}): OperatorEvent {
  return { type: 'operator', at: Date.now(), action, ...extra };
}

const JOB_COLUMNS = `j.id, j.queue_id, j.domain, j.recipients, j.attempts, j.next_attempt_at, j.state,
  j.delay_notified, j.next_hop, m.envelope, m.created_at, m.is_bounce, m.size, m.eight_bit`;

/** Where an 'active' job goes when it is taken back: held if an operator asked meanwhile, else scheduled. */
const RECLAIMED = `state = CASE hold_requested WHEN 1 THEN 'held' ELSE 'scheduled' END,
  hold_requested = 0, lease_owner = NULL, lease_until = NULL`;

function prepare(db: Database.Database) {
  return {
    insertMessage: db.prepare(
      `INSERT INTO messages (queue_id, envelope, body, size, parts, eight_bit, created_at, message_id, source,
         is_bounce, hold_reason)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    insertJob: db.prepare(
      `INSERT INTO jobs (id, queue_id, domain, recipients, next_attempt_at, state, lease_owner, lease_until,
         updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    anyDue: db.prepare(
      "SELECT 1 FROM jobs INDEXED BY jobs_due WHERE state = 'scheduled' AND next_attempt_at <= ? LIMIT 1",
    ),
    activeJobs: db.prepare("SELECT id FROM jobs WHERE state = 'active'"),
    reclaim: db.prepare(`UPDATE jobs SET ${RECLAIMED}, updated_at = ? WHERE id = ? AND state = 'active'`),
    probe: db.prepare('INSERT OR REPLACE INTO store_probe (id, at) VALUES (1, ?)'),
    jobRow: db.prepare(
      `SELECT ${JOB_COLUMNS} FROM jobs j JOIN messages m ON m.queue_id = j.queue_id WHERE j.id = ?`,
    ),
    lease: db.prepare(
      `UPDATE jobs SET state = 'active', lease_owner = ?, lease_until = ?, updated_at = ?
       WHERE id = ? AND state = 'scheduled'`,
    ),
    unlease: db.prepare(
      `UPDATE jobs SET ${RECLAIMED}, attempts = attempts + 1, next_attempt_at = ?, updated_at = ?
       WHERE id = ? AND lease_owner = ? AND state = 'active'`,
    ),
    // A job a limit refused: back as it was (attempts and next attempt untouched).
    putBack: db.prepare(
      `UPDATE jobs SET ${RECLAIMED}, updated_at = ? WHERE id = ? AND lease_owner = ? AND state = 'active'`,
    ),
    jobState: db.prepare('SELECT state, lease_owner, hold_requested FROM jobs WHERE id = ?'),
    finish: db.prepare(
      `UPDATE jobs SET state = 'done', recipients = ?, attempts = attempts + 1, hold_requested = 0,
         lease_owner = NULL, lease_until = NULL, updated_at = ?
       WHERE id = ?`,
    ),
    reschedule: db.prepare(
      `UPDATE jobs SET state = ?, recipients = ?, attempts = attempts + 1, next_attempt_at = ?,
         delay_notified = ?, hold_requested = 0, lease_owner = NULL, lease_until = NULL, updated_at = ?
       WHERE id = ?`,
    ),
    otherOpenJobs: db.prepare(
      `SELECT count(*) AS n FROM jobs WHERE ${JOBS_OF} AND id != ? AND state != 'done'`,
    ),
    deleteMessage: db.prepare('DELETE FROM messages WHERE queue_id = ?'),
    hold: db.prepare(
      `UPDATE jobs SET state = 'held', updated_at = ? WHERE ${JOBS_OF} AND state = 'scheduled'`,
    ),
    holdActive: db.prepare(
      `UPDATE jobs SET hold_requested = 1, updated_at = ? WHERE ${JOBS_OF} AND state = 'active'`,
    ),
    release: db.prepare(
      `UPDATE jobs SET state = 'scheduled', updated_at = ? WHERE ${JOBS_OF} AND state = 'held'`,
    ),
    unholdActive: db.prepare(
      `UPDATE jobs SET hold_requested = 0, updated_at = ?
       WHERE ${JOBS_OF} AND state = 'active' AND hold_requested = 1`,
    ),
    clearHoldReason: db.prepare('UPDATE messages SET hold_reason = NULL WHERE queue_id = ?'),
    retryNow: db.prepare(
      `UPDATE jobs SET next_attempt_at = ?, updated_at = ?
       WHERE ${JOBS_OF} AND state = 'scheduled'`,
    ),
  };
}
