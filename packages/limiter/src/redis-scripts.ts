// The Lua run by Redis: one script per decision, so a check is one atomic round trip and every
// node of a cluster sees one count. Time comes from Redis (TIME), so node clocks never disagree.
// The rate arithmetic is gcra.ts's, line for line: change both or neither.
import { createHash } from 'node:crypto';

export interface LuaScript {
  readonly source: string;
  readonly sha: string;
}

function script(body: string): LuaScript {
  // Redis 5 and 6 refuse writes after TIME unless effects are replicated; 7 does that by default.
  const source = `if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
${body}`;
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * KEYS: one bucket (hash: l = level, t = last write ms) per item.
 * ARGV: per item limit, periodMs, cost, peek (1 = decide only).
 * Returns per item { allowed 1|0, retryAfterMs (-1 = never), remaining }; commits the non-peek
 * items only when every item is allowed.
 */
export const RATE_SCRIPT = script(`
local results = {}
local drained = {}
local all = true
for i = 1, #KEYS do
  local base = (i - 1) * 4
  local limit = tonumber(ARGV[base + 1])
  local period = tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 3])
  local state = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = 0
  if state[1] and state[2] then
    local elapsed = now - tonumber(state[2])
    if elapsed < 0 then elapsed = 0 end
    level = tonumber(state[1]) - elapsed * limit
    if level < 0 then level = 0 end
  end
  drained[i] = level
  local need = cost * period
  local capacity = limit * period
  if level + need <= capacity then
    results[i] = { 1, 0, math.floor((capacity - level - need) / period) }
  else
    all = false
    local retry = -1
    if need <= capacity then retry = math.ceil((level + need - capacity) / limit) end
    results[i] = { 0, retry, math.floor((capacity - level) / period) }
  end
end
if all then
  for i = 1, #KEYS do
    local base = (i - 1) * 4
    if ARGV[base + 4] == '0' then
      local limit = tonumber(ARGV[base + 1])
      local level = drained[i] + tonumber(ARGV[base + 3]) * tonumber(ARGV[base + 2])
      -- %.0f: Lua's default number format keeps 14 digits, which would round large levels.
      redis.call('HSET', KEYS[i], 'l', string.format('%.0f', level), 't', string.format('%.0f', now))
      redis.call('PEXPIRE', KEYS[i], math.ceil(level / limit) + 1)
    end
  end
end
return results
`);

/**
 * KEYS: one sorted set of leases (member = lease id, score = expiry ms) per item.
 * ARGV: id, ttlMs, then each item's limit.
 * Returns { acquired 1|0, { active per item } }: all slots taken, or none.
 */
export const ACQUIRE_SCRIPT = script(`
local id = ARGV[1]
local ttl = tonumber(ARGV[2])
local active = {}
local ok = true
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  active[i] = redis.call('ZCARD', KEYS[i])
  if active[i] >= tonumber(ARGV[2 + i]) then ok = false end
end
if not ok then return { 0, active } end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, id)
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  active[i] = active[i] + 1
end
return { 1, active }
`);

/**
 * KEYS: lease sets; ARGV: ttlMs, then the lease id held in each set.
 * Moves each live lease's expiry to now + ttl; returns how many had already expired or gone.
 */
export const RENEW_SCRIPT = script(`
local ttl = tonumber(ARGV[1])
local lost = 0
for i = 1, #KEYS do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[1 + i])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[i], 'XX', now + ttl, ARGV[1 + i])
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  else
    lost = lost + 1
  end
end
return lost
`);
