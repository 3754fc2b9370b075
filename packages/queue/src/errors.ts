// Shared by every backend: the one error intake maps to 451 4.3.0, and a missing driver.
import { TernError } from '@tern/plugin-api';

/**
 * The queue could not make a message durable in time (backend unreachable, too slow, out of
 * memory or disk). Nothing of the message is left to deliver; intake answers 451 4.3.0 and the
 * client keeps the message. `cause` holds the backend's own error for the log.
 */
export class QueueUnavailableError extends Error {
  readonly code = 'TERN_QUEUE_UNAVAILABLE';
  override readonly name = 'QueueUnavailableError';
}

/** The optional peer dependencies the backends load (see drivers.ts). */
export type QueueDriver = 'better-sqlite3' | 'bullmq' | 'ioredis';

/** Which backend needs which driver, and the version range this package is tested with. */
const NEEDED_BY: Record<QueueDriver, { backend: string; range: string }> = {
  'better-sqlite3': { backend: "the embedded queue (queue: { backend: 'embedded' })", range: '^12.6.2' },
  bullmq: { backend: "the Redis queue (queue: { backend: 'redis' })", range: '^5.81.5' },
  ioredis: { backend: "the Redis queue (queue: { backend: 'redis' })", range: '^5.11.1' },
};

/** A backend was asked for and its driver is not installed; the message says what to install. */
export class QueueDriverMissingError extends TernError {
  constructor(driver: QueueDriver, cause: unknown) {
    const { backend, range } = NEEDED_BY[driver];
    super(
      'TERN_ERR_QUEUE_DRIVER_MISSING',
      `${backend} needs the package ${driver}, which is not installed: run \`npm install ${driver}@${range}\` in your project`,
      { cause },
    );
  }
}
