// The Redis keys and Lua scripts behind operator operations and timelines (and the script that
// writes large bodies). Everything lives under `<prefix>:ops:` so message keys
// (`<prefix>:msg:*`) still vanish when a message is finished.
import type { RedisClient } from '@tern/redis';
import type { ChainableCommander } from 'ioredis';

/** Key names under `<prefix>:ops:`; exported for the README and for tests that look inside. */
export interface OpsKeys {
  /** zset (score 0, lexical order = arrival order): every unfinished job id. */
  readonly jobs: string;
  /** set: domains that have unfinished jobs. */
  readonly domains: string;
  /** set: job ids of held messages. */
  readonly held: string;
  /** hash: domain -> suspended until (ms since epoch). */
  readonly suspended: string;
  /** hash: domain -> NextHop JSON (an operator's reroute of a whole destination). */
  readonly routes: string;
  /** pub/sub channel: suspensions or routes changed (nodes on Tern's engine reload them). */
  readonly changed: string;
  /** string with a TTL: rewritten by the health probe to find out whether Redis takes writes again. */
  readonly probe: string;
  /** zset: the unfinished job ids of one domain. */
  domain(domain: string): string;
  /** set: job ids of one domain that failed at least once. */
  retried(domain: string): string;
  /** list: a message's timeline events (JSON), kept for the retention after the message is finished. */
  timeline(queueId: string): string;
  /**
   * string: a finished message's timeline (JSON events, one a line), written whole when the
   * message finishes, with the retention as its TTL (Tern's engine keeps a live message's timeline
   * in its hash, field `tl`).
   */
  timelineDone(queueId: string): string;
  /** set: queue ids of messages with this Message-ID (brackets removed). */
  messageId(messageId: string): string;
  /** zset, score 0: `<message-id>\0<queue id>` of every message Tern's engine enqueued, swept once gone. */
  readonly mids: string;
  /** hash: where the sweep of `mids` is (cursor) and when the next pass starts. */
  readonly midSweep: string;
}

export function opsKeys(prefix: string): OpsKeys {
  const base = `${prefix}:ops`;
  return {
    jobs: `${base}:jobs`,
    domains: `${base}:domains`,
    held: `${base}:held`,
    suspended: `${base}:suspended`,
    routes: `${base}:routes`,
    probe: `${base}:probe`,
    changed: `${base}:changed`,
    domain: (domain) => `${base}:dom:${domain}`,
    retried: (domain) => `${base}:retried:${domain}`,
    timeline: (queueId) => `${base}:timeline:${queueId}`,
    timelineDone: (queueId) => `${base}:tl:${queueId}`,
    mids: `${base}:mids`,
    midSweep: `${base}:mids:sweep`,
    messageId: (messageId) => `${base}:mid:${messageId}`,
  };
}

/** A job id's domain: job ids are `<queueId>@<domain>` and queue ids have no `@`. */
export function domainOfJob(jobId: string): string {
  return jobId.slice(jobId.indexOf('@') + 1);
}

// Removes one finished job from its message and from the operator indexes, appends its last
// attempt to the timeline and, with the last job, deletes the message and starts the timeline's
// retention. Idempotent: a job replayed after a crash finds itself already gone. Every command
// here runs per delivered job (README "Redis commands per message"), so nothing is read that the
// caller knows: a message of one job skips the job set (the job is its last), a job never
// deferred skips the retried set, RPUSHX appends only to a timeline that exists and EXPIRE only
// touches a key that exists. Empty domains leave the domains set, and finished jobs the held set
// (a hold that came while the attempt ran), when a summary finds them.
// KEYS: jobs set, meta, body, ops jobs, ops domain, ops retried, timeline,
//       message-id set (the timeline again when the message has no Message-ID)
// ARGV: job id, event JSON ('' for none), retention seconds, '1' when the message has no other
//       job, '1' when the job may be in the retried set (it was deferred at least once)
const FINISH_JOB_LUA = `
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if ARGV[5] == '1' then redis.call('SREM', KEYS[6], ARGV[1]) end
if ARGV[2] ~= '' then redis.call('RPUSHX', KEYS[7], ARGV[2]) end
if ARGV[4] ~= '1' then
  redis.call('SREM', KEYS[1], ARGV[1])
  if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('EXPIRE', KEYS[7], ARGV[3])
if KEYS[8] ~= KEYS[7] then redis.call('EXPIRE', KEYS[8], ARGV[3]) end
return 1`;

// After an attempt that leaves the job for later: mark it retried (unless an operator deleted it
// meanwhile) and append the attempt to the timeline (unless the timeline is gone).
// KEYS: ops domain, ops retried, timeline   ARGV: job id, event JSON ('' for none)
const RECORD_RETRY_LUA = `
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then redis.call('SADD', KEYS[2], ARGV[1]) end
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then redis.call('RPUSH', KEYS[3], ARGV[2]) end
return 0`;

// Appends events to a timeline that still exists (never recreates an expired one without a TTL):
// the list (the BullMQ engine's), a live message's `tl` field (Tern's engine), or a finished
// message's string.
// KEYS: timeline (list), meta, timeline (string)   ARGV: event JSON...
const APPEND_TIMELINE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('RPUSH', KEYS[1], unpack(ARGV)) end
local events = table.concat(ARGV, '\\n')
local tl = redis.call('HGET', KEYS[2], 'tl')
if tl then return redis.call('HSET', KEYS[2], 'tl', tl .. '\\n' .. events) end
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.call('APPEND', KEYS[3], '\\n' .. events) end
return 0`;

// A message leaves (deleted or bounced by an operator): its timeline gets the last event and the
// retention, as a string from a live `tl` field, or the list as it is. Runs before the hash is deleted.
// KEYS: timeline (list), meta, timeline (string)   ARGV: event JSON, retention seconds
const CLOSE_TIMELINE_LUA = `
local tl = redis.call('HGET', KEYS[2], 'tl')
if tl then return redis.call('SET', KEYS[3], tl .. '\\n' .. ARGV[1], 'EX', ARGV[2]) end
redis.call('RPUSHX', KEYS[1], ARGV[1])
return redis.call('EXPIRE', KEYS[1], ARGV[2])`;

// Marks a message and its jobs held, unless it is gone: a hold that read the message just before
// its last job finished must not bring its hash back, nor leave its job ids in the held set (either
// would stay forever, with no job to delete it).
// KEYS: meta, held set   ARGV: job ids
const HOLD_MESSAGE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if #ARGV > 0 then redis.call('SADD', KEYS[2], unpack(ARGV)) end
return redis.call('HSET', KEYS[1], 'held', '1')`;

// Forgets a domain in the domains set once it has no unfinished jobs.
// KEYS: ops domains, ops domain   ARGV: domain
const PRUNE_DOMAIN_LUA = `
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
return 0`;

// Appends a slice to a body being written, and keeps it alive for another TTL. Refuses when the
// upload is gone (expired, or its first SET failed), so an APPEND never makes a key without a TTL.
// KEYS: upload   ARGV: slice, TTL ms
const APPEND_UPLOAD_LUA = `
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('ERR the message upload is gone') end
redis.call('APPEND', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0`;

export type OpsRedis = RedisClient & {
  /** 8 keys, then job id, event JSON, retention seconds, only job, maybe retried (see FINISH_JOB_LUA). */
  ternFinishJob(...keysThenArgs: (string | number)[]): Promise<number>;
  ternRecordRetry(
    domainKey: string,
    retried: string,
    timeline: string,
    jobId: string,
    event: string,
  ): Promise<number>;
  ternAppendTimeline(timeline: string, meta: string, done: string, ...events: string[]): Promise<number>;
  ternPruneDomain(domains: string, domainKey: string, domain: string): Promise<number>;
  ternAppendUpload(upload: string, slice: Buffer, ttlMs: number): Promise<number>;
};

/** A MULTI on an OpsRedis connection: the scripts can be queued in it like any command. */
export type OpsMulti = ChainableCommander & {
  ternAppendTimeline(timeline: string, meta: string, done: string, ...events: string[]): OpsMulti;
  ternCloseTimeline(timeline: string, meta: string, done: string, event: string, retention: number): OpsMulti;
  ternHoldMessage(meta: string, held: string, ...ids: string[]): OpsMulti;
  ternPruneDomain(domains: string, domainKey: string, domain: string): OpsMulti;
};

export function opsMulti(client: OpsRedis): OpsMulti {
  return client.multi() as OpsMulti;
}

/** Defines the scripts above as commands on a connection (each goes as EVALSHA, loaded once). */
export function defineOpsCommands(client: RedisClient): OpsRedis {
  client.defineCommand('ternFinishJob', { numberOfKeys: 8, lua: FINISH_JOB_LUA });
  client.defineCommand('ternRecordRetry', { numberOfKeys: 3, lua: RECORD_RETRY_LUA });
  client.defineCommand('ternAppendTimeline', { numberOfKeys: 3, lua: APPEND_TIMELINE_LUA });
  client.defineCommand('ternCloseTimeline', { numberOfKeys: 3, lua: CLOSE_TIMELINE_LUA });
  client.defineCommand('ternPruneDomain', { numberOfKeys: 2, lua: PRUNE_DOMAIN_LUA });
  client.defineCommand('ternHoldMessage', { numberOfKeys: 2, lua: HOLD_MESSAGE_LUA });
  client.defineCommand('ternAppendUpload', { numberOfKeys: 1, lua: APPEND_UPLOAD_LUA });
  return client as OpsRedis;
}
