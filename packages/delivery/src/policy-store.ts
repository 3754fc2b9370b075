// Where outbound TLS policies (MTA-STS) are cached. The queue's store implements it so every node
// shares one cache and a restart keeps it (RFC 8461 §5.1: a cached policy protects the next delivery);
// MemoryPolicyStore is the one-process default and the reference for the behaviour.

import type { JsonValue } from '@tern/queue';

export type { JsonValue };

/**
 * A small key/value store with expiry. Keys are short ASCII strings such as `mta-sts:example.com`;
 * values are JSON (at most a few KB each). A backend stores the JSON text and the expiry, and never
 * returns an expired entry.
 */
export interface PolicyStore {
  /** The value stored under `key`, or undefined when there is none or it has expired. */
  get(key: string): Promise<JsonValue | undefined>;
  /** Stores `value` under `key` until `ttlMs` from now (replacing what was there). */
  set(key: string, value: JsonValue, ttlMs: number): Promise<void>;
}

/** A PolicyStore in this process's memory, bounded in entries (least recently set goes first). */
export class MemoryPolicyStore implements PolicyStore {
  readonly #entries = new Map<string, { json: string; expiresAt: number }>();
  readonly #maxEntries: number;
  readonly #now: () => number;

  constructor(options: { maxEntries?: number; now?: () => number } = {}) {
    this.#maxEntries = options.maxEntries ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  async get(key: string): Promise<JsonValue | undefined> {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    // Stored as text, as a shared store would: callers never share a mutable object.
    return JSON.parse(entry.json) as JsonValue;
  }

  async set(key: string, value: JsonValue, ttlMs: number): Promise<void> {
    this.#entries.delete(key);
    if (ttlMs <= 0) return;
    this.#entries.set(key, { json: JSON.stringify(value), expiresAt: this.#now() + ttlMs });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }
}
