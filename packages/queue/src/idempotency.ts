// Idempotency keys for HTTP injection, shared by every backend: the first request with a key
// claims it, and once its message is queued the key holds the queue id for a window, so a retry
// gets the same queue id and nothing is enqueued twice (on Redis, whichever node it reaches).

/** What a claim found. */
export type IdempotencyClaim =
  /** The key is this caller's now: enqueue, then `complete` (or `release` when that fails). */
  | { readonly state: 'new' }
  /** An earlier request with this key queued this message. */
  | { readonly state: 'done'; readonly queueId: string }
  /** An earlier request with this key is still being handled (or died within the pending time). */
  | { readonly state: 'pending' }
  /** The key was used for a different request (another fingerprint). */
  | { readonly state: 'mismatch' };

export interface IdempotencyStore {
  /**
   * Claims `key` for a request whose content hashes to `fingerprint`. A claim that is never
   * completed lapses after `pendingMs`, so a crashed node does not block the key for good.
   */
  claim(key: string, fingerprint: string, pendingMs: number): Promise<IdempotencyClaim>;
  /** Records the queue id under the key for `windowMs`. */
  complete(key: string, fingerprint: string, queueId: string, windowMs: number): Promise<void>;
  /** Gives up a claim whose message was not queued: the next request with the key may try again. */
  release(key: string): Promise<void>;
}

/** Characters of a key kept: it names a key, not a payload. */
export const MAX_IDEMPOTENCY_KEY = 255;

/** The stored value of a key, as both backends encode it. */
export function idempotencyValue(fingerprint: string, queueId: string | undefined): string {
  return queueId === undefined ? `pending ${fingerprint}` : `done ${fingerprint} ${queueId}`;
}

/** What a stored value means for a claim with `fingerprint`. */
export function claimOf(value: string, fingerprint: string): IdempotencyClaim {
  const [state, stored, queueId] = value.split(' ');
  if (stored !== fingerprint) return { state: 'mismatch' };
  if (state === 'done' && queueId !== undefined) return { state: 'done', queueId };
  return { state: 'pending' };
}
