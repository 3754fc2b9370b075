// The webhook outbox on Redis, shared by every node. Per endpoint, under the queue's key base (one
// hash slot on a Cluster): `<base>:wh:<endpoint>:q`, a sorted set of `<seq> <createdAt> <payload>`
// scored by a sequence (`:seq`), so the order is the order written and removal is by exact
// member (a node whose lease lapsed mid-post cannot remove what another node has not posted);
// `:st`, a hash of the endpoint's state; `:lease`, the owner of the lease, with a TTL.
import type { RedisClient } from '@tern/redis';
import {
  checkEndpointName,
  MAX_WEBHOOK_ERROR,
  type OutboxEvent,
  type OutboxWrite,
  type WebhookEndpointState,
  type WebhookOutbox,
  type WebhookPostRecord,
} from '../webhook-outbox.js';

// KEYS: events, seq. ARGV: cap, createdAt, payloads... Appends until the set holds `cap`.
const APPEND_LUA = `
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[1])
local kept = 0
for i = 3, #ARGV do
  if n >= cap then break end
  local seq = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], seq, seq .. ' ' .. ARGV[2] .. ' ' .. ARGV[i])
  n = n + 1
  kept = kept + 1
end
return kept`;

/**
 * Lua for a script that writes a message: `appendWithMessage(meta, k, a)` appends the outbox
 * section of ARGV that starts at `a` (createdAt, then per endpoint: cap, count, payloads) to the
 * endpoints whose events and seq keys are KEYS[k], KEYS[k + 1], and so on to the last key, as
 * APPEND_LUA does, and keeps the sequences written in the message hash (`wh`: first and last per
 * endpoint) for a withdraw. Returns the count kept per endpoint. Call it after the script's first
 * write (Redis refuses only a script's first write when out of memory).
 */
export const APPEND_WITH_MESSAGE_LUA = `
local function appendWithMessage(meta, k, a)
  local created = ARGV[a]
  local kept, ranges = {}, {}
  a = a + 1
  for e = k, #KEYS - 1, 2 do
    local cap, count = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    local n = redis.call('ZCARD', KEYS[e])
    local first, last = 0, -1
    for i = a + 2, a + 1 + count do
      if n >= cap then break end
      last = redis.call('INCR', KEYS[e + 1])
      if first == 0 then first = last end
      redis.call('ZADD', KEYS[e], last, last .. ' ' .. created .. ' ' .. ARGV[i])
      n = n + 1
    end
    kept[#kept + 1] = last - first + 1
    ranges[#ranges + 1] = first .. ' ' .. last
    a = a + 2 + count
  end
  redis.call('HSET', meta, 'wh', table.concat(ranges, ' '))
  return kept
end
`;

// KEYS: meta, then events and seq of each endpoint. ARGV: the outbox section (see above).
const WITH_MESSAGE_LUA = `${APPEND_WITH_MESSAGE_LUA}
return appendWithMessage(KEYS[1], 2, 1)`;

// KEYS: meta, then the events key of each endpoint in the order the enqueue wrote them. Removes
// the events a withdrawn enqueue wrote (their sequences are in the message hash, written with them).
const WITHDRAW_LUA = `
local wh = redis.call('HGET', KEYS[1], 'wh')
if not wh then return 0 end
local i = 2
for first, last in string.gmatch(wh, '(%-?%d+) (%-?%d+)') do
  if KEYS[i] and tonumber(first) <= tonumber(last) then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], first, last)
  end
  i = i + 1
end
return 0`;

export type OutboxRedis = RedisClient & {
  ternOutboxWithMessage(...keysThenArgs: (string | number)[]): Promise<number[]>;
  ternOutboxWithdraw(...keysThenArgs: (string | number)[]): Promise<number>;
};

export function defineOutboxCommands<T extends RedisClient>(client: T): T & OutboxRedis {
  client.defineCommand('ternOutboxWithMessage', { lua: WITH_MESSAGE_LUA });
  client.defineCommand('ternOutboxWithdraw', { lua: WITHDRAW_LUA });
  return client as T & OutboxRedis;
}

/** The keys (events, seq per endpoint) and the ARGV section of outbox writes made with a message. */
export function outboxSection(
  base: string,
  writes: readonly OutboxWrite[],
  now: number,
): { keys: string[]; args: (string | number)[] } {
  const keys: string[] = [];
  const args: (string | number)[] = [now];
  for (const write of writes) {
    const k = webhookKeys(base, write.endpoint);
    keys.push(k.events, k.seq);
    args.push(write.cap, write.payloads.length, ...write.payloads);
  }
  return { keys, args };
}

/** Removes the events a withdrawn enqueue of the message at `meta` wrote (before `meta` goes). */
export function withdrawOutbox(
  client: OutboxRedis,
  base: string,
  meta: string,
  writes: readonly OutboxWrite[],
): Promise<number> {
  const keys = writes.map((w) => webhookKeys(base, w.endpoint).events);
  return client.ternOutboxWithdraw(1 + keys.length, meta, ...keys);
}

// KEYS: lease. ARGV: owner, ms. Takes a free lease or renews one's own.
const LEASE_LUA = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;

// KEYS: lease. ARGV: owner.
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0`;

interface Keys {
  events: string;
  seq: string;
  state: string;
  lease: string;
}

/** The keys of one endpoint under `base` (the queue's key base). */
export function webhookKeys(base: string, endpoint: string): Keys {
  const at = `${base}:wh:${checkEndpointName(endpoint)}`;
  return { events: `${at}:q`, seq: `${at}:seq`, state: `${at}:st`, lease: `${at}:lease` };
}

function eventOf(member: string): OutboxEvent | undefined {
  const first = member.indexOf(' ');
  const second = member.indexOf(' ', first + 1);
  if (first === -1 || second === -1) return undefined;
  return {
    id: member.slice(0, first),
    createdAt: Number(member.slice(first + 1, second)),
    payload: member.slice(second + 1),
  };
}

export class RedisWebhookOutbox implements WebhookOutbox {
  readonly #client: RedisClient;
  readonly #base: string;
  /** What `head` last read per endpoint, by id: `remove` deletes those exact members. */
  readonly #read = new Map<string, Map<string, string>>();

  constructor(client: RedisClient, base: string) {
    this.#client = client;
    this.#base = base;
  }

  async append(
    endpoint: string,
    payloads: readonly string[],
    cap: number,
    now = Date.now(),
  ): Promise<number> {
    if (payloads.length === 0) return 0;
    const keys = webhookKeys(this.#base, endpoint);
    const kept = await this.#client.eval(APPEND_LUA, 2, keys.events, keys.seq, cap, now, ...payloads);
    return Number(kept);
  }

  async lease(endpoint: string, owner: string, leaseMs: number): Promise<boolean> {
    const keys = webhookKeys(this.#base, endpoint);
    return Number(await this.#client.eval(LEASE_LUA, 1, keys.lease, owner, leaseMs)) === 1;
  }

  async release(endpoint: string, owner: string): Promise<void> {
    await this.#client.eval(RELEASE_LUA, 1, webhookKeys(this.#base, endpoint).lease, owner);
  }

  async head(endpoint: string, limit: number): Promise<OutboxEvent[]> {
    const members = await this.#client.zrange(webhookKeys(this.#base, endpoint).events, 0, limit - 1);
    const read = new Map<string, string>();
    const events: OutboxEvent[] = [];
    for (const member of members) {
      const event = eventOf(member);
      if (!event) continue;
      read.set(event.id, member);
      events.push(event);
    }
    this.#read.set(endpoint, read);
    return events;
  }

  async remove(endpoint: string, ids: readonly string[]): Promise<void> {
    const read = this.#read.get(endpoint);
    const members = ids.map((id) => read?.get(id)).filter((m): m is string => m !== undefined);
    if (members.length > 0) await this.#client.zrem(webhookKeys(this.#base, endpoint).events, ...members);
  }

  async record(endpoint: string, outcome: WebhookPostRecord): Promise<void> {
    const key = webhookKeys(this.#base, endpoint).state;
    if (outcome.ok) {
      await this.#client.hset(key, { attempts: 0, nextAttemptAt: 0, lastSuccessAt: outcome.at });
      return;
    }
    await this.#client
      .multi()
      .hincrby(key, 'attempts', 1)
      .hset(key, {
        nextAttemptAt: outcome.nextAttemptAt,
        lastFailureAt: outcome.at,
        lastError: outcome.error.slice(0, MAX_WEBHOOK_ERROR),
      })
      .exec();
  }

  async state(endpoint: string): Promise<WebhookEndpointState> {
    const keys = webhookKeys(this.#base, endpoint);
    const [state, pending, oldest] = await Promise.all([
      this.#client.hgetall(keys.state),
      this.#client.zcard(keys.events),
      this.#client.zrange(keys.events, 0, 0),
    ]);
    const num = (value: string | undefined): number | undefined =>
      value === undefined || value === '' ? undefined : Number(value);
    const oldestAt = oldest[0] === undefined ? undefined : eventOf(oldest[0])?.createdAt;
    const lastSuccessAt = num(state.lastSuccessAt);
    const lastFailureAt = num(state.lastFailureAt);
    return {
      pending,
      ...(oldestAt === undefined ? {} : { oldestAt }),
      attempts: num(state.attempts) ?? 0,
      nextAttemptAt: num(state.nextAttemptAt) ?? 0,
      ...(lastSuccessAt === undefined ? {} : { lastSuccessAt }),
      ...(lastFailureAt === undefined ? {} : { lastFailureAt }),
      ...(state.lastError === undefined ? {} : { lastError: state.lastError }),
    };
  }
}
