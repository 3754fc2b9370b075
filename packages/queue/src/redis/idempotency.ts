// Idempotency keys on Redis, shared by every node: SET NX with a TTL claims a key; the value then
// holds the queue id for the window.
import type { RedisClient } from '@tern/redis';
import { claimOf, type IdempotencyClaim, type IdempotencyStore, idempotencyValue } from '../idempotency.js';

export class RedisIdempotency implements IdempotencyStore {
  readonly #client: RedisClient;
  readonly #prefix: string;

  constructor(client: RedisClient, prefix: string) {
    this.#client = client;
    this.#prefix = `${prefix}:ops:idem:`;
  }

  async claim(key: string, fingerprint: string, pendingMs: number): Promise<IdempotencyClaim> {
    const name = this.#prefix + key;
    for (let tries = 0; tries < 3; tries++) {
      const set = await this.#client.set(
        name,
        idempotencyValue(fingerprint, undefined),
        'PX',
        pendingMs,
        'NX',
      );
      if (set === 'OK') return { state: 'new' };
      const value = await this.#client.get(name);
      // Gone between the two commands (expired or released): claim again.
      if (value !== null) return claimOf(value, fingerprint);
    }
    return { state: 'pending' };
  }

  async complete(key: string, fingerprint: string, queueId: string, windowMs: number): Promise<void> {
    await this.#client.set(this.#prefix + key, idempotencyValue(fingerprint, queueId), 'PX', windowMs);
  }

  async release(key: string): Promise<void> {
    // Only a pending claim goes: a completed key keeps its queue id.
    const name = this.#prefix + key;
    const value = await this.#client.get(name);
    if (value?.startsWith('pending ')) await this.#client.del(name);
  }
}
