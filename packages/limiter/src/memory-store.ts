// The in-process backend: the same GCRA and lease semantics as Redis, for one process only.
import { type BucketState, commit, decide } from './gcra.js';
import type {
  LimiterStore,
  StoreLeaseItem,
  StoreLeaseOutcome,
  StoreRateItem,
  StoreRateOutcome,
} from './store.js';

/** Keys whose buckets drained or whose leases all expired are dropped this often. */
const SWEEP_INTERVAL_MS = 60_000;

interface Bucket {
  state: BucketState;
  expiresAt: number;
}

export class MemoryStore implements LimiterStore {
  readonly kind = 'memory';
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();
  /** key → lease id → expiry (ms). */
  readonly #leases = new Map<string, Map<string, number>>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(now: () => number = Date.now) {
    this.#now = now;
    // Keys come from clients (addresses, user names): without a sweep the maps would only grow.
    this.#sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.#sweeper.unref();
  }

  async rate(items: readonly StoreRateItem[]): Promise<StoreRateOutcome[]> {
    const now = this.#now();
    const outcomes = items.map((item) => decide(this.#bucket(item.key, now), now, item));
    if (outcomes.every((o) => o.allowed)) {
      items.forEach((item, i) => {
        if (item.peek) return;
        const { state, ttlMs } = commit(outcomes[i]!, now, item);
        this.#buckets.set(item.key, { state, expiresAt: now + ttlMs });
      });
    }
    return outcomes.map(({ allowed, retryAfterMs, remaining }) => ({ allowed, retryAfterMs, remaining }));
  }

  async acquire(items: readonly StoreLeaseItem[], id: string, ttlMs: number): Promise<StoreLeaseOutcome> {
    const now = this.#now();
    const held = items.map((item) => this.#live(item.key, now));
    const active = held.map((leases) => leases?.size ?? 0);
    if (!items.every((item, i) => active[i]! < item.limit)) return { acquired: false, active };
    items.forEach((item, i) => {
      let leases = held[i];
      if (!leases) {
        leases = new Map();
        this.#leases.set(item.key, leases);
      }
      leases.set(id, now + ttlMs);
    });
    return { acquired: true, active: active.map((n) => n + 1) };
  }

  async renew(leases: readonly { key: string; id: string }[], ttlMs: number): Promise<number> {
    const now = this.#now();
    let lost = 0;
    for (const { key, id } of leases) {
      const held = this.#live(key, now);
      if (held?.has(id)) held.set(id, now + ttlMs);
      else lost++;
    }
    return lost;
  }

  async release(keys: readonly string[], id: string): Promise<void> {
    for (const key of keys) {
      const held = this.#leases.get(key);
      held?.delete(id);
      if (held?.size === 0) this.#leases.delete(key);
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#sweeper);
  }

  /** Drops drained buckets and expired leases. */
  sweep(): void {
    const now = this.#now();
    for (const [key, bucket] of this.#buckets) if (bucket.expiresAt <= now) this.#buckets.delete(key);
    for (const key of [...this.#leases.keys()]) this.#live(key, now);
  }

  #bucket(key: string, now: number): BucketState | undefined {
    const bucket = this.#buckets.get(key);
    if (bucket && bucket.expiresAt <= now) {
      this.#buckets.delete(key);
      return undefined;
    }
    return bucket?.state;
  }

  /** The key's unexpired leases (expired ones removed), or undefined when none are left. */
  #live(key: string, now: number): Map<string, number> | undefined {
    const held = this.#leases.get(key);
    if (!held) return undefined;
    for (const [id, expiresAt] of held) if (expiresAt <= now) held.delete(id);
    if (held.size > 0) return held;
    this.#leases.delete(key);
    return undefined;
  }
}
