// Tern's own job engine on Redis (`queue.redis.engine: 'tern'`): the reliable-queue pattern
// instead of BullMQ. A job is its id in one place: `ready` (due now), `due` (a zset scored by due
// time: deferred, parked for a limit, a hold or a suspension) or `run:<node>` (being delivered by
// that node). Its data is a field of the message hash (`j:<domain>`), written by the enqueue
// MULTI. Nodes hold leases in `nodes`; any node puts a dead node's running jobs back in `ready`.
// See the README, "Tern's job engine".
import { randomUUID } from 'node:crypto';
import type { Logger } from '@tern/plugin-api';
import type { RedisClient } from '@tern/redis';
import type { ChainableCommander } from 'ioredis';
import type { JobData } from './job-data.js';
import { domainOfJob } from './ops-keys.js';
import { APPEND_WITH_MESSAGE_LUA } from './webhook-outbox.js';

/** Key names of the engine under the queue's key base (one hash slot on a Cluster). */
export interface EngineKeys {
  /** list: job ids due now (LPUSH in, taken from the right: first in, first out). */
  readonly ready: string;
  /** zset: job id -> due time (ms). */
  readonly due: string;
  /** zset: node id -> lease expiry (ms). */
  readonly nodes: string;
  /** list: the jobs one node is running. */
  run(node: string): string;
}

export function engineKeys(keyBase: string, queueName: string): EngineKeys {
  const base = `${keyBase}:${queueName}:t`;
  return {
    ready: `${base}:ready`,
    due: `${base}:due`,
    nodes: `${base}:nodes`,
    run: (node) => `${base}:run:${node}`,
  };
}

/** The message hash field holding one job's data (JSON). */
export function jobField(jobId: string): string {
  return `j:${domainOfJob(jobId)}`;
}

// A new message, in one script (one EVALSHA instead of MULTI … EXEC): its hash (envelope,
// metadata, each job's data `j:<domain>`, the body when it fits one slice, the `received` event
// and intake's verdicts in `tl`), the operator indexes, the Message-ID entry, and its job ids in
// `ready` (or parked in `due` when held on arrival). A job the enqueuing node has a free slot
// for goes to that node's running list instead (flag '1'): the node runs it from what it holds,
// with no take and no read; it is handed back like any running job (lease expiry, close,
// reclaim). The first write is RENAME or HSET: Redis refuses a script's first write when out of
// memory and never a later one, so it lands whole or not at all.
// Webhook events written with the message (its `queued`) go to the outbox in the same script, so
// no worker can take a job before they are there (see APPEND_WITH_MESSAGE_LUA).
// KEYS: meta, ready, due, ops mids, ops domains, ops held, jobs set, upload, body, the node's
//       running list, then `ops:dom:<domain>` of each job, then the outbox keys (events, seq) of
//       each endpoint written
// ARGV: job count n, park ms ('' unless held), Message-ID member ('' for none), '1' when the body
//       is in the upload key, hand-off flags (one '0' or '1' per job), outbox section length m
//       (0 for none), then n job ids, n domains, the outbox section, the hash's field/value pairs
// Returns the events kept per outbox endpoint.
const ENQUEUE_LUA = `${APPEND_WITH_MESSAGE_LUA}
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[6])
if ARGV[4] == '1' then
  redis.call('RENAME', KEYS[8], KEYS[9])
  redis.call('PERSIST', KEYS[9])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7 + 2 * n + m))
local kept = {}
if m > 0 then kept = appendWithMessage(KEYS[1], 11 + n, 7 + 2 * n) end
local ids = {unpack(ARGV, 7, 6 + n)}
for i = 1, n do redis.call('ZADD', KEYS[10 + i], 0, ids[i]) end
redis.call('SADD', KEYS[5], unpack(ARGV, 7 + n, 6 + 2 * n))
if n > 1 then redis.call('SADD', KEYS[7], unpack(ids)) end
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], 0, ARGV[3]) end
if ARGV[2] ~= '' then
  redis.call('SADD', KEYS[6], unpack(ids))
  local parked = {}
  for i = 1, n do
    parked[2 * i - 1] = ARGV[2]
    parked[2 * i] = ids[i]
  end
  redis.call('ZADD', KEYS[3], unpack(parked))
  return kept
end
local ready, mine = {}, {}
for i = 1, n do
  if string.byte(ARGV[5], i) == 49 then mine[#mine + 1] = ids[i] else ready[#ready + 1] = ids[i] end
end
if #ready > 0 then redis.call('LPUSH', KEYS[2], unpack(ready)) end
if #mine > 0 then redis.call('LPUSH', KEYS[10], unpack(mine)) end
return kept`;

// The job is done: out of its node's running list and the domain index, the attempt added to the
// timeline; with the last job the message goes and its whole timeline is written once, as a
// string with the retention as its TTL (the Message-ID entry needs nothing: the sweep drops it
// once the timeline is gone). A message without `tl` was finished already (a replay), deleted by
// an operator (the attempt goes to its kept timeline), or written by an older layout (a list).
// KEYS: run list, meta, body, jobs set, ops domain, ops retried, timeline (list), timeline (string)
// ARGV: job id, event JSON ('' for none), retention seconds, '1' when the message has no other
//       job, '1' when the job may be in the retried set, job data field
const FINISH_LUA = `
redis.call('LREM', KEYS[1], -1, ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if ARGV[5] == '1' then redis.call('SREM', KEYS[6], ARGV[1]) end
local tl = redis.call('HGET', KEYS[2], 'tl')
local ev = ARGV[2]
if ARGV[4] ~= '1' then
  redis.call('SREM', KEYS[4], ARGV[1])
  if redis.call('SCARD', KEYS[4]) > 0 then
    redis.call('HDEL', KEYS[2], ARGV[6])
    if ev ~= '' then
      if tl then redis.call('HSET', KEYS[2], 'tl', tl .. '\\n' .. ev)
      else redis.call('RPUSHX', KEYS[7], ev) end
    end
    return 0
  end
end
if tl then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  if ev ~= '' then tl = tl .. '\\n' .. ev end
  redis.call('SET', KEYS[8], tl, 'EX', ARGV[3])
  return 1
end
if redis.call('EXISTS', KEYS[8]) == 1 then
  if ev ~= '' then redis.call('APPEND', KEYS[8], '\\n' .. ev) end
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
if ev ~= '' then redis.call('RPUSHX', KEYS[7], ev) end
redis.call('EXPIRE', KEYS[7], ARGV[3])
return 1`;

// The job waits until `at`: out of the running list into `due`, with its new data (a retry) or as
// it is (a park: limit, hold, suspension). A retry marks it retried and adds the attempt to the
// timeline. A job whose message is gone (withdrawn, deleted) is dropped instead. Returns 1 when
// the job is in `due`.
// KEYS: meta, run list, due, ops domain, ops retried, timeline (list: an older layout's)
// ARGV: job id, data field, data JSON ('' for a park), due ms, event JSON ('' for none)
const DEFER_LUA = `
redis.call('LREM', KEYS[2], -1, ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  if redis.call('ZSCORE', KEYS[4], ARGV[1]) then redis.call('SADD', KEYS[5], ARGV[1]) end
end
if ARGV[5] ~= '' then
  local tl = redis.call('HGET', KEYS[1], 'tl')
  if tl then redis.call('HSET', KEYS[1], 'tl', tl .. '\\n' .. ARGV[5])
  else redis.call('RPUSHX', KEYS[6], ARGV[5]) end
end
return 1`;

// One step of the Message-ID index's sweep: the next `batch` entries (`<message-id>\0<queue id>`,
// lexical order) after the cursor; an entry whose message arrived more than the retention ago
// and has neither its hash nor its timeline any more is dropped. A pass starts at most every
// `period` ms (shared by every node through the state hash). Returns 0 when more entries are
// left in this pass, else when the next pass may start.
// KEYS: mids, sweep state   ARGV: now, retention ms, batch, message key prefix, timeline
// (string) key prefix, timeline (list) key prefix, period ms
const MID_SWEEP_LUA = `
local now = tonumber(ARGV[1])
local st = redis.call('HMGET', KEYS[2], 'cursor', 'next')
local cursor = st[1]
if not cursor then
  if st[2] and tonumber(st[2]) > now then return tonumber(st[2]) end
  cursor = '-'
end
local batch = tonumber(ARGV[3])
local members = redis.call('ZRANGEBYLEX', KEYS[1], cursor, '+', 'LIMIT', 0, batch)
local horizon = now - tonumber(ARGV[2])
local drop = {}
for _, m in ipairs(members) do
  local q = string.match(m, '%z([^%z]*)$')
  local t = q and tonumber(string.sub(q, 1, 9), 36)
  if not t or t < horizon then
    if not q or redis.call('EXISTS', ARGV[4] .. q, ARGV[5] .. q, ARGV[6] .. q) == 0 then
      drop[#drop + 1] = m
    end
  end
end
if #drop > 0 then redis.call('ZREM', KEYS[1], unpack(drop)) end
if #members < batch then
  local nxt = now + tonumber(ARGV[7])
  redis.call('HDEL', KEYS[2], 'cursor')
  redis.call('HSET', KEYS[2], 'next', nxt)
  return nxt
end
redis.call('HSET', KEYS[2], 'cursor', '(' .. members[#members])
return 0`;

// Run by every node every stalled interval (and at the earliest due time it knows): moves due
// jobs to `ready`, puts the running jobs of nodes whose lease expired back in `ready` (a node
// killed -9 loses nothing), renews this node's lease. Returns the earliest remaining due time.
// The run lists are named from the nodes found (same prefix, so the same Cluster slot).
// KEYS: due, ready, nodes   ARGV: now, run list prefix, this node, lease expiry ('' for none)
const TICK_LUA = `
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
  redis.call('LPUSH', KEYS[2], unpack(due))
end
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3]) end
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 10)
for _, node in ipairs(dead) do
  while redis.call('RPOPLPUSH', ARGV[2] .. node, KEYS[2]) do end
  redis.call('ZREM', KEYS[3], node)
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #due == 500 then return now end
if next[2] then return next[2] end
return -1`;

// Moves a job waiting in `due` to `at`, or to `ready` when `at` has passed. Returns 1 when the
// job is now ready, 0 when it moved in `due`, -1 when it is not in `due` (running, ready, gone).
// KEYS: due, ready   ARGV: job id, at, now
const RESCHEDULE_LUA = `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -1 end
if tonumber(ARGV[2]) <= tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 0`;

// A node leaving: its running list (jobs whose take reply was lost, or not finished) goes back
// to `ready`, and its lease is dropped.
// KEYS: run list, ready, nodes   ARGV: node
const LEAVE_LUA = `
while redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) do end
redis.call('ZREM', KEYS[3], ARGV[1])
return 0`;

// Takes up to `k` jobs from `ready` into a node's running list in one round trip (BLMOVE takes
// one, and is only for waiting while `ready` is empty). Returns the ids, oldest first.
// KEYS: ready, run list   ARGV: k
const TAKE_LUA = `
local ids = {}
for i = 1, tonumber(ARGV[1]) do
  local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not id then break end
  ids[i] = id
end
return ids`;

// Ids in this node's running list that no slot of the node runs go back to the front of `ready`:
// a take whose reply was lost with the connection (Redis moved the job, the node never heard), or
// a finish the promoted replica never got in a failover. Nothing else gives them back while the
// node's lease lives. Returns how many went back.
// KEYS: run list, ready   ARGV: the ids the node runs
const RECLAIM_LUA = `
local mine = {}
for _, id in ipairs(ARGV) do mine[id] = true end
local back = 0
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if not mine[id] then
    redis.call('LREM', KEYS[1], 0, id)
    redis.call('RPUSH', KEYS[2], id)
    back = back + 1
  end
end
return back`;

export type EngineRedis = RedisClient & {
  ternEngineEnqueue(...keysThenArgs: (string | number | Buffer)[]): Promise<number[]>;
  ternEngineFinish(...keysThenArgs: (string | number)[]): Promise<number>;
  ternEngineDefer(...keysThenArgs: (string | number)[]): Promise<number>;
  ternEngineTick(...keysThenArgs: (string | number)[]): Promise<string | number>;
  ternEngineReschedule(due: string, ready: string, id: string, at: number, now: number): Promise<number>;
  ternEngineLeave(run: string, ready: string, nodes: string, node: string): Promise<number>;
  ternEngineMidSweep(...keysThenArgs: (string | number)[]): Promise<number>;
  ternEngineReclaim(run: string, ready: string, ...running: string[]): Promise<number>;
  ternEngineTake(ready: string, run: string, k: number): Promise<string[]>;
};

export function defineEngineCommands(client: RedisClient): EngineRedis {
  client.defineCommand('ternEngineEnqueue', { lua: ENQUEUE_LUA });
  client.defineCommand('ternEngineFinish', { numberOfKeys: 8, lua: FINISH_LUA });
  client.defineCommand('ternEngineDefer', { numberOfKeys: 6, lua: DEFER_LUA });
  client.defineCommand('ternEngineTick', { numberOfKeys: 3, lua: TICK_LUA });
  client.defineCommand('ternEngineReschedule', { numberOfKeys: 2, lua: RESCHEDULE_LUA });
  client.defineCommand('ternEngineLeave', { numberOfKeys: 3, lua: LEAVE_LUA });
  client.defineCommand('ternEngineMidSweep', { numberOfKeys: 2, lua: MID_SWEEP_LUA });
  client.defineCommand('ternEngineReclaim', { numberOfKeys: 2, lua: RECLAIM_LUA });
  client.defineCommand('ternEngineTake', { numberOfKeys: 2, lua: TAKE_LUA });
  return client as EngineRedis;
}

/** The keys of one message that the enqueue script writes. */
export interface NewMessageKeys {
  readonly meta: string;
  readonly jobs: string;
  readonly upload: string;
  readonly body: string;
}

/** What the enqueue script needs besides the keys. */
export interface NewMessage {
  readonly jobs: readonly { id: string; domain: string }[];
  /** The message hash's fields and values (the body a Buffer, as it came). */
  readonly fields: readonly (string | Buffer)[];
  /** The Message-ID index entry ({@link midMember}), if the message has a Message-ID. */
  readonly mid: string | undefined;
  /** Held on arrival: its jobs start parked. */
  readonly held: boolean;
  /** The ids of jobs to put on `run` (this node's running list, its slots reserved) instead of `ready`. */
  readonly handOff?: { readonly run: string; readonly ids: ReadonlySet<string> } | undefined;
  /** The body is in the upload key (written in slices), to be renamed into place. */
  readonly uploaded: boolean;
  /** Webhook events to write with the message (see `outboxSection`); undefined for none. */
  readonly outbox?:
    | { readonly keys: readonly string[]; readonly args: readonly (string | number)[] }
    | undefined;
}

/**
 * Writes a new message and its jobs in one script call (one command, one round trip). Resolves
 * with the events kept per outbox endpoint (none without `outbox`).
 */
export function enqueueMessage(
  client: EngineRedis,
  keys: EngineKeys,
  ops: { mids: string; domains: string; held: string; domain(domain: string): string },
  message: NewMessageKeys,
  m: NewMessage,
): Promise<number[]> {
  const n = m.jobs.length;
  const outboxKeys = m.outbox?.keys ?? [];
  const args: (string | number | Buffer)[] = [10 + n + outboxKeys.length, message.meta, keys.ready];
  // Without a hand-off, `ready` stands in for the running list (the script then never writes it).
  args.push(keys.due, ops.mids, ops.domains, ops.held, message.jobs, message.upload, message.body);
  args.push(m.handOff?.run ?? keys.ready);
  for (const job of m.jobs) args.push(ops.domain(job.domain));
  args.push(...outboxKeys);
  let flags = '';
  for (const job of m.jobs) flags += m.handOff?.ids.has(job.id) ? '1' : '0';
  // A quarantined message's jobs wait in `due` (far ahead) until released, as a parked hold.
  args.push(n, m.held ? Date.now() + HOLD_PARK_MS : '', m.mid ?? '', m.uploaded ? '1' : '', flags);
  args.push(m.outbox?.args.length ?? 0);
  for (const job of m.jobs) args.push(job.id);
  for (const job of m.jobs) args.push(job.domain);
  if (m.outbox) args.push(...m.outbox.args);
  for (const field of m.fields) args.push(field);
  return client.ternEngineEnqueue(...args);
}

/** An entry of the Message-ID index (`ops:mids`): lexical ranges find a Message-ID's queue ids. */
export function midMember(messageId: string, queueId: string): string {
  return `${messageId}\0${queueId}`;
}

/** The lexical range of {@link midMember} entries of one Message-ID. */
export function midRange(messageId: string): [string, string] {
  return [`[${messageId}\0`, `(${messageId}\x01`];
}

/** The queue id of a {@link midMember} entry of `messageId`, or undefined for another Message-ID's. */
export function midQueueId(member: string, messageId: string): string | undefined {
  const at = member.lastIndexOf('\0');
  return at === messageId.length && member.startsWith(messageId) ? member.slice(at + 1) : undefined;
}

/** A held job that comes due is parked this far ahead; `release` brings it back at once. */
export const HOLD_PARK_MS = 3600_000;

/** Where a job is, for operators. */
export type EngineState = 'active' | 'delayed' | 'waiting' | 'completed';

/** Reads and moves jobs of the engine for operator operations (`RedisOperations`). */
export class EngineJobs {
  constructor(
    private readonly client: EngineRedis,
    private readonly keys: EngineKeys,
    private readonly metaKey: (queueId: string) => string,
  ) {}

  /** Every job id some node is running now. */
  async active(): Promise<string[]> {
    const nodes = await this.client.zrange(this.keys.nodes, 0, -1);
    const lists = await Promise.all(nodes.map((node) => this.client.lrange(this.keys.run(node), 0, -1)));
    return lists.flat();
  }

  /** Queues a read of the job's data (JSON or null) on a pipeline. */
  readData(pipeline: ChainableCommander, id: string): void {
    pipeline.hget(this.metaKey(id.slice(0, id.indexOf('@'))), jobField(id));
  }

  async state(id: string): Promise<{ state: EngineState; data: JobData | undefined }> {
    const [raw, due, ready, active] = await Promise.all([
      this.client.hget(this.metaKey(id.slice(0, id.indexOf('@'))), jobField(id)),
      this.client.zscore(this.keys.due, id),
      this.client.lpos(this.keys.ready, id),
      this.active(),
    ]);
    if (raw === null) return { state: 'completed', data: undefined };
    const data = JSON.parse(raw) as JobData;
    if (due !== null) return { state: 'delayed', data };
    if (ready !== null) return { state: 'waiting', data };
    // Not waiting anywhere: running, or between two places in a script-free step (a take).
    return { state: active.includes(id) ? 'active' : 'waiting', data };
  }

  /** Moves a job waiting in `due` to its own due time (or now, with `now`). True when it is due now. */
  async reschedule(id: string, now: boolean): Promise<boolean> {
    const raw = now ? null : await this.client.hget(this.metaKey(id.slice(0, id.indexOf('@'))), jobField(id));
    const at = now || raw === null ? 0 : ((JSON.parse(raw) as JobData).nextAttemptAt ?? 0);
    return (await this.client.ternEngineReschedule(this.keys.due, this.keys.ready, id, at, Date.now())) === 1;
  }

  /** Forgets a job that is not running (a running one finds its message gone and drops itself). */
  async remove(id: string): Promise<void> {
    await Promise.all([this.client.zrem(this.keys.due, id), this.client.lrem(this.keys.ready, 0, id)]);
  }
}

export interface EngineLoopOptions<T> {
  /** The worker's command connection (scripts defined). */
  readonly client: EngineRedis;
  /** A connection of its own for the blocking take. */
  readonly blocking: RedisClient;
  readonly keys: EngineKeys;
  readonly concurrency: number;
  readonly lockMs: number;
  readonly tickMs: number;
  readonly logger: Logger;
  /**
   * Runs one job in this node's running list; must settle (it finishes or defers it). `handed` is
   * what the enqueue that handed the job over holds (see {@link EngineLoop.reserve}), undefined
   * for a job taken from `ready`.
   */
  readonly run: (id: string, node: string, handed: T | undefined) => Promise<void>;
  /** Whether takes should wait (Redis refuses writes). */
  readonly paused: () => boolean;
  /** Called with errors of the loop (Redis down, refusing writes). */
  readonly onError: (error: unknown) => void;
  /** The Message-ID index and what its sweep needs (see MID_SWEEP_LUA). */
  readonly mids: MidSweep;
}

/** The Message-ID index's keys, and where a queue id's message and timelines are. */
export interface MidSweep {
  readonly mids: string;
  readonly state: string;
  readonly retentionMs: number;
  readonly metaPrefix: string;
  readonly timelinePrefix: string;
  readonly listPrefix: string;
}

/** Entries of the Message-ID index one sweep step reads. */
const MID_SWEEP_BATCH = 1000;
/** A sweep pass over the Message-ID index starts at most this often (a quarter of the retention). */
function midSweepPeriod(retentionMs: number): number {
  return Math.max(1000, Math.floor(retentionMs / 4));
}

/** Seconds a blocking take waits before it looks at the loop's state again. */
const TAKE_BLOCK_SECONDS = 1;

/**
 * The node's side of the engine: one loop takes jobs with BLMOVE (`ready` -> its running list) while
 * slots are free, a timer promotes due jobs, renews the lease and reaps dead nodes.
 */
export class EngineLoop<T> {
  readonly node = randomUUID();
  readonly #o: EngineLoopOptions<T>;
  /** The ids this node's slots run or have reserved for a hand-off (not yet finished or put off). */
  readonly #running = new Set<string>();
  /**
   * This node's lease is in `nodes` (a tick wrote it): only then may an enqueue hand it jobs, or
   * a node killed before its first tick would leave them in a running list no tick reaps.
   */
  #leased = false;
  /** Reservations whose enqueue has not answered yet: close waits for them (see reserve). */
  #handing = 0;
  #handingDone: (() => void) | undefined;
  /** A connection of the loop broke since the last look at the running list (see RECLAIM_LUA). */
  #reconnected = false;
  #stopped = false;
  #slotFreed: (() => void) | undefined;
  #tickTimer: NodeJS.Timeout | undefined;
  #tickAt = Number.POSITIVE_INFINITY;
  /** When this node runs the next step of the Message-ID sweep (the shared state may say later). */
  #sweepAt = 0;
  #loop: Promise<void> | undefined;
  readonly #jobs = new Set<Promise<void>>();

  constructor(options: EngineLoopOptions<T>) {
    this.#o = options;
    const broke = () => {
      this.#reconnected = true;
    };
    options.client.on('close', broke);
    options.blocking.on('close', broke);
  }

  async start(): Promise<void> {
    await this.#tick();
    this.#loop = this.#takeLoop();
  }

  /**
   * An enqueue asks for slots to hand its jobs straight to this node: reserves a slot for as many
   * of `ids` as slots are free and returns those. The enqueue then puts them on this node's
   * running list, and calls {@link handedOff} or {@link handBack}. A take in flight reserves
   * nothing: what it brings beyond the slots then free goes back to `ready` (see #takeLoop).
   */
  reserve(ids: readonly string[]): Set<string> {
    const reserved = new Set<string>();
    if (this.#stopped || !this.#leased || this.#o.paused()) return reserved;
    let free = this.#o.concurrency - this.#running.size;
    for (const id of ids) {
      if (free-- <= 0) break;
      reserved.add(id);
      this.#running.add(id);
    }
    if (reserved.size > 0) this.#handing++;
    return reserved;
  }

  /** The enqueue put the reserved ids on this node's running list: run each in its slot. */
  handedOff(handed: ReadonlyMap<string, T>): void {
    for (const [id, job] of handed) this.#start(id, job);
    this.#handed();
  }

  /**
   * The enqueue failed: the reserved slots are free again, and the ids may or may not be on the
   * running list (a reply lost): the next reclaim puts back in `ready` whatever no slot runs.
   */
  handBack(ids: Iterable<string>): void {
    for (const id of ids) this.#running.delete(id);
    this.#reconnected = true;
    this.#wake();
    this.#handed();
  }

  #handed(): void {
    if (--this.#handing === 0) this.#handingDone?.();
  }

  /** A job of this node will be due at `at`: promote it then (other nodes' ticks may be later). */
  dueAt(at: number): void {
    this.#schedule(at);
  }

  #schedule(at: number): void {
    if (this.#stopped || at >= this.#tickAt) return;
    clearTimeout(this.#tickTimer);
    this.#tickAt = at;
    this.#tickTimer = setTimeout(() => void this.#tick(), Math.max(0, at - Date.now()));
    this.#tickTimer.unref?.();
  }

  async #tick(): Promise<void> {
    clearTimeout(this.#tickTimer);
    this.#tickAt = Number.POSITIVE_INFINITY;
    if (this.#stopped) return;
    const k = this.#o.keys;
    const now = Date.now();
    let next = -1;
    try {
      next = Number(
        await this.#o.client.ternEngineTick(
          k.due,
          k.ready,
          k.nodes,
          now,
          k.run(''),
          this.node,
          now + this.#o.lockMs,
        ),
      );
      this.#leased = true;
    } catch (error) {
      this.#o.onError(error);
    }
    if (now >= this.#sweepAt) await this.#sweep(now);
    const regular = Date.now() + this.#o.tickMs;
    this.#schedule(next >= 0 ? Math.min(next, regular) : regular);
  }

  async #sweep(now: number): Promise<void> {
    const m = this.#o.mids;
    try {
      const next = Number(
        await this.#o.client.ternEngineMidSweep(
          m.mids,
          m.state,
          now,
          m.retentionMs,
          MID_SWEEP_BATCH,
          m.metaPrefix,
          m.timelinePrefix,
          m.listPrefix,
          midSweepPeriod(m.retentionMs),
        ),
      );
      // 0: more entries in this pass, at the next tick.
      this.#sweepAt = next;
    } catch (error) {
      this.#o.onError(error);
      this.#sweepAt = now + this.#o.tickMs * 10;
    }
  }

  async #takeLoop(): Promise<void> {
    const k = this.#o.keys;
    const run = k.run(this.node);
    let backoff = 100;
    // A command of the loop failed: look at the running list again before the next take, later.
    const failed = async (error: unknown): Promise<void> => {
      this.#reconnected = true;
      this.#o.onError(error);
      await new Promise((resolve) => setTimeout(resolve, backoff).unref?.());
      backoff = Math.min(backoff * 2, 2000);
    };
    // `ready` may hold more than one job: take them a slotful per round trip, not one per BLMOVE.
    let more = true;
    while (!this.#stopped) {
      // Here, between two takes, no take of this node is in flight: every id in the running list
      // that #running lacks is lost to this node (or came beyond its free slots).
      if (this.#reconnected && !this.#o.paused()) {
        this.#reconnected = false;
        try {
          const back = await this.#o.client.ternEngineReclaim(run, k.ready, ...this.#running);
          if (back > 0)
            this.#o.logger.info({ jobs: back }, 'jobs of the running list no slot runs are ready again');
        } catch (error) {
          if (this.#stopped) break;
          await failed(error);
          continue;
        }
      }
      if (this.#running.size >= this.#o.concurrency || this.#o.paused()) {
        await new Promise<void>((resolve) => {
          this.#slotFreed = resolve;
          // Paused: look again in a while (a probe makes Redis writable again meanwhile).
          if (this.#o.paused()) setTimeout(resolve, 200).unref?.();
        });
        continue;
      }
      let ids: string[];
      try {
        const free = this.#o.concurrency - this.#running.size;
        ids = more ? await this.#o.client.ternEngineTake(k.ready, run, free) : [];
        more = ids.length === free;
        if (ids.length === 0) {
          const id = await this.#o.blocking.blmove(k.ready, run, 'RIGHT', 'LEFT', TAKE_BLOCK_SECONDS);
          // Others may have come with it.
          more = id !== null;
          if (id !== null) ids = [id];
        }
        backoff = 100;
      } catch (error) {
        if (this.#stopped) break;
        // A broken take may have moved a job.
        await failed(error);
        continue;
      }
      // Hand-offs may have filled slots while the take was in flight: the jobs beyond the slots
      // free now stay out of #running, and the reclaim before the next take puts them back.
      const room = this.#o.concurrency - this.#running.size;
      if (ids.length > room) this.#reconnected = true;
      for (const id of ids.slice(0, Math.max(0, room))) {
        this.#running.add(id);
        this.#start(id, undefined);
      }
    }
  }

  /** Runs a job in the slot it holds in #running; frees the slot when it settles. */
  #start(id: string, handed: T | undefined): void {
    const job = this.#o
      .run(id, this.node, handed)
      .catch((error: unknown) => this.#o.logger.error({ err: error, jobId: id }, 'delivery job failed'))
      .finally(() => {
        this.#running.delete(id);
        this.#jobs.delete(job);
        this.#wake();
      });
    this.#jobs.add(job);
  }

  #wake(): void {
    this.#slotFreed?.();
    this.#slotFreed = undefined;
  }

  /** Stops taking, waits for the jobs in flight, and hands back whatever is left in the running list. */
  async close(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#tickTimer);
    this.#slotFreed?.();
    this.#o.blocking.disconnect();
    // A hand-off still in flight may yet land on the running list: the leave must come after it.
    if (this.#handing > 0)
      await new Promise<void>((resolve) => {
        this.#handingDone = resolve;
      });
    await this.#loop;
    await Promise.all(this.#jobs);
    const k = this.#o.keys;
    await this.#o.client
      .ternEngineLeave(k.run(this.node), k.ready, k.nodes, this.node)
      .catch((error: unknown) => this.#o.logger.warn({ err: error }, 'could not leave the job engine'));
  }
}
