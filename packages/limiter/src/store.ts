// What the limiter needs from a backend. Redis gives cluster-wide counts; memory gives the same
// answers inside one process (the embedded setup). Both decide a batch atomically.

/** One rate decision in a batch, with its window already in milliseconds. */
export interface StoreRateItem {
  readonly key: string;
  readonly limit: number;
  readonly periodMs: number;
  readonly cost: number;
  /** Ask without taking: the item is decided but never committed. */
  readonly peek: boolean;
}

export interface StoreRateOutcome {
  readonly allowed: boolean;
  readonly retryAfterMs: number;
  readonly remaining: number;
}

export interface StoreLeaseItem {
  readonly key: string;
  readonly limit: number;
}

export interface StoreLeaseOutcome {
  /** True when every item got its slot (then all were taken; otherwise none). */
  readonly acquired: boolean;
  /** Leases held per item after the call (before it, when refused). */
  readonly active: readonly number[];
}

export interface LimiterStore {
  readonly kind: 'redis' | 'memory';
  /** Decides every item; commits the non-peek ones only when all were allowed. */
  rate(items: readonly StoreRateItem[]): Promise<StoreRateOutcome[]>;
  /** Takes lease `id` under every key, only if each key has fewer than its limit live leases. */
  acquire(items: readonly StoreLeaseItem[], id: string, ttlMs: number): Promise<StoreLeaseOutcome>;
  /** Pushes the expiry of held leases to now + ttl. Returns how many were no longer there. */
  renew(leases: readonly { readonly key: string; readonly id: string }[], ttlMs: number): Promise<number>;
  release(keys: readonly string[], id: string): Promise<void>;
  close(): Promise<void>;
}
