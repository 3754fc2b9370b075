// Operator operations on the Redis backend: summary, listing, details, hold/release, retry now,
// delete, bounce now, reroute and destination suspension. Counts come from the `<prefix>:ops:`
// indexes kept by enqueue and the worker, so a summary costs two round trips whatever the depth.
import type { NextHop } from '@tern/plugin-api';
import type { Queue } from 'bullmq';
import type { ChainableCommander } from 'ioredis';
import type {
  BounceNowOptions,
  BounceNowResult,
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
  queueIdTime,
  sumCounts,
} from '../operations.js';
import {
  type OperatorAction,
  type OperatorEvent,
  parseTimelineEvent,
  type TimelineEvent,
} from '../timeline.js';
import { bullActiveKey, bullJobKey, type JobData } from './job-data.js';
import { domainOfJob, type OpsKeys, type OpsRedis, opsKeys, opsMulti } from './ops-keys.js';
import { midQueueId, midRange } from './tern-engine.js';

/** Where the job engine keeps jobs, for operators: BullMQ's, or Tern's own (tern-engine.ts). */
export interface OpsJobStore {
  /** Every job id being delivered now. */
  active(): Promise<string[]>;
  /** Queues a read of a job's data (JSON, or null when finished) on a pipeline. */
  readData(pipeline: ChainableCommander, id: string): void;
  /** Where the job is ('active', 'delayed', 'waiting', 'completed'...) and its data. */
  state(id: string): Promise<{ state: string; data: JobData | undefined }>;
  /** Moves a delayed job to its own due time (or now, with `now`). True when it is now due. */
  reschedule(id: string, now: boolean): Promise<boolean>;
  /** Forgets a job that is not running. */
  remove(id: string): Promise<void>;
}

/** The BullMQ engine's jobs. */
export class BullJobs implements OpsJobStore {
  constructor(
    private readonly client: OpsRedis,
    private readonly queue: Queue,
    private readonly prefix: string,
    private readonly queueName: string,
  ) {}

  active(): Promise<string[]> {
    return this.client.lrange(bullActiveKey(this.prefix, this.queueName), 0, -1);
  }

  readData(pipeline: ChainableCommander, id: string): void {
    pipeline.hget(bullJobKey(this.prefix, this.queueName, id), 'data');
  }

  async state(id: string): Promise<{ state: string; data: JobData | undefined }> {
    const job = await this.queue.getJob(id);
    return job
      ? { state: await job.getState(), data: job.data as JobData }
      : { state: 'completed', data: undefined };
  }

  async reschedule(id: string, now: boolean): Promise<boolean> {
    const job = await this.queue.getJob(id);
    if (!job || (await job.getState()) !== 'delayed') return false;
    const due = now ? 0 : ((job.data as JobData).nextAttemptAt ?? 0);
    try {
      if (due <= Date.now()) {
        await job.promote();
        return true;
      }
      await job.changeDelay(due - Date.now());
    } catch {
      // It moved on its own meanwhile (became due, or a worker took it): nothing to do.
    }
    return false;
  }

  async remove(id: string): Promise<void> {
    const job = await this.queue.getJob(id);
    await job?.remove().catch(() => {});
  }
}

export interface RedisOperationsDeps {
  /** The queue's command connection (fail-fast), with the ops scripts defined. */
  readonly client: OpsRedis;
  /** Where the engine keeps jobs. */
  readonly jobs: OpsJobStore;
  readonly prefix: string;
  /** How long a finished message's timeline is kept (seconds). */
  readonly retentionSeconds: number;
  readonly messageKeys: (queueId: string) => { meta: string; body: string; jobs: string };
  /**
   * Whether enqueue writes `ops:jobs` (the BullMQ engine): the unfiltered listing reads it. Tern's
   * engine writes no index of every job (two commands per message): the listing merges the
   * per-domain indexes instead.
   */
  readonly allJobsIndex: boolean;
  /** The queue's own enqueue (operator bounces go out through it). */
  readonly enqueue: (message: IncomingMessage) => Promise<string>;
}

/** Ids read from the index per round trip while listing. */
const LIST_BATCH = 200;
/** A filtered list stops after reading this many jobs and hands back a cursor, so one call stays short. */
const LIST_SCAN_BUDGET = 5000;
/** Jobs rescheduled at once by release and resume. */
const RESCHEDULE_CONCURRENCY = 20;

export class RedisOperations {
  readonly keys: OpsKeys;
  readonly #d: RedisOperationsDeps;

  constructor(deps: RedisOperationsDeps) {
    this.#d = deps;
    this.keys = opsKeys(deps.prefix);
  }

  get #client(): OpsRedis {
    return this.#d.client;
  }

  async summary(): Promise<QueueSummary> {
    const now = Date.now();
    const k = this.keys;
    const first = await this.#client
      .pipeline()
      .smembers(k.domains)
      .hgetall(k.suspended)
      .hgetall(k.routes)
      .smembers(k.held)
      .exec();
    const active = await this.#d.jobs.active();
    const [domains, suspended, routes, heldIds] =
      results<[string[], Record<string, string>, Record<string, string>, string[]]>(first);
    const liveSuspensions = Object.entries(suspended).filter(([, until]) => Number(until) > now);
    const names = [
      ...new Set([...domains, ...liveSuspensions.map(([d]) => d), ...Object.keys(routes)]),
    ].sort();

    const second = this.#client.pipeline();
    for (const domain of names) {
      second.zcard(k.domain(domain)).scard(k.retried(domain)).zrange(k.domain(domain), 0, 0);
    }
    // The worker leaves a finished job in the held set (held while its attempt ran; one command
    // less per job): only the ids still queued count, and the others are forgotten below.
    for (const id of heldIds) second.zscore(k.domain(domainOfJob(id)), id);
    const counts = results<(number | string[] | string | null)[]>(await second.exec());
    const queued = counts.slice(names.length * 3);
    const held = heldIds.filter((_, i) => queued[i] !== null);
    const finished = heldIds.filter((_, i) => queued[i] === null);
    const activeIds = new Set(active);
    const activeBy = countBy(active, domainOfJob);
    const heldBy = countBy(
      held.filter((id) => !activeIds.has(id)),
      domainOfJob,
    );
    const destinations: DestinationSummary[] = names.map((domain, i) => {
      const total = counts[i * 3] as number;
      const oldest = (counts[i * 3 + 2] as string[])[0];
      const activeCount = Math.min(activeBy.get(domain) ?? 0, total);
      const heldCount = Math.min(heldBy.get(domain) ?? 0, total - activeCount);
      const until = Number(suspended[domain]);
      const route = routes[domain];
      const oldestCreatedAt = oldest === undefined ? undefined : queueIdTime(oldest.split('@')[0] ?? '');
      return {
        domain,
        total,
        scheduled: total - activeCount - heldCount,
        active: activeCount,
        held: heldCount,
        deferred: Math.min(counts[i * 3 + 1] as number, total),
        ...(oldestCreatedAt === undefined ? {} : { oldestCreatedAt }),
        ...(until > now ? { suspendedUntil: until } : {}),
        ...(route === undefined ? {} : { nextHop: JSON.parse(route) as NextHop }),
      };
    });
    // The worker leaves a domain in the domains set when its last job finishes (one command less
    // per job); the summary forgets it here, by a script that checks again, so an enqueue between
    // the two keeps it.
    const listed = new Set(domains);
    const empty = destinations.filter((d) => d.total === 0 && listed.has(d.domain));
    if (empty.length > 0 || finished.length > 0) {
      const prune = opsMulti(this.#client);
      for (const { domain } of empty) prune.ternPruneDomain(k.domains, k.domain(domain), domain);
      // A job id never comes back once finished, so its removal cannot race a new hold.
      if (finished.length > 0) prune.srem(k.held, ...finished);
      // Housekeeping only: a Redis refusing writes must not fail a read.
      await exec(prune).catch(() => {});
    }
    const shown = destinations.filter(
      (d) => d.total > 0 || d.suspendedUntil !== undefined || d.nextHop !== undefined,
    );
    shown.sort((a, b) => b.total - a.total || a.domain.localeCompare(b.domain));
    return { at: now, totals: sumCounts(shown), destinations: shown };
  }

  async listJobs(filter: QueueFilter = {}): Promise<QueuePage> {
    checkFilter(filter);
    const limit = listLimit(filter);
    const domain = filter.domain?.toLowerCase();
    const active = new Set(await this.#d.jobs.active());
    const jobs: QueuedJob[] = [];
    let start = filter.cursor === undefined ? '-' : `(${filter.cursor}`;
    let scanned = 0;
    for (;;) {
      const ids = await this.#nextIds(domain, start, LIST_BATCH);
      const loaded = await this.#load(ids, active);
      for (const [i, job] of loaded.entries()) {
        if (job === undefined || !matchesFilter(job, filter)) continue;
        jobs.push(job);
        if (jobs.length === limit) {
          const more = i < ids.length - 1 || ids.length === LIST_BATCH;
          return more ? { jobs, cursor: job.jobId } : { jobs };
        }
      }
      scanned += ids.length;
      const last = ids.at(-1);
      if (ids.length < LIST_BATCH || last === undefined) return { jobs };
      if (scanned >= LIST_SCAN_BUDGET) return { jobs, cursor: last };
      start = `(${last}`;
    }
  }

  /** The next `count` unfinished job ids after `start` (a ZRANGEBYLEX bound), in arrival order. */
  async #nextIds(domain: string | undefined, start: string, count: number): Promise<string[]> {
    if (domain !== undefined || this.#d.allJobsIndex) {
      const index = domain === undefined ? this.keys.jobs : this.keys.domain(domain);
      return this.#client.zrangebylex(index, start, '+', 'LIMIT', 0, count);
    }
    // Each domain's first `count` after `start`, merged: the first `count` of those are the queue's.
    const domains = await this.#client.smembers(this.keys.domains);
    if (domains.length === 0) return [];
    const pipeline = this.#client.pipeline();
    for (const d of domains) pipeline.zrangebylex(this.keys.domain(d), start, '+', 'LIMIT', 0, count);
    return results<string[][]>(await pipeline.exec())
      .flat()
      .sort()
      .slice(0, count);
  }

  /** Job data and message metadata for a page of job ids (one round trip); finished ones come back undefined. */
  async #load(ids: readonly string[], active: ReadonlySet<string>): Promise<(QueuedJob | undefined)[]> {
    if (ids.length === 0) return [];
    const queueIds = [...new Set(ids.map((id) => id.slice(0, id.indexOf('@'))))];
    const pipeline = this.#client.pipeline();
    for (const id of ids) this.#d.jobs.readData(pipeline, id);
    for (const q of queueIds) {
      pipeline.hmget(this.#d.messageKeys(q).meta, 'messageId', 'size', 'held', 'holdReason');
    }
    const values = results<unknown[]>(await pipeline.exec());
    const metas = new Map(queueIds.map((q, i) => [q, values[ids.length + i] as (string | null)[]] as const));
    return ids.map((id, i) => {
      const raw = values[i] as string | null;
      const meta = metas.get(id.slice(0, id.indexOf('@')));
      if (raw === null || meta === undefined || meta[1] === null) return undefined;
      const data = JSON.parse(raw) as JobData;
      const [messageId, size, held, holdReason] = meta;
      return {
        queueId: data.queueId,
        jobId: id,
        domain: data.domain,
        state: active.has(id) ? 'active' : held === '1' ? 'held' : 'scheduled',
        attempts: data.attempts,
        ...(data.nextAttemptAt === undefined ? {} : { nextAttemptAt: data.nextAttemptAt }),
        mailFrom: data.envelope.mailFrom,
        recipients: data.recipients,
        createdAt: data.createdAt,
        ...(messageId === null || messageId === undefined ? {} : { messageId }),
        size: Number(size),
        ...(holdReason === null || holdReason === undefined ? {} : { holdReason }),
      };
    });
  }

  async details(queueId: string): Promise<MessageDetails | null> {
    const keys = this.#d.messageKeys(queueId);
    const reply = await this.#client
      .pipeline()
      .hgetallBuffer(keys.meta)
      .smembers(keys.jobs)
      .lrange(this.keys.timeline(queueId), 0, -1)
      .get(this.keys.timelineDone(queueId))
      .getrangeBuffer(keys.body, 0, HEADER_READ_LIMIT - 1)
      .exec();
    const [raw, ids, list, done, prefix] =
      results<[Record<string, Buffer>, string[], string[], string | null, Buffer]>(reply);
    const { fields: meta, body } = messageFields(raw);
    const timeline = timelineEvents(list, meta.tl ?? done);
    if (meta.envelope === undefined) {
      if (timeline.length === 0) return null;
      return finishedDetails(queueId, timeline);
    }
    const held = meta.held === '1';
    const jobs = await Promise.all(
      unfinishedJobs(ids, meta.job).map(async (id) => {
        const domain = domainOfJob(id);
        const route = meta[`route:${domain}`];
        const { state, data } = await this.#d.jobs.state(id);
        return {
          id,
          domain,
          state: jobState(state, held),
          attempts: data?.attempts ?? 0,
          ...(data?.nextAttemptAt === undefined ? {} : { nextAttemptAt: data.nextAttemptAt }),
          recipients: data?.recipients ?? [],
          ...(route === undefined ? {} : { nextHop: JSON.parse(route) as NextHop }),
        };
      }),
    );
    return {
      queueId,
      state: 'queued',
      envelope: JSON.parse(meta.envelope),
      createdAt: Number(meta.createdAt),
      size: Number(meta.size),
      ...(meta.messageId === undefined ? {} : { messageId: meta.messageId }),
      ...(meta.source === undefined ? {} : { source: JSON.parse(meta.source) }),
      isBounce: meta.isBounce === '1',
      headers: headerPairs(headerBlockOf(body?.subarray(0, HEADER_READ_LIMIT) ?? prefix)),
      held,
      ...(held && meta.holdReason !== undefined ? { holdReason: meta.holdReason } : {}),
      jobs,
      timeline,
    };
  }

  async findByMessageId(messageId: string): Promise<string[]> {
    const id = normalizeMessageId(messageId);
    if (id === '') return [];
    // A set per Message-ID (the BullMQ engine's, expiring with the timeline) and entries of the
    // `mids` index (Tern's engine's, swept some time after the timeline expired).
    const [members, entries] = await Promise.all([
      this.#client.smembers(this.keys.messageId(id)),
      this.#client.zrangebylex(this.keys.mids, ...midRange(id)),
    ]);
    const swept = entries.map((e) => midQueueId(e, id)).filter((q): q is string => q !== undefined);
    // Entries older than the retention may outlive their message and timeline until the sweep.
    const horizon = Date.now() - this.#d.retentionSeconds * 1000;
    const old = swept.filter((q) => (queueIdTime(q) ?? 0) < horizon);
    const gone = new Set<string>();
    if (old.length > 0) {
      const pipeline = this.#client.pipeline();
      for (const q of old) {
        pipeline.exists(this.#d.messageKeys(q).meta, this.keys.timelineDone(q), this.keys.timeline(q));
      }
      const found = results<number[]>(await pipeline.exec());
      old.forEach((q, i) => {
        if (found[i] === 0) gone.add(q);
      });
    }
    return [...new Set([...members, ...swept.filter((q) => !gone.has(q))])].sort();
  }

  async appendTimeline(queueId: string, events: readonly TimelineEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.#client.ternAppendTimeline(
      ...this.#timelineKeys(queueId),
      ...events.map((e) => JSON.stringify(e)),
    );
  }

  /** A message's timeline keys, for the scripts: the list, the message hash (`tl`), the string. */
  #timelineKeys(queueId: string): [string, string, string] {
    return [this.keys.timeline(queueId), this.#d.messageKeys(queueId).meta, this.keys.timelineDone(queueId)];
  }

  async hold(queueId: string): Promise<number> {
    const ids = await this.#jobIds(queueId);
    if (ids === undefined) return 0;
    await this.#setHeld(queueId, ids, operatorEvent('hold'));
    return ids.length;
  }

  async #setHeld(queueId: string, ids: readonly string[], event?: OperatorEvent): Promise<void> {
    const multi = opsMulti(this.#client);
    multi.ternHoldMessage(this.#d.messageKeys(queueId).meta, this.keys.held, ...ids);
    if (event) multi.ternAppendTimeline(...this.#timelineKeys(queueId), JSON.stringify(event));
    await exec(multi);
  }

  async release(queueId: string): Promise<number> {
    const ids = await this.#jobIds(queueId);
    if (ids === undefined) return 0;
    const multi = opsMulti(this.#client);
    multi.hdel(this.#d.messageKeys(queueId).meta, 'held', 'holdReason');
    multi.ternAppendTimeline(...this.#timelineKeys(queueId), JSON.stringify(operatorEvent('release')));
    if (ids.length > 0) multi.srem(this.keys.held, ...ids);
    await exec(multi);
    // Parked jobs wait far ahead: bring each back to its own schedule (due now if that has passed).
    await forEach(ids, (id) => this.#reschedule(id, false));
    return ids.length;
  }

  async retryNow(queueId: string): Promise<number> {
    const keys = this.#d.messageKeys(queueId);
    const [[held, envelope, only], members] = await Promise.all([
      this.#client.hmget(keys.meta, 'held', 'envelope', 'job'),
      this.#client.smembers(keys.jobs),
    ]);
    if (envelope === null || held === '1') return 0;
    const ids = unfinishedJobs(members, only);
    let promoted = 0;
    await forEach(ids, async (id) => {
      if (await this.#reschedule(id, true)) promoted++;
    });
    await this.appendTimeline(queueId, [
      operatorEvent('retry', { detail: `${promoted} job(s) made due now` }),
    ]);
    return promoted;
  }

  #reschedule(id: string, now: boolean): Promise<boolean> {
    return this.#d.jobs.reschedule(id, now);
  }

  async remove(queueId: string, event: OperatorEvent = operatorEvent('delete')): Promise<boolean> {
    const keys = this.#d.messageKeys(queueId);
    const [[envelope, messageId, only], members] = await Promise.all([
      this.#client.hmget(keys.meta, 'envelope', 'messageId', 'job'),
      this.#client.smembers(keys.jobs),
    ]);
    if (envelope === null || envelope === undefined) return false;
    const ids = unfinishedJobs(members, only);
    const k = this.keys;
    const retention = this.#d.retentionSeconds;
    const multi = opsMulti(this.#client);
    // The timeline first: a live one is in the message hash.
    multi.ternCloseTimeline(...this.#timelineKeys(queueId), JSON.stringify(event), retention);
    multi.del(keys.jobs, keys.meta, keys.body);
    if (ids.length > 0) multi.zrem(k.jobs, ...ids).srem(k.held, ...ids);
    for (const id of ids) {
      const domain = domainOfJob(id);
      multi.zrem(k.domain(domain), id).srem(k.retried(domain), id);
      multi.ternPruneDomain(k.domains, k.domain(domain), domain);
    }
    if (messageId !== null && messageId !== undefined) {
      multi.expire(k.messageId(normalizeMessageId(messageId)), retention);
    }
    await exec(multi);
    // Jobs not running are removed from the engine now; a running one finishes its attempt and
    // its next run finds the message gone and drops itself (as after any withdrawal).
    await forEach(ids, (id) => this.#d.jobs.remove(id));
    return true;
  }

  async bounceNow(queueId: string, options: BounceNowOptions): Promise<BounceNowResult> {
    const ids = await this.#jobIds(queueId);
    if (ids === undefined) return { ok: false, reason: 'unknown' };
    // Held first, so no attempt starts while we look; one already running cannot be recalled.
    await this.#setHeld(queueId, ids);
    const jobs = await Promise.all(ids.map((id) => this.#d.jobs.state(id)));
    if (jobs.some((j) => j.state === 'active')) {
      await this.appendTimeline(queueId, [
        operatorEvent('hold', { detail: 'held for a bounce: an attempt was in flight' }),
      ]);
      return { ok: false, reason: 'active' };
    }
    const keys = this.#d.messageKeys(queueId);
    const [raw, prefix] = await Promise.all([
      this.#client.hgetallBuffer(keys.meta),
      this.#client.getrangeBuffer(keys.body, 0, HEADER_READ_LIMIT - 1),
    ]);
    const { fields: meta, body } = messageFields(raw);
    if (meta.envelope === undefined) return { ok: false, reason: 'unknown' };
    const pending: RecipientState[] = jobs.flatMap(
      (j) => j.data?.recipients.filter((r) => r.status === 'pending') ?? [],
    );
    const notice = operatorBounce(
      {
        queueId,
        envelope: JSON.parse(meta.envelope),
        createdAt: Number(meta.createdAt),
        isBounce: meta.isBounce === '1',
        headers: headerBlockOf(body?.subarray(0, HEADER_READ_LIMIT) ?? prefix),
      },
      pending,
      options,
    );
    const noticeId = notice === undefined ? undefined : await this.#d.enqueue(notice);
    await this.remove(
      queueId,
      operatorEvent('bounce', {
        ...(options.reason === undefined ? {} : { detail: options.reason }),
        ...(noticeId === undefined ? {} : { notice: noticeId }),
      }),
    );
    return { ok: true, recipients: pending.length, ...(noticeId === undefined ? {} : { notice: noticeId }) };
  }

  async reroute(queueId: string, hop: NextHop | null, domain?: string): Promise<number> {
    const ids = await this.#jobIds(queueId);
    if (ids === undefined) return 0;
    const wanted = domain?.toLowerCase();
    const domains = [...new Set(ids.map(domainOfJob))].filter((d) => wanted === undefined || d === wanted);
    if (domains.length === 0) return 0;
    const meta = this.#d.messageKeys(queueId).meta;
    const multi = opsMulti(this.#client);
    for (const d of domains) {
      if (hop === null) multi.hdel(meta, `route:${d}`);
      else multi.hset(meta, `route:${d}`, JSON.stringify(hop));
    }
    multi.ternAppendTimeline(
      ...this.#timelineKeys(queueId),
      JSON.stringify(
        operatorEvent('reroute', {
          ...(wanted === undefined ? {} : { domain: wanted }),
          detail: hop === null ? 'reroute cleared' : describeHop(hop),
        }),
      ),
    );
    await exec(multi);
    return domains.length;
  }

  async rerouteDestination(domain: string, hop: NextHop | null): Promise<void> {
    const d = domain.toLowerCase();
    if (hop === null) await this.#client.hdel(this.keys.routes, d);
    else await this.#client.hset(this.keys.routes, d, JSON.stringify(hop));
    await this.#changed();
  }

  /** Tells every node that suspensions or routes changed (Tern's engine keeps them in memory). */
  async #changed(): Promise<void> {
    await this.#client.publish(this.keys.changed, '1');
  }

  async suspend(domain: string, until: number): Promise<void> {
    if (!Number.isFinite(until) || until <= Date.now()) {
      throw new OperationInputError('until: a suspension must end in the future');
    }
    await this.#client.hset(this.keys.suspended, domain.toLowerCase(), String(Math.round(until)));
    await this.#changed();
  }

  async resume(domain: string): Promise<number> {
    const d = domain.toLowerCase();
    await this.#client.hdel(this.keys.suspended, d);
    await this.#changed();
    const [ids, held] = await Promise.all([
      this.#client.zrange(this.keys.domain(d), 0, -1),
      this.#client.smembers(this.keys.held),
    ]);
    const heldIds = new Set(held);
    let due = 0;
    await forEach(
      ids.filter((id) => !heldIds.has(id)),
      async (id) => {
        if (await this.#reschedule(id, false)) due++;
      },
    );
    return due;
  }

  /** A message's job ids, or undefined when the message is unknown (or finished). */
  async #jobIds(queueId: string): Promise<string[] | undefined> {
    const keys = this.#d.messageKeys(queueId);
    const [[createdAt, only], members] = await Promise.all([
      this.#client.hmget(keys.meta, 'createdAt', 'job'),
      this.#client.smembers(keys.jobs),
    ]);
    return createdAt === null ? undefined : unfinishedJobs(members, only);
  }
}

/** `ops:suspended` and `ops:routes` as a node last read them (domain -> value). */
export interface DestinationCache {
  readonly suspended: ReadonlyMap<string, string>;
  readonly routes: ReadonlyMap<string, string>;
}

/** Reads both hashes for a {@link DestinationCache}. */
export async function readDestinations(client: OpsRedis, keys: OpsKeys): Promise<DestinationCache> {
  const [suspended, routes] = await Promise.all([
    client.hgetall(keys.suspended),
    client.hgetall(keys.routes),
  ]);
  return { suspended: new Map(Object.entries(suspended)), routes: new Map(Object.entries(routes)) };
}

/** What the worker checks before an attempt, in one round trip with its own membership check. */
export interface JobGate {
  readonly wanted: boolean;
  readonly held: boolean;
  readonly suspendedUntil: number | undefined;
  readonly nextHop: NextHop | undefined;
  readonly messageId: string | undefined;
  /** The job's data (JSON), when asked for (Tern's engine). */
  readonly data?: string | undefined;
  /** The message's bytes, when asked for and inline in the hash (Tern's engine). */
  readonly body?: Buffer | undefined;
}

/** Reads what decides whether (and where) a job may run now. */
export async function readJobGate(
  client: OpsRedis,
  keys: OpsKeys,
  message: { meta: string; jobs: string },
  jobId: string,
  domain: string,
  /** The message has this job only: it is wanted while the message exists (no job-set read). */
  single = false,
  /** Tern's engine: the message hash field with the job's data, read in the same HMGET. */
  dataField?: string,
  /** Suspensions and routes kept in memory (Tern's engine): the two hashes are not read. */
  destinations?: DestinationCache,
  /** Tern's engine: the body too, when it is inline in the hash (read as bytes, in the same HMGET). */
  withBody = false,
): Promise<JobGate> {
  // Sent back to back (one round trip), without an ioredis Pipeline: building one copies every
  // script of the connection (BullMQ's dozens), per job.
  const fields = ['held', 'messageId', `route:${domain}`, 'createdAt'];
  if (dataField !== undefined) fields.push(dataField);
  let body: Buffer | undefined;
  const read = withBody
    ? client.hmgetBuffer(message.meta, ...fields, 'body').then((values) => {
        body = values.pop() ?? undefined;
        return values.map((v) => (v === null ? null : v.toString()));
      })
    : client.hmget(message.meta, ...fields);
  const [member, [held, messageId, jobRoute, createdAt, data], suspended, domainRoute] = await Promise.all([
    single ? 1 : client.sismember(message.jobs, jobId),
    read,
    destinations ? (destinations.suspended.get(domain) ?? null) : client.hget(keys.suspended, domain),
    destinations ? (destinations.routes.get(domain) ?? null) : client.hget(keys.routes, domain),
  ]);
  const until = suspended === null ? undefined : Number(suspended);
  const route = jobRoute ?? domainRoute;
  return {
    // Finishing the last job and withdrawing the message delete its hash with its job set.
    wanted: member === 1 && createdAt !== null && (dataField === undefined || data !== null),
    held: held === '1',
    suspendedUntil: until !== undefined && until > Date.now() ? until : undefined,
    nextHop: route === null || route === undefined ? undefined : (JSON.parse(route) as NextHop),
    messageId: messageId ?? undefined,
    data: data ?? undefined,
    body,
  };
}

/**
 * A message's unfinished job ids, sorted: its job set, or for a message planned with one job
 * the `job` field of its hash (enqueue writes no set for it: the message's presence is the job's).
 */
export function unfinishedJobs(members: readonly string[], only: string | null | undefined): string[] {
  if (members.length > 0) return [...members].sort();
  return only === null || only === undefined ? [] : [only];
}

/** A message hash as read with HGETALL as bytes: its fields as text, and the inline body apart. */
export function messageFields(raw: Record<string, Buffer>): {
  fields: Record<string, string>;
  body: Buffer | undefined;
} {
  const fields: Record<string, string> = {};
  let body: Buffer | undefined;
  for (const [name, value] of Object.entries(raw)) {
    if (name === 'body') body = value;
    else fields[name] = value.toString();
  }
  return { fields, body };
}

/**
 * A timeline as stored: the list (the BullMQ engine's), or else JSON events one a line (Tern's
 * engine: the `tl` field of a live message, the string of a finished one).
 */
export function timelineEvents(list: readonly string[], lines: string | null | undefined): TimelineEvent[] {
  const raw = list.length > 0 ? list : (lines ?? '').split('\n').filter((line) => line !== '');
  return raw.map(parseTimelineEvent).filter((e): e is TimelineEvent => e !== undefined);
}

function operatorEvent(action: OperatorAction, extra: Partial<OperatorEvent> = {}): OperatorEvent {
  return { type: 'operator', at: Date.now(), action, ...extra };
}

function jobState(state: string, held: boolean): MessageDetails['jobs'][number]['state'] {
  if (state === 'active') return 'active';
  if (state === 'completed') return 'done';
  // Only a bug could put a job in "failed" (every throw is retried); show it as held so operators see it.
  if (held || state === 'failed') return 'held';
  return 'scheduled';
}

function countBy<T>(items: readonly T[], key: (item: T) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return counts;
}

/** Unwraps a pipeline's replies, throwing the first error. */
function results<T extends unknown[]>(reply: [Error | null, unknown][] | null): T {
  if (reply === null) throw new Error('redis: pipeline discarded');
  return reply.map(([error, value]) => {
    if (error) throw error;
    return value;
  }) as T;
}

async function exec(multi: { exec(): Promise<[Error | null, unknown][] | null> }): Promise<void> {
  results(await multi.exec());
}

async function forEach<T>(items: readonly T[], run: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(RESCHEDULE_CONCURRENCY, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await run(item);
    }
  });
  await Promise.all(lanes);
}
