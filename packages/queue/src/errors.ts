// Shared by every backend: the one error intake maps to 451 4.3.0.

/**
 * The queue could not make a message durable in time (backend unreachable, too slow, out of
 * memory or disk). Nothing of the message is left to deliver; intake answers 451 4.3.0 and the
 * client keeps the message. `cause` holds the backend's own error for the log.
 */
export class QueueUnavailableError extends Error {
  readonly code = 'TERN_QUEUE_UNAVAILABLE';
  override readonly name = 'QueueUnavailableError';
}
