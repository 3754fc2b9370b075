// The Redis backend: message bodies and envelopes in plain Redis keys, delivery jobs in BullMQ.
// Many nodes on one Redis share one queue; BullMQ's locks and stalled checks hand a dead node's
// jobs to the living.
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Logger, type NextHop, silentLogger, withTimeout } from '@tern/plugin-api';
import { type ByteSource, memoryStream } from '@tern/plugin-api/host';
import {
  describeRedis,
  isClusterConnection,
  keyBase,
  openRedis,
  primaries,
  type RedisClient,
  type RedisConnection,
  waitForReplicas,
} from '@tern/redis';
import type { Job, JobsOptions, Queue, Worker } from 'bullmq';
import type { RedisOptions } from 'ioredis';
import { z } from 'zod';
import { type AttemptSettings, type AttemptStore, attemptSettings, runDeliveryAttempt } from '../attempt.js';
import { BODY_SLICE_BYTES, inlineChunks, MessageSourceError, slicesOf } from '../body.js';
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
  WorkerOptions,
} from '../contract.js';
import { DEFAULT_WORKER_CONCURRENCY } from '../contract.js';
import { driver } from '../drivers.js';
import { HEADER_READ_LIMIT, headerBlockOf } from '../dsn.js';
import { QueueUnavailableError } from '../errors.js';
import { HealthMonitor } from '../health.js';
import type { IdempotencyStore } from '../idempotency.js';
import { normalizeMessageId } from '../operations.js';
import { DestinationPacer } from '../pacing.js';
import { newQueueId, planJobs } from '../plan.js';
import { checkQueueOptions, redisQueueShape, workerShape } from '../schema.js';
import type { SuppressionStore } from '../suppression.js';
import {
  attemptEvent,
  DEFAULT_TIMELINE_RETENTION_MS,
  initialTimeline,
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
import { bodyStream } from './body-stream.js';
import { RedisIdempotency } from './idempotency.js';
import type { JobData } from './job-data.js';
import {
  BullJobs,
  type DestinationCache,
  type JobGate,
  RedisOperations,
  readDestinations,
  readJobGate,
} from './operations.js';
import { defineOpsCommands, domainOfJob, type OpsKeys, type OpsRedis, opsKeys } from './ops-keys.js';
import { checkRedisSafety } from './safety.js';
import { RedisSuppressions } from './suppressions.js';
import {
  defineEngineCommands,
  EngineJobs,
  type EngineKeys,
  EngineLoop,
  type EngineRedis,
  engineKeys,
  enqueueMessage,
  HOLD_PARK_MS,
  jobField,
  midMember,
} from './tern-engine.js';
import { RedisTlsStore } from './tls-store.js';
import {
  defineOutboxCommands,
  type OutboxRedis,
  outboxSection,
  RedisWebhookOutbox,
  withdrawOutbox,
} from './webhook-outbox.js';

export interface RedisQueueOptions {
  /** `redis://[user:password@]host:port[/db]` (default `redis://127.0.0.1:6379`); or see `connection`. */
  readonly url?: string;
  /** Where Redis is: a URL, Sentinels and a master name, or Cluster nodes (wins over `url`). */
  readonly connection?: RedisConnection;
  /** Extra ioredis options (TLS settings...); the queue sets its own timeouts and retry policy over them. */
  readonly redis?: RedisOptions;
  /**
   * Every key this queue writes starts with `<prefix>:` (default `tern`); on a Cluster with
   * `{<prefix>}:`, so that all of them share one hash slot (see {@link keyBase}).
   */
  readonly prefix?: string;
  /**
   * Before answering an enqueue, wait until this many replicas have the message (Redis WAIT),
   * at most `timeoutMs`; fewer confirmations fail the enqueue (the client gets 451 and retries).
   */
  readonly replicaAck?: ReplicaAck;
  /** The BullMQ queue name (default `delivery`); nodes with the same prefix and name share one queue. */
  readonly queueName?: string;
  /** How long `enqueue` may take before it gives up and the client is told 451 (default 10 000 ms). */
  readonly enqueueTimeoutMs?: number;
  /**
   * How long a worker's lock on a running job lasts without renewal (default 6000 ms; renewed
   * every half of it). A node killed -9 holds its jobs this long at most, plus one stalled check.
   */
  readonly lockDurationMs?: number;
  /** How often workers look for jobs whose worker died (default 1000 ms). */
  readonly stalledIntervalMs?: number;
  /** How long a finished message's timeline stays retrievable (default 7 days). */
  readonly timelineRetentionMs?: number;
  /** Longest wait between two write probes while Redis cannot take writes (default 5000 ms). */
  readonly probeIntervalMs?: number;
  /**
   * The job engine: `'tern'` (default: Tern's own, a few Redis commands per job, see the README)
   * or `'bullmq'`. A node on `'tern'` still delivers what BullMQ holds until it is empty.
   */
  readonly engine?: 'tern' | 'bullmq';
  readonly logger?: Logger;
}

/** See {@link RedisQueueOptions.replicaAck}. */
export interface ReplicaAck {
  readonly replicas: number;
  readonly timeoutMs: number;
}

const JOB_NAME = 'deliver';
/** A job that throws past every guard is retried by BullMQ itself this often before it could ever land in "failed". */
const LAST_RESORT_ATTEMPTS = 1_000_000;
const LAST_RESORT_BACKOFF_MS = 60_000;
/** How often a node on Tern's engine looks whether BullMQ's queue (the previous engine's) is empty. */
const BULL_DRAIN_CHECK_MS = 5000;
/** Suspensions and routes are read again this often even without a PUBLISH (one missed in a reconnect). */
const DESTINATIONS_REFRESH_MS = 10_000;
/** `#runJob`'s answer for a job that waits for another time. */
const LATER = Symbol('later');
/** A limit refused the attempt: the job is parked at its slot. */
class LimitWait extends Error {}

/** How one engine moves a job that `#runJob` has run (or not). */
interface JobSteps {
  /** Reads the gate again (after a park, a release may have come in between). */
  regate(): Promise<JobGate>;
  /** The job's message is gone: forget the job. */
  drop(): Promise<void>;
  /** Waits until `at` as it is, without an attempt. */
  park(at: number): Promise<unknown>;
  /** Makes a parked job due now. */
  promote(): Promise<unknown>;
  /** The job is done: its last attempt (JSON), whether its message has other jobs, whether it was deferred before. */
  finish(done: JobDone): Promise<unknown>;
  /** The message's bytes, for delivery. */
  open(): Promise<Readable>;
  /** The message's first bytes (up to HEADER_READ_LIMIT), for a bounce's headers. */
  head(): Promise<Buffer>;
  /** Waits until `at` with new data, marked retried, the attempt (JSON, or '') on the timeline. */
  defer(
    data: JobData,
    at: number,
    event: string,
    record: <T>(write: () => Promise<T>) => Promise<T>,
  ): Promise<unknown>;
}
/** What finishing a job needs to know (see JobSteps.finish). */
interface JobDone {
  readonly event: string;
  /** The message was planned with this job only. */
  readonly only: boolean;
  /** It may be in the retried set (its data says it was deferred before). */
  readonly retried: boolean;
  readonly messageId: string | undefined;
}
/** What an enqueue that hands a job to this node's worker already holds: no take, no gate read. */
interface HandedJob {
  readonly gate: JobGate;
  readonly data: JobData;
}
/** Slices of a large body sent to Redis before the oldest must be confirmed: bounds memory per enqueue. */
const UPLOAD_WINDOW = 4;
/** A body being written expires this long after its last slice: a node that died mid-write leaves nothing. */
const UPLOAD_TTL_MS = 10 * 60_000;
const DEFAULT_PROBE_MS = 5000;
/**
 * A dead node's jobs run again after at most lock + stalled interval (about 7 s). A live node
 * renews every 3 s, so it would have to stall 6 s (event loop, or Redis unreachable that long)
 * for its job to be run twice. Measured in apps/mta/test/e2e-fleet.test.ts; see the README.
 */
const DEFAULT_LOCK_MS = 6000;
const DEFAULT_STALLED_MS = 1000;

/**
 * Key names under the prefix; exported for the README and for tests that look inside. Every key
 * of one message starts with `<prefix>:msg:<id>`, so a later Redis Cluster version can wrap the id
 * in a hash tag (`<prefix>:msg:{<id>}`) and keep a message's keys, its upload included, in one slot.
 */
export function redisKeys(
  prefix: string,
  queueId: string,
): { meta: string; body: string; jobs: string; upload: string } {
  const base = `${prefix}:msg:${queueId}`;
  return { meta: base, body: `${base}:body`, jobs: `${base}:jobs`, upload: `${base}:upload` };
}

/**
 * A QueueBackend on Redis. Create it with {@link openRedisQueue}, which waits until Redis answers.
 *
 * Per message: `<prefix>:msg:<id>` (hash: envelope, metadata), `<prefix>:msg:<id>:body` (string),
 * `<prefix>:msg:<id>:jobs` (set of unfinished job ids); BullMQ jobs under `<prefix>:<queueName>:`.
 */
export class RedisQueue implements QueueBackend, QueueOperations {
  readonly kind = 'redis' as const;
  readonly location: string;
  readonly prefix: string;
  /** The start of every key: the prefix, in a hash tag on a Cluster. */
  readonly keyBase: string;
  readonly queueName: string;
  /** The suppression list, shared by every node on this Redis and prefix. */
  readonly suppressions: SuppressionStore;
  /** Idempotency keys of HTTP injection, shared the same way. */
  readonly idempotency: IdempotencyStore;
  /** Webhook events waiting per endpoint, shared the same way (one node posts an endpoint at a time). */
  readonly webhookOutbox: WebhookOutbox;
  /** Fail-fast connection for enqueue: no offline queue, no resend, a command timeout. */
  readonly #client: OpsRedis;
  readonly #connection: RedisConnection | string;
  readonly #replicaAck: ReplicaAck | undefined;
  readonly #queue: Queue;
  readonly #ops: RedisOperations;
  readonly #opsKeys: OpsKeys;
  readonly #retentionSeconds: number;
  readonly #options: RedisQueueOptions;
  readonly #timeoutMs: number;
  readonly #lockMs: number;
  readonly #probeMs: number;
  readonly #log: Logger;
  readonly #health: HealthMonitor;
  /** MTA-STS policies, TLS-RPT counters and report claims, under `<prefix>:tls:`. */
  readonly tlsStore: TlsStore;
  #worker: Worker | undefined;
  /** The job engine (`engine` option). */
  readonly engine: 'tern' | 'bullmq';
  readonly #engineKeys: EngineKeys;
  readonly #engineJobs: EngineJobs;
  #engineLoop: EngineLoop<HandedJob> | undefined;
  #drainCheck: NodeJS.Timeout | undefined;
  /** Tern's engine: looks whether BullMQ's queue has jobs (see startWorker). */
  #bullWatch: NodeJS.Timeout | undefined;
  /** Suspensions and routes (Tern's engine reads them from memory, see #watchDestinations). */
  #destinations: DestinationCache | undefined;
  #subscriber: RedisClient | undefined;
  #destinationsTimer: NodeJS.Timeout | undefined;
  /**
   * Domains whose limit refused a job lately: their jobs go to the delayed set, each to its own slot
   * at the limit's pace, instead of taking worker slots (the limiter in Redis stays the authority).
   */
  readonly #pacer = new DestinationPacer();
  #workerClient: (OpsRedis & EngineRedis) | undefined;
  #closing = false;

  constructor(options: RedisQueueOptions = {}) {
    const checked = checkQueueOptions(
      z.looseObject({ ...redisQueueShape, url: redisQueueShape.url.optional() }),
      options,
      'queue.redis',
    );
    this.#options = { ...options, ...(checked as Partial<RedisQueueOptions>) };
    this.prefix = options.prefix ?? 'tern';
    this.queueName = options.queueName ?? 'delivery';
    this.#retentionSeconds = Math.ceil((options.timelineRetentionMs ?? DEFAULT_TIMELINE_RETENTION_MS) / 1000);
    this.#connection = options.connection ?? options.url ?? 'redis://127.0.0.1:6379';
    this.keyBase = keyBase(this.prefix, isClusterConnection(this.#connection));
    this.#replicaAck = options.replicaAck;
    if (
      this.#replicaAck !== undefined &&
      this.#replicaAck.timeoutMs >= (options.enqueueTimeoutMs ?? 10_000)
    ) {
      throw new RangeError(
        'queue.redis.replicaAck.timeoutMs: must be below enqueueTimeoutMs, or the enqueue gives up before WAIT answers',
      );
    }
    this.#opsKeys = opsKeys(this.keyBase);
    this.#timeoutMs = options.enqueueTimeoutMs ?? 10_000;
    this.#lockMs = options.lockDurationMs ?? DEFAULT_LOCK_MS;
    this.#probeMs = options.probeIntervalMs ?? DEFAULT_PROBE_MS;
    this.#log = (options.logger ?? silentLogger).child({ queue: 'redis' });
    this.location = describeRedis(this.#connection);
    // The driver loads here, not at import: an embedded-queue user never loads BullMQ.
    const { Queue } = driver('bullmq');
    this.engine = options.engine ?? 'tern';
    this.#engineKeys = engineKeys(this.keyBase, this.queueName);
    this.#client = defineOpsCommands(
      openRedis(this.#connection, {
        ...options.redis,
        // An unreachable Redis must fail enqueue at once (451), not park it in ioredis' offline queue.
        enableOfflineQueue: false,
        // A command in flight when the connection drops fails instead of being resent later.
        maxRetriesPerRequest: 0,
        commandTimeout: this.#timeoutMs,
        connectTimeout: Math.min(this.#timeoutMs, 10_000),
        lazyConnect: false,
      }),
    );
    defineEngineCommands(this.#client);
    defineOutboxCommands(this.#client);
    this.#engineJobs = new EngineJobs(
      this.#client as OpsRedis & EngineRedis,
      this.#engineKeys,
      (queueId) => redisKeys(this.keyBase, queueId).meta,
    );
    this.#client.on('error', (error) => this.#log.debug({ err: error }, 'redis connection error'));
    this.#health = new HealthMonitor({
      name: `redis queue ${this.location}`,
      logger: this.#log,
      // A real write, on the connection enqueue uses: refused while Redis is unreachable, out of
      // memory (noeviction) or refusing writes after a failed save (MISCONF).
      probe: async () => {
        await this.#client.set(this.#opsKeys.probe, String(Date.now()), 'PX', 60_000);
        await this.#loadScripts();
      },
      maxProbeIntervalMs: this.#probeMs,
      hint: redisHint,
    });
    this.#client.on('close', () => {
      if (!this.#closing)
        this.#health.failed(new Error(`the connection to Redis at ${this.location} is lost`));
    });
    this.#client.on('ready', () => this.#health.probeSoon());
    this.suppressions = new RedisSuppressions(this.#client, this.keyBase);
    this.idempotency = new RedisIdempotency(this.#client, this.keyBase);
    this.webhookOutbox = new RedisWebhookOutbox(this.#client, this.keyBase);
    this.#queue = new Queue(this.queueName, { connection: this.#client, prefix: this.keyBase });
    this.#queue.on('error', (error) => this.#log.debug({ err: error }, 'bullmq queue error'));
    this.tlsStore = new RedisTlsStore(this.#client, this.keyBase);
    this.#ops = new RedisOperations({
      client: this.#client,
      jobs:
        this.engine === 'tern'
          ? this.#engineJobs
          : new BullJobs(this.#client, this.#queue, this.keyBase, this.queueName),
      prefix: this.keyBase,
      retentionSeconds: this.#retentionSeconds,
      messageKeys: (queueId) => redisKeys(this.keyBase, queueId),
      allJobsIndex: this.engine === 'bullmq',
      enqueue: (message) => this.enqueue(message),
    });
  }

  /** Resolves once Redis answers and BullMQ's scripts are loaded; rejects after `timeoutMs`. */
  async ready(timeoutMs = this.#timeoutMs): Promise<void> {
    await withTimeout(this.#queue.waitUntilReady(), timeoutMs, `Redis at ${this.location} did not answer`);
  }

  /** Warnings about Redis settings that can lose mail (eviction, no AOF); log them at start-up. */
  async checkSafety(): Promise<string[]> {
    const warnings = await Promise.all(primaries(this.#client).map((primary) => checkRedisSafety(primary)));
    return [...new Set(warnings.flat())];
  }

  async enqueue(message: IncomingMessage, options?: EnqueueOptions): Promise<string> {
    if (message.envelope.recipients.length === 0)
      throw new TypeError('enqueue: the envelope has no recipients');
    const queueId = newQueueId(message.receivedAt);
    const keys = redisKeys(this.keyBase, queueId);
    const jobs = planJobs(queueId, message);
    // Webhook events go in the same write as the message (the outbox shares its hash slot).
    const outbox = outboxWritesOf(options, queueId);
    if (this.engine === 'tern') return this.#enqueueTern(message, queueId, keys, jobs, outbox);

    // One MULTI, one round trip: body, envelope, job set and the BullMQ jobs land together or
    // not at all (a command refused at queueing time, OOM included, aborts the whole EXEC).
    let client: RedisClient;
    try {
      client = (await withTimeout(
        this.#queue.client,
        this.#timeoutMs,
        'Redis is not ready',
      )) as unknown as RedisClient;
    } catch (error) {
      throw this.#unavailable(error);
    }
    const chunks = await this.#uploadLarge(message, keys.upload);
    const multi = client.multi();
    if (outbox !== undefined) {
      // First, so its reply (the events kept per endpoint) is the first of the EXEC's.
      const { keys: outboxKeys, args } = outboxSection(this.keyBase, outbox, Date.now());
      (multi as unknown as OutboxRedis).ternOutboxWithMessage(
        1 + outboxKeys.length,
        keys.meta,
        ...outboxKeys,
        ...args,
      );
    }
    if (chunks === undefined) {
      // RENAME keeps the upload's TTL: PERSIST drops it in the same transaction.
      multi.rename(keys.upload, keys.body).persist(keys.body);
    } else {
      // One SET of one Buffer (at most INLINE_BODY_LIMIT bytes): not a SET and an APPEND per chunk.
      multi.set(keys.body, chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    }
    // An object: BullMQ wraps the MULTI's HSET to take (key, fields) only.
    multi.hset(keys.meta, messageHash(message, jobs));
    // Written for one job too, though this version only deletes it: a worker of the previous
    // version on the same queue (a rolling upgrade) asks the set whether the job is wanted, and
    // would drop the job as withdrawn without it. One command per message buys upgrades without loss.
    // Tern's engine has no previous version: a message of one job needs no set there.
    if (this.engine === 'bullmq' || jobs.length > 1) multi.sadd(keys.jobs, ...jobs.map((j) => j.id));
    // Operator indexes and the timeline land in the same transaction as the message.
    const ops = this.#opsKeys;
    const timeline = ops.timeline(queueId);
    multi.rpush(timeline, ...initialTimeline(message).map((e) => JSON.stringify(e)));
    const messageIdKey =
      message.messageId === undefined ? undefined : ops.messageId(normalizeMessageId(message.messageId));
    if (messageIdKey !== undefined) multi.sadd(messageIdKey, queueId).persist(messageIdKey);
    for (const job of jobs) {
      multi.zadd(ops.jobs, 0, job.id).zadd(ops.domain(job.domain), 0, job.id).sadd(ops.domains, job.domain);
    }
    if (message.hold !== undefined) multi.sadd(ops.held, ...jobs.map((j) => j.id));
    for (const job of jobs) {
      // Job.addJob queues the BullMQ script on our MULTI instead of sending it on its own.
      void new (driver('bullmq').Job)(
        this.#queue,
        JOB_NAME,
        toJobData(job, jobs.length),
        jobOptions(),
        job.id,
      )
        .addJob(multi as never)
        .catch(() => {});
    }

    try {
      const results = await withTimeout(
        multi.exec(),
        this.#timeoutMs,
        'Redis did not confirm the message in time',
      );
      const failure = results?.find(([error]) => error !== null)?.[0];
      if (results === null || failure) throw failure ?? new Error('transaction discarded');
      if (this.#replicaAck !== undefined) await this.#awaitReplicas(client, keys.meta, this.#replicaAck);
      if (outbox !== undefined) keptBy(outbox, results[0]?.[1] as number[]);
    } catch (error) {
      this.#withdraw(queueId, jobs, undefined, outbox);
      throw this.#unavailable(error);
    }
    return queueId;
  }

  /**
   * Tern's engine: the whole message in one script call (one command, one round trip): the body
   * in the message hash when it fits one slice, 256 KiB (as the Buffer intake handed over, never a
   * string), its `received` event and intake's verdicts in the hash too (`tl`: no timeline key
   * until the message finishes), its Message-ID as one entry of the `mids` index, no `ops:jobs`.
   */
  async #enqueueTern(
    message: IncomingMessage,
    queueId: string,
    keys: ReturnType<typeof redisKeys>,
    jobs: readonly DeliveryJob[],
    outbox: readonly OutboxWrite[] | undefined,
  ): Promise<string> {
    // Inline up to one slice: a worker then reads it whole with the job's gate (bounded, as the
    // slices of a larger body are).
    const chunks = await this.#uploadLarge(message, keys.upload, BODY_SLICE_BYTES);
    const fields: (string | Buffer)[] = [];
    for (const [name, value] of Object.entries(messageHash(message, jobs))) fields.push(name, value);
    const body =
      chunks === undefined ? undefined : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
    if (body !== undefined) fields.push('body', body);
    fields.push(
      'tl',
      initialTimeline(message)
        .map((e) => JSON.stringify(e))
        .join('\n'),
    );
    const data = jobs.map((job) => toJobData(job, jobs.length));
    for (const [i, job] of jobs.entries()) fields.push(jobField(job.id), JSON.stringify(data[i]));
    const mid =
      message.messageId === undefined ? undefined : midMember(normalizeMessageId(message.messageId), queueId);
    const loop = this.#engineLoop;
    const handOff = loop && message.hold === undefined ? loop.reserve(this.#startable(jobs)) : undefined;
    try {
      const kept = await withTimeout(
        enqueueMessage(this.#client as OpsRedis & EngineRedis, this.#engineKeys, this.#opsKeys, keys, {
          jobs,
          fields,
          mid,
          held: message.hold !== undefined,
          uploaded: chunks === undefined,
          handOff: handOff?.size ? { run: this.#engineKeys.run(loop?.node ?? ''), ids: handOff } : undefined,
          outbox: outbox === undefined ? undefined : outboxSection(this.keyBase, outbox, Date.now()),
        }),
        this.#timeoutMs,
        'Redis did not confirm the message in time',
      );
      if (this.#replicaAck !== undefined)
        await this.#awaitReplicas(this.#client, keys.meta, this.#replicaAck);
      if (outbox !== undefined) keptBy(outbox, kept);
    } catch (error) {
      this.#withdraw(queueId, jobs, mid, outbox);
      if (handOff?.size) loop?.handBack(handOff);
      throw this.#unavailable(error);
    }
    if (handOff?.size) {
      const handed = new Map<string, HandedJob>();
      for (const [i, job] of jobs.entries()) {
        if (!handOff.has(job.id)) continue;
        const route = this.#destinations?.routes.get(job.domain);
        const gate: JobGate = {
          wanted: true,
          held: false,
          suspendedUntil: undefined,
          nextHop: route === undefined ? undefined : (JSON.parse(route) as NextHop),
          messageId: message.messageId,
          body,
        };
        handed.set(job.id, { gate, data: data[i] as JobData });
      }
      loop?.handedOff(handed);
    }
    return queueId;
  }

  /**
   * The ids of jobs that may start at once on this node, as the gate would find them: neither
   * their domain suspended nor paced by a limit (those go to `ready`, to be parked by whoever
   * takes them). A hold is the caller's check.
   */
  #startable(jobs: readonly DeliveryJob[]): string[] {
    const now = Date.now();
    const suspended = this.#destinations?.suspended;
    return jobs
      .filter(
        (job) =>
          !(Number(suspended?.get(job.domain) ?? 0) > now) &&
          this.#pacer.room(job.domain, now) === Number.POSITIVE_INFINITY,
      )
      .map((job) => job.id);
  }

  /**
   * A body too large to hold (or spooled to disk by intake) is written in slices first, to a key
   * of its own that expires unless the enqueue renames it into place. Returns the chunks of a body
   * small enough to go with the enqueue itself (undefined when it was uploaded).
   */
  async #uploadLarge(
    message: IncomingMessage,
    upload: string,
    limit?: number,
  ): Promise<readonly Buffer[] | undefined> {
    const chunks = inlineChunks(message.content, limit);
    if (chunks !== undefined) return chunks;
    if (!this.#health.writable) {
      // Fail fast instead of streaming the whole body into a Redis that refused the last write.
      throw this.#unavailable(new Error(`Redis cannot take writes: ${this.#health.get().lastError}`));
    }
    try {
      await this.#upload(upload, message.content);
    } catch (error) {
      this.#client.del(upload).catch(() => {});
      throw this.#unavailable(error);
    }
    return undefined;
  }

  /**
   * An enqueue failed, but its writes may have landed (a command failed inside the MULTI or the
   * script after a first write) or may still land (Redis is slow, not gone). These commands go out on the same connection right
   * behind it, so Redis runs them after: the message is withdrawn, and a worker drops its jobs
   * when it finds the message gone. The client's retry after our 451 is then the only copy (or,
   * if a worker was quicker, a duplicate). Its webhook events go first, found through the hash
   * (the same way, an endpoint may have been posted them already).
   */
  #withdraw(
    queueId: string,
    jobs: readonly DeliveryJob[],
    mid: string | undefined,
    outbox?: readonly OutboxWrite[],
  ): void {
    const keys = redisKeys(this.keyBase, queueId);
    const ops = this.#opsKeys;
    if (outbox !== undefined)
      withdrawOutbox(this.#client as unknown as OutboxRedis, this.keyBase, keys.meta, outbox).catch(() => {});
    this.#client.del(keys.jobs, keys.meta, keys.body, keys.upload, ops.timeline(queueId)).catch(() => {});
    if (this.engine === 'bullmq') this.#client.zrem(ops.jobs, ...jobs.map((j) => j.id)).catch(() => {});
    if (mid !== undefined) this.#client.zrem(ops.mids, mid).catch(() => {});
    for (const job of jobs) {
      this.#client.zrem(ops.domain(job.domain), job.id).catch(() => {});
      this.#client.ternPruneDomain(ops.domains, ops.domain(job.domain), job.domain).catch(() => {});
    }
  }

  /**
   * WAIT on the connection (the Cluster node) that ran the MULTI: the message counts as durable
   * only once `replicas` replicas have it, so a failover to one of them cannot lose it.
   */
  async #awaitReplicas(client: RedisClient, key: string, ack: ReplicaAck): Promise<void> {
    const confirmed = await waitForReplicas(client, key, ack.replicas, ack.timeoutMs);
    if (confirmed < ack.replicas) {
      throw new ReplicaAckError(
        `${confirmed} of ${ack.replicas} Redis replica(s) confirmed the message within ${ack.timeoutMs} ms`,
      );
    }
  }

  /**
   * Writes `content` to `key` in slices as it streams: a SET with a TTL, then APPENDs that each
   * renew it, at most UPLOAD_WINDOW slices unconfirmed at a time so memory stays bounded whatever
   * the size. Rejects on the first refused write.
   */
  async #upload(key: string, content: ByteSource): Promise<void> {
    const window: Promise<unknown>[] = [];
    let failure: { error: unknown } | undefined;
    let size = 0;
    // A slice is refilled UPLOAD_WINDOW + 1 slices later: by then the command that carried it has
    // been answered (so written), since at most UPLOAD_WINDOW are unanswered.
    for await (const slice of slicesOf(content, UPLOAD_WINDOW + 1)) {
      if (size === 0) {
        // Awaited: the APPENDs that follow must find the key (and its TTL) in place.
        await this.#client.set(key, slice, 'PX', UPLOAD_TTL_MS);
      } else {
        window.push(
          this.#client.ternAppendUpload(key, slice, UPLOAD_TTL_MS).catch((error: unknown) => {
            failure ??= { error };
          }),
        );
        if (window.length >= UPLOAD_WINDOW) await window.shift();
      }
      size += slice.length;
      if (failure) break;
    }
    await Promise.all(window);
    if (failure) throw failure.error;
    if (size === 0) await this.#client.set(key, '', 'PX', UPLOAD_TTL_MS);
  }

  /**
   * Loads the Lua scripts of this connection (BullMQ's and ours) that Redis does not have.
   * ioredis sends a script's body only the first time a connection uses it and EVALSHA after
   * that, even when that first EVAL was refused (out of memory) or the scripts were flushed; in
   * the enqueue MULTI nothing resends it, so every enqueue would fail with NOSCRIPT from then on.
   */
  async #loadScripts(): Promise<void> {
    const scripts = Object.values(
      (this.#client as unknown as { scriptsSet: Record<string, { sha: string; lua: string }> }).scriptsSet,
    );
    if (scripts.length === 0) return;
    // On a Cluster, on every primary: a failover or a resharding may bring the queue's slot to any.
    for (const primary of primaries(this.#client)) {
      const loaded = (await primary.script('EXISTS', ...scripts.map((s) => s.sha))) as number[];
      await Promise.all(
        scripts.filter((_, i) => loaded[i] !== 1).map((script) => primary.script('LOAD', script.lua)),
      );
    }
  }

  /**
   * What intake answers 451 for. Unless the message itself could not be read, Redis is
   * unwritable from now until a probe write works.
   */
  #unavailable(error: unknown): QueueUnavailableError {
    // An aborted MULTI says only EXECABORT; the command that was refused (OOM...) says why.
    const previous = (error as { previousErrors?: unknown[] } | null)?.previousErrors?.[0];
    // A missing replica confirmation says nothing about the primary taking writes.
    if (!(error instanceof MessageSourceError) && !(error instanceof ReplicaAckError))
      this.#health.failed(previous ?? error);
    return new QueueUnavailableError(`queue unavailable: ${(error as Error).message}`, { cause: error });
  }

  async startWorker(deliver: Deliver, options: WorkerOptions = {}): Promise<void> {
    if (this.#worker || this.#engineLoop) throw new Error('startWorker: this queue already has a worker');
    const settings = attemptSettings({ ...options, logger: options.logger ?? this.#options.logger });
    const concurrency =
      checkQueueOptions(z.looseObject(workerShape), options, 'worker').concurrency ??
      DEFAULT_WORKER_CONCURRENCY;
    // The worker side waits out short Redis outages instead of failing: a job that cannot be
    // persisted stays in the node's hands, and runs again after its lease (at-least-once).
    const client = defineEngineCommands(
      defineOpsCommands(openRedis(this.#connection, { ...this.#options.redis, maxRetriesPerRequest: null })),
    ) as OpsRedis & EngineRedis;
    client.on('error', (error) => this.#log.debug({ err: error }, 'redis worker connection error'));
    this.#workerClient = client;
    if (this.engine === 'tern') {
      const blocking = openRedis(this.#connection, { ...this.#options.redis, maxRetriesPerRequest: null });
      blocking.on('error', (error) => this.#log.debug({ err: error }, 'redis take connection error'));
      const loop = new EngineLoop<HandedJob>({
        client,
        blocking,
        keys: this.#engineKeys,
        concurrency,
        lockMs: this.#lockMs,
        tickMs: this.#options.stalledIntervalMs ?? DEFAULT_STALLED_MS,
        logger: this.#log,
        run: (id, node, handed) => this.#processTern(id, node, deliver, settings, handed),
        paused: () => !this.#health.writable,
        onError: (error) => {
          if (refusesWrites(error)) this.#health.failed(error);
          else this.#log.error({ err: error }, 'delivery worker error');
        },
        mids: {
          mids: this.#opsKeys.mids,
          state: this.#opsKeys.midSweep,
          retentionMs: this.#retentionSeconds * 1000,
          metaPrefix: redisKeys(this.keyBase, '').meta,
          timelinePrefix: this.#opsKeys.timelineDone(''),
          listPrefix: this.#opsKeys.timeline(''),
        },
      });
      this.#engineLoop = loop;
      await this.#watchDestinations();
      await loop.start();
      // Mail left in BullMQ by this queue's previous engine is delivered by a BullMQ worker
      // until BullMQ holds no job any more. Looked at again every BULL_DRAIN_CHECK_MS: in a rolling
      // upgrade, nodes of an older version (BullMQ by default) keep putting mail there, and the
      // last of them may stop leaving deferred jobs behind after this node's drain had ended.
      let looking = false;
      const look = async (): Promise<void> => {
        if (looking || this.#worker !== undefined || this.#closing) return;
        looking = true;
        try {
          if (await this.#bullHasJobs()) await this.#startBullWorker(deliver, settings, concurrency, true);
        } finally {
          looking = false;
        }
      };
      await look();
      this.#bullWatch = setInterval(() => void look().catch(() => {}), BULL_DRAIN_CHECK_MS);
      this.#bullWatch.unref?.();
      return;
    }
    await this.#startBullWorker(deliver, settings, concurrency, false);
  }

  /**
   * Keeps suspensions and routes in memory: read at start, again on each PUBLISH of an operator
   * change, and every DESTINATIONS_REFRESH_MS in case a message was missed (a reconnect).
   */
  async #watchDestinations(): Promise<void> {
    const client = this.#workerClient as OpsRedis;
    const reload = () =>
      readDestinations(client, this.#opsKeys).then(
        (cache) => {
          this.#destinations = cache;
        },
        (error: unknown) => this.#log.warn({ err: error }, 'could not read suspensions and routes'),
      );
    await reload();
    const subscriber = openRedis(this.#connection, { ...this.#options.redis, maxRetriesPerRequest: null });
    subscriber.on('error', (error) => this.#log.debug({ err: error }, 'redis subscriber connection error'));
    subscriber.on('message', () => void reload());
    // Resubscribed by ioredis after a reconnect; reload then too (changes may have been missed).
    subscriber.on('ready', () => void reload());
    await subscriber.subscribe(this.#opsKeys.changed);
    this.#subscriber = subscriber;
    this.#destinationsTimer = setInterval(() => void reload(), DESTINATIONS_REFRESH_MS);
    this.#destinationsTimer.unref?.();
  }

  /** Whether BullMQ's queue still holds jobs (waiting, delayed, active, paused, prioritized). */
  async #bullHasJobs(): Promise<boolean> {
    const counts = await this.#queue.getJobCounts('wait', 'delayed', 'active', 'paused', 'prioritized');
    return Object.values(counts).some((n) => n > 0);
  }

  async #startBullWorker(
    deliver: Deliver,
    settings: AttemptSettings,
    concurrency: number,
    draining: boolean,
  ): Promise<void> {
    const client = this.#workerClient as OpsRedis;
    const { Worker } = driver('bullmq');
    const worker = new Worker(this.queueName, (job, token) => this.#process(job, token, deliver, settings), {
      connection: client,
      prefix: this.keyBase,
      concurrency,
      lockDuration: this.#lockMs,
      stalledInterval: this.#options.stalledIntervalMs ?? DEFAULT_STALLED_MS,
      // A job whose worker died goes back to waiting every time: never to "failed".
      maxStalledCount: LAST_RESORT_ATTEMPTS,
      autorun: false,
    });
    worker.on('error', (error) => {
      if (refusesWrites(error)) {
        this.#health.failed(error);
        // BullMQ asks for the next job again at once after such a refusal: a hot loop that
        // floods the log. Fetch nothing until a probe write works (the monitor said it once).
        if (!worker.isPaused()) {
          void worker
            .pause(true)
            // Writable again before the pause took effect: the monitor's signal has passed.
            .then(() => this.#health.writable && !this.#closing && worker.resume())
            .catch(() => {});
        }
        return;
      }
      this.#log.error({ err: error }, 'delivery worker error');
    });
    const unwatch = this.#health.onChange((health) => {
      if (health.writable && worker.isPaused() && !this.#closing) worker.resume();
    });
    worker.on('failed', (job, error) => {
      if (refusesWrites(error)) this.#health.failed(error);
      this.#log.error({ err: error, jobId: job?.id }, 'a delivery job failed in BullMQ; it will be retried');
    });
    this.#worker = worker;
    void worker.run().catch((error) => this.#log.error({ err: error }, 'delivery worker stopped'));
    await worker.waitUntilReady();
    if (draining) {
      this.#log.info('draining jobs left in BullMQ by the previous queue engine');
      const check = setInterval(() => {
        void this.#bullHasJobs()
          .then(async (left) => {
            if (left || this.#worker !== worker) return;
            clearInterval(check);
            unwatch();
            this.#worker = undefined;
            await worker.close();
            this.#log.info('BullMQ queue drained; Tern job engine only from now on');
          })
          .catch(() => {});
      }, BULL_DRAIN_CHECK_MS);
      check.unref?.();
      this.#drainCheck = check;
    }
  }

  /** A BullMQ job: the attempt, then BullMQ's way to put it off (DelayedError). */
  async #process(
    job: Job,
    token: string | undefined,
    deliver: Deliver,
    settings: AttemptSettings,
  ): Promise<unknown> {
    const client = this.#workerClient as OpsRedis;
    const data = job.data as JobData;
    const id = job.id as string;
    const keys = redisKeys(this.keyBase, data.queueId);
    // The only job of its message: the message's presence says whether it is still wanted.
    const single = data.jobs === 1;
    const gate = () => readJobGate(client, this.#opsKeys, keys, id, data.domain, single);
    const result = await this.#runJob(id, data, await gate(), deliver, settings, {
      regate: gate,
      drop: async () => {},
      park: (at) => job.moveToDelayed(at, token),
      promote: () => job.promote(),
      finish: (done) => {
        const ops = this.#opsKeys;
        const timeline = ops.timeline(data.queueId);
        return client.ternFinishJob(
          keys.jobs,
          keys.meta,
          keys.body,
          ops.jobs,
          ops.domain(data.domain),
          ops.retried(data.domain),
          timeline,
          // The timeline stands in when there is no Message-ID (the script then skips it).
          done.messageId === undefined ? timeline : ops.messageId(normalizeMessageId(done.messageId)),
          id,
          done.event,
          this.#retentionSeconds,
          done.only ? '1' : '0',
          done.retried ? '1' : '0',
        );
      },
      open: async () => bodyStream(client, keys.body),
      head: () => client.getrangeBuffer(keys.body, 0, HEADER_READ_LIMIT - 1),
      defer: async (nextData, at, event, record) => {
        // Data first, confirmed before the job joins the retried set: if we die between the two,
        // the replay already knows who is done, and a job in the retried set always has data
        // that says it was deferred (the finish script reads the set only for those).
        await record(() => job.updateData(nextData));
        await record(() =>
          client.ternRecordRetry(
            this.#opsKeys.domain(data.domain),
            this.#opsKeys.retried(data.domain),
            this.#opsKeys.timeline(data.queueId),
            id,
            event,
          ),
        );
        await record(() => job.moveToDelayed(at, token));
      },
    });
    if (result === LATER) throw new (driver('bullmq').DelayedError)();
    return result;
  }

  /** A job of Tern's engine, taken into this node's running list or handed to it by an enqueue. */
  async #processTern(
    id: string,
    node: string,
    deliver: Deliver,
    settings: AttemptSettings,
    handed: HandedJob | undefined,
  ): Promise<void> {
    const client = this.#workerClient as OpsRedis & EngineRedis;
    const queueId = id.slice(0, id.indexOf('@'));
    const domain = domainOfJob(id);
    const keys = redisKeys(this.keyBase, queueId);
    const ops = this.#opsKeys;
    const ek = this.#engineKeys;
    const run = ek.run(node);
    const field = jobField(id);
    // Redis itself after a park (a resume may not have reached this node's cache yet).
    const gate = () => readJobGate(client, ops, keys, id, domain, true, field);
    // The body comes with the gate (no GETRANGE), unless the domain is paced: a job parked for
    // its slot would have fetched it for nothing.
    const paced = handed === undefined && this.#pacer.room(domain, Date.now()) !== Number.POSITIVE_INFINITY;
    const first =
      handed?.gate ??
      (await readJobGate(client, ops, keys, id, domain, true, field, this.#destinations, !paced));
    // Inline in the hash (most mail), or in its own key (a large one, written in slices).
    const body = async (): Promise<Buffer | null> =>
      first.body ?? (paced ? await client.hgetBuffer(keys.meta, 'body') : null);
    // Parked (no data) or deferred (new data) in one script, out of the running list.
    const later = (data: string, at: number, event: string) =>
      client
        .ternEngineDefer(
          keys.meta,
          run,
          ek.due,
          ops.domain(domain),
          ops.retried(domain),
          ops.timeline(queueId),
          id,
          field,
          data,
          at,
          event,
        )
        .then(() => this.#engineLoop?.dueAt(at));
    const data = handed?.data ?? (first.data === undefined ? undefined : (JSON.parse(first.data) as JobData));
    await this.#runJob(id, data, first, deliver, settings, {
      regate: gate,
      drop: async () => {
        await client.lrem(run, -1, id);
      },
      park: (at) => later('', at, ''),
      promote: () => this.#engineJobs.reschedule(id, true),
      finish: (done) =>
        client.ternEngineFinish(
          run,
          keys.meta,
          keys.body,
          keys.jobs,
          ops.domain(domain),
          ops.retried(domain),
          ops.timeline(queueId),
          ops.timelineDone(queueId),
          id,
          done.event,
          this.#retentionSeconds,
          done.only ? '1' : '0',
          done.retried ? '1' : '0',
          field,
        ),
      open: async () => {
        const inline = await body();
        return inline === null ? bodyStream(client, keys.body) : memoryStream([inline]);
      },
      head: async () =>
        (await body())?.subarray(0, HEADER_READ_LIMIT) ??
        (await client.getrangeBuffer(keys.body, 0, HEADER_READ_LIMIT - 1)),
      defer: (nextData, at, event, record) => record(() => later(JSON.stringify(nextData), at, event)),
    });
  }

  /**
   * One attempt of a job, whichever engine holds it: the gate (wanted, held, suspended, paced),
   * the delivery, then the job finished or put off through the engine's own steps. Returns LATER
   * when the job waits for another time.
   */
  async #runJob(
    id: string,
    data: JobData | undefined,
    gate: JobGate,
    deliver: Deliver,
    settings: AttemptSettings,
    engine: JobSteps,
  ): Promise<unknown> {
    // A job replayed after its message was finished (or withdrawn) has nothing left to do.
    if (!gate.wanted || data === undefined) {
      this.#log.warn({ jobId: id }, 'job of a finished or withdrawn message; dropped');
      await engine.drop();
      return { dropped: true };
    }
    // Held by an operator, or its destination suspended: wait without using an attempt.
    if (gate.held || gate.suspendedUntil !== undefined) {
      await engine.park(gate.suspendedUntil ?? settings.now() + HOLD_PARK_MS);
      // A release or resume that ran while we parked found the job active and could not move it.
      const again = await engine.regate();
      if (!again.held && again.suspendedUntil === undefined) await engine.promote().catch(() => {});
      return LATER;
    }

    // Its domain waits for a limit: to its slot in the delayed set, as it is (not an attempt).
    const slot = this.#pacer.reserve(data.domain, settings.now());
    if (slot !== undefined) {
      await engine.park(slot);
      return LATER;
    }

    const deliveryJob: DeliveryJob = {
      id,
      queueId: data.queueId,
      domain: data.domain,
      envelope: data.envelope,
      recipients: data.recipients,
      attempts: data.attempts,
      createdAt: data.createdAt,
      isBounce: data.isBounce,
      ...(data.size === undefined ? {} : { size: data.size }),
      ...(data.eightBit === undefined ? {} : { eightBit: data.eightBit }),
      ...(data.delayNotified === undefined ? {} : { delayNotified: data.delayNotified }),
      ...(gate.nextHop === undefined ? {} : { nextHop: gate.nextHop }),
    };
    const store: AttemptStore = {
      openMessage: () => engine.open(),
      readHeaders: async () => headerBlockOf(await engine.head()),
      enqueue: (message) => this.enqueue(message),
    };

    let next: { data: JobData; at: number; event: TimelineEvent | undefined };
    // Writes that record the attempt wait out a Redis that refuses writes for as long as the lock
    // on the job lasts (its renewals fail meanwhile too).
    let until = 0;
    const record = <T>(write: () => Promise<T>): Promise<T> => this.#whileRefused(write, until);
    let parkAt: number | undefined;
    try {
      const outcome = await runDeliveryAttempt(deliveryJob, deliver, store, settings);
      // Before the attempt is recorded, so a finished message's timeline expires with them.
      const shaping = shapingEvents(deliveryJob, outcome.report, settings.now());
      if (shaping.length > 0) {
        await this.#ops
          .appendTimeline(data.queueId, shaping)
          .catch((error: unknown) =>
            this.#log.warn({ err: error, jobId: id }, 'could not record shaping events'),
          );
      }
      if (outcome.waiting !== undefined) {
        // Not an attempt: back to the delayed set as it was, at its slot of the limit's pace.
        const now = settings.now();
        this.#pacer.refused(data.domain, outcome.waiting, now);
        parkAt = this.#pacer.reserve(data.domain, now) ?? now;
        throw new LimitWait();
      }
      const event = attemptEvent(deliveryJob, outcome, settings.now());
      until = Date.now() + this.#lockMs / 2;
      if (outcome.next === undefined) {
        await record(() =>
          engine.finish({
            event: JSON.stringify(event),
            only: data.jobs === 1,
            // Only a job deferred before was added to the retried set (its data says so first).
            retried: data.attempts > 0 || data.nextAttemptAt !== undefined,
            messageId: gate.messageId,
          }),
        );
        return { delivered: outcome.decision.delivered.length, failed: outcome.decision.failed.length };
      }
      const at = outcome.next.at.getTime();
      next = {
        at,
        event,
        data: {
          ...data,
          recipients: [...outcome.next.recipients],
          attempts: outcome.next.attempts,
          delayNotified: outcome.next.delayNotified,
          nextAttemptAt: at,
        },
      };
    } catch (error) {
      if (parkAt !== undefined) {
        await engine.park(parkAt);
        return LATER;
      }
      // Not a delivery result but a fault of ours: defer the whole job on the schedule.
      const at = settings.now() + settings.schedule.delayAfter(data.attempts + 1);
      this.#log.error({ err: error, jobId: id }, 'delivery step failed; deferring the job');
      next = { at, event: undefined, data: { ...data, attempts: data.attempts + 1, nextAttemptAt: at } };
      until = Date.now() + this.#lockMs / 2;
    }
    const { data: nextData, at, event } = next;
    await engine.defer(nextData, at, event === undefined ? '' : JSON.stringify(event), record);
    return LATER;
  }

  /**
   * Runs a write again and again while Redis refuses writes (disk full, out of memory), until
   * `until`: the attempt is then recorded as soon as Redis takes writes again, instead of through
   * BullMQ's last-resort retry a minute later. Past `until`, or for any other error, the error goes
   * on and the job runs again once its lock expires (at-least-once).
   */
  async #whileRefused<T>(write: () => Promise<T>, until: number): Promise<T> {
    for (let wait = 100; ; wait = Math.min(wait * 2, this.#probeMs)) {
      try {
        return await write();
      } catch (error) {
        if (!refusesWrites(error) || Date.now() + wait > until) throw error;
        this.#health.failed(error);
        await sleep(wait);
      }
    }
  }

  async readMessage(queueId: string): Promise<Buffer | null> {
    const keys = redisKeys(this.keyBase, queueId);
    // Inline in the hash (Tern's engine, most mail), or in a key of its own.
    const [inline, own] = await Promise.all([
      this.#client.hgetBuffer(keys.meta, 'body'),
      this.#client.getBuffer(keys.body),
    ]);
    return inline ?? own;
  }

  async openMessage(queueId: string): Promise<Readable | null> {
    const keys = redisKeys(this.keyBase, queueId);
    const [inline, own] = await Promise.all([
      this.#client.hgetBuffer(keys.meta, 'body'),
      this.#client.exists(keys.body),
    ]);
    if (inline !== null) return memoryStream([inline]);
    return own === 1 ? bodyStream(this.#client, keys.body) : null;
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

  hold(queueId: string): Promise<number> {
    return this.#ops.hold(queueId);
  }

  release(queueId: string): Promise<number> {
    return this.#ops.release(queueId);
  }

  retryNow(queueId: string): Promise<number> {
    return this.#ops.retryNow(queueId);
  }

  remove(queueId: string): Promise<boolean> {
    return this.#ops.remove(queueId);
  }

  bounceNow(queueId: string, options: BounceNowOptions): Promise<BounceNowResult> {
    return this.#ops.bounceNow(queueId, options);
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

  /** One PING's round trip in milliseconds (for the metrics endpoint). */
  async ping(): Promise<number> {
    const started = performance.now();
    await this.#client.ping();
    return performance.now() - started;
  }

  async close(): Promise<void> {
    this.#closing = true;
    this.#health.close();
    clearInterval(this.#drainCheck);
    clearInterval(this.#bullWatch);
    clearInterval(this.#destinationsTimer);
    this.#subscriber?.disconnect();
    await this.#engineLoop?.close();
    await this.#worker?.close();
    await this.#queue.close();
    await Promise.all([quit(this.#client), this.#workerClient ? quit(this.#workerClient) : undefined]);
  }
}

/** Creates a RedisQueue and waits until Redis answers (rejects after the enqueue timeout). */
export async function openRedisQueue(options: RedisQueueOptions = {}): Promise<RedisQueue> {
  const queue = new RedisQueue(options);
  try {
    await queue.ready();
  } catch (error) {
    await queue.close().catch(() => {});
    throw error;
  }
  return queue;
}

/** The message hash's fields and values, both engines'. */
function messageHash(message: IncomingMessage, jobs: readonly DeliveryJob[]): Record<string, string> {
  const only = jobs.length === 1 ? jobs[0] : undefined;
  return {
    envelope: JSON.stringify(message.envelope),
    createdAt: String(message.receivedAt),
    size: String(message.content.size),
    ...(message.eightBit === undefined ? {} : { eightBit: message.eightBit ? '1' : '0' }),
    isBounce: message.isBounce ? '1' : '0',
    ...(message.messageId === undefined ? {} : { messageId: message.messageId }),
    ...(message.source === undefined ? {} : { source: JSON.stringify(message.source) }),
    // Quarantined by a queue hook: held from the start, as an operator's hold would.
    ...(message.hold === undefined ? {} : { held: '1', holdReason: message.hold }),
    // One job (most mail): its id here; this version's workers never read or empty its job set.
    ...(only === undefined ? {} : { job: only.id }),
  };
}

function toJobData(job: DeliveryJob, jobs: number): JobData {
  return {
    queueId: job.queueId,
    domain: job.domain,
    jobs,
    envelope: job.envelope,
    recipients: [...job.recipients],
    attempts: job.attempts,
    createdAt: job.createdAt,
    isBounce: job.isBounce,
    ...(job.size === undefined ? {} : { size: job.size }),
    ...(job.eightBit === undefined ? {} : { eightBit: job.eightBit }),
  };
}

/** Redis answered but refuses writes: out of memory, a failed save, a replica. */
function refusesWrites(error: unknown): boolean {
  return /^(OOM|MISCONF|READONLY|NOREPLICAS)\b/.test((error as Error)?.message ?? '');
}

/** What an operator should do about a Redis write error, for the log line. */
function redisHint(error: unknown): string | undefined {
  const message = (error as Error)?.message ?? '';
  if (message.includes('OOM'))
    return 'Redis reached maxmemory: raise it or free memory (keep maxmemory-policy noeviction)';
  if (message.includes('MISCONF'))
    return 'Redis cannot save to disk and refuses writes: check its disk and its log';
  if (message.includes('READONLY')) return 'this Redis is a replica: point the queue at the primary';
  return 'check that Redis runs and is reachable';
}

function jobOptions(): JobsOptions {
  return {
    removeOnComplete: true,
    removeOnFail: false,
    // Only reached when the step's own guards fail (Redis errors while persisting a result).
    attempts: LAST_RESORT_ATTEMPTS,
    backoff: { type: 'fixed', delay: LAST_RESORT_BACKOFF_MS },
  };
}

/** Too few replicas confirmed an enqueue in time (the message was withdrawn). */
export class ReplicaAckError extends Error {
  override readonly name = 'ReplicaAckError';
}

async function quit(client: RedisClient): Promise<void> {
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}

/** Sets what each write kept, from the enqueue script's reply (one count per write). */
function keptBy(writes: readonly OutboxWrite[], kept: readonly number[]): void {
  for (const [i, write] of writes.entries()) write.kept = Number(kept[i] ?? 0);
}
