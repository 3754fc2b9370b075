// GCRA in its continuous-state leaky bucket form (ITU-T I.371): the bucket level and the time it
// was last updated. The Lua script in redis-scripts.ts is the same arithmetic; keep them in step.
//
// Units: the level counts "token·period" (one token = `periodMs` units) and drains `limit` units
// per millisecond. So with integer limits, periods, costs and millisecond clocks every value is an
// integer: no float drift, and the (N+1)th request of a burst is refused exactly.

/** The bucket of one key: its level and the millisecond it was last written. */
export interface BucketState {
  readonly level: number;
  readonly at: number;
}

export interface BucketRequest {
  readonly limit: number;
  readonly periodMs: number;
  readonly cost: number;
}

export interface BucketOutcome {
  readonly allowed: boolean;
  /** 0 when allowed; Infinity when the cost exceeds the whole limit (it can never pass). */
  readonly retryAfterMs: number;
  /** Whole tokens left after this request (or now, when refused or only peeked). */
  readonly remaining: number;
  /** The level after draining to `now`, before this request. */
  readonly drained: number;
}

/** Drains the bucket to `now` and decides one request; commits nothing. */
export function decide(state: BucketState | undefined, now: number, request: BucketRequest): BucketOutcome {
  const { limit, periodMs, cost } = request;
  const elapsed = state ? Math.max(0, now - state.at) : 0;
  const drained = state ? Math.max(0, state.level - elapsed * limit) : 0;
  const need = cost * periodMs;
  const capacity = limit * periodMs;
  if (drained + need <= capacity) {
    return {
      allowed: true,
      retryAfterMs: 0,
      remaining: Math.floor((capacity - drained - need) / periodMs),
      drained,
    };
  }
  const remaining = Math.floor((capacity - drained) / periodMs);
  if (need > capacity) return { allowed: false, retryAfterMs: Number.POSITIVE_INFINITY, remaining, drained };
  return { allowed: false, retryAfterMs: Math.ceil((drained + need - capacity) / limit), remaining, drained };
}

/** The state after committing `cost`, and how long until it drains to empty (the key's TTL). */
export function commit(
  outcome: BucketOutcome,
  now: number,
  request: BucketRequest,
): { state: BucketState; ttlMs: number } {
  const level = outcome.drained + request.cost * request.periodMs;
  return { state: { level, at: now }, ttlMs: Math.ceil(level / request.limit) + 1 };
}
