// The webhook outbox, shared by every backend: per endpoint, the events still to post, in the
// order they were written, and the endpoint's delivery state (attempts, back-off, last outcome).
// It lives in the queue's store, so pending events survive a restart and, on Redis, every node
// sees (and may post) the same ones. A lease per endpoint lets one node post at a time, so an
// endpoint receives its events in order and no event is posted twice at once.

/** One event waiting in an endpoint's outbox. */
export interface OutboxEvent {
  /** Unique within the endpoint, increasing in the order events were written. */
  readonly id: string;
  /** When it was written (ms): it expires `maxAge` after this. */
  readonly createdAt: number;
  /** The event as the dispatcher will post it (JSON text). */
  readonly payload: string;
}

/** An endpoint's state as both backends keep it. */
export interface WebhookEndpointState {
  /** Events waiting. */
  readonly pending: number;
  /** When the oldest waiting event was written. */
  readonly oldestAt?: number;
  /** Failed posts in a row since the last success. */
  readonly attempts: number;
  /** No post before this time (ms; 0: now). */
  readonly nextAttemptAt: number;
  readonly lastSuccessAt?: number;
  readonly lastFailureAt?: number;
  /** What the last failed post got (status line or error), clipped. */
  readonly lastError?: string;
}

/** The outcome of one post, recorded on the endpoint. */
export type WebhookPostRecord =
  | { readonly ok: true; readonly at: number }
  | { readonly ok: false; readonly at: number; readonly error: string; readonly nextAttemptAt: number };

export interface WebhookOutbox {
  /**
   * Appends payloads to `endpoint`'s outbox in order. An outbox holding `cap` events takes no
   * more: resolves with how many were kept (the rest are the caller's to count as dropped).
   */
  append(endpoint: string, payloads: readonly string[], cap: number, now?: number): Promise<number>;
  /** Takes `endpoint` for `leaseMs` unless another owner holds it; false when one does. */
  lease(endpoint: string, owner: string, leaseMs: number): Promise<boolean>;
  /** Gives the lease up (only when `owner` still holds it). */
  release(endpoint: string, owner: string): Promise<void>;
  /** The oldest `limit` events, oldest first. */
  head(endpoint: string, limit: number): Promise<OutboxEvent[]>;
  /** Removes these events (posted, or expired); ids no longer there are ignored. */
  remove(endpoint: string, ids: readonly string[]): Promise<void>;
  /** Records a post's outcome: a success clears the back-off, a failure counts one more attempt. */
  record(endpoint: string, outcome: WebhookPostRecord): Promise<void>;
  state(endpoint: string): Promise<WebhookEndpointState>;
}

/** Characters of an error kept on the endpoint. */
export const MAX_WEBHOOK_ERROR = 300;

/** An endpoint name as the outbox takes it: what config names allow, so it is safe in a key. */
export const WEBHOOK_ENDPOINT_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function checkEndpointName(endpoint: string): string {
  if (!WEBHOOK_ENDPOINT_NAME.test(endpoint)) {
    throw new RangeError(`webhook endpoint ${JSON.stringify(endpoint)}: letters, digits, _ and - only`);
  }
  return endpoint;
}

/**
 * Webhook events to write with a message, in the same atomic write that makes it durable (its
 * `queued` events): no worker can see the message's jobs before they are in the outbox, so an
 * endpoint hears of the message before any outcome of it, and a crash after the 250 loses none.
 */
export interface OutboxWrite {
  readonly endpoint: string;
  /** In the order to post them. */
  readonly payloads: readonly string[];
  /** The endpoint's cap (as `append` takes it): an outbox holding this many takes no more. */
  readonly cap: number;
  /** Set by the backend with the write (read it once the enqueue resolved): how many of `payloads` the cap let in. */
  kept?: number;
}

/** What an enqueue may do besides storing the message. */
export interface EnqueueOptions {
  /**
   * Called once with the message's queue id before the write; what it returns goes to the outbox
   * in the same write as the message (nothing of it is left when the enqueue fails or is withdrawn).
   * Backends without an outbox ignore it.
   */
  readonly outbox?: (queueId: string) => readonly OutboxWrite[];
}

/** The writes an enqueue's `outbox` asks for with its queue id, leaving empty ones out; undefined for none. */
export function outboxWritesOf(
  options: EnqueueOptions | undefined,
  queueId: string,
): readonly OutboxWrite[] | undefined {
  const writes = options?.outbox?.(queueId).filter((w) => w.payloads.length > 0);
  return writes?.length ? writes : undefined;
}
