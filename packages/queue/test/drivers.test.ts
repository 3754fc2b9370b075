// The drivers are optional peers loaded by the backend that needs them: an embedded-queue user
// never loads BullMQ, and a missing driver is named with the command that installs it.
import { createRequire } from 'node:module';
import { afterAll, describe, expect, it } from 'vitest';
import { QueueDriverMissingError } from '../src/errors.js';
import { openEmbeddedQueue } from '../src/index.js';
import { storePaths } from './embedded-fixtures/messages.js';

const require = createRequire(import.meta.url);
const paths = storePaths();
afterAll(() => paths.cleanup());

/** Whether a module of the package `name` is in this process's CommonJS cache. */
function loaded(name: string): boolean {
  return Object.keys(require.cache).some((file) => file.includes(`/node_modules/${name}/`));
}

describe('queue drivers', () => {
  it('are not loaded by importing @tern/queue; the embedded queue loads better-sqlite3 and never BullMQ', async () => {
    // This file's process imported the whole package (index.js) above and nothing else.
    expect(loaded('better-sqlite3')).toBe(false);
    expect(loaded('bullmq')).toBe(false);
    expect(loaded('ioredis')).toBe(false);
    const queue = openEmbeddedQueue({ path: paths.next() });
    try {
      expect(loaded('better-sqlite3')).toBe(true);
      expect(loaded('bullmq')).toBe(false);
      expect(loaded('ioredis')).toBe(false);
    } finally {
      await queue.close();
    }
  });

  it('a missing driver names the backend that needs it and the install command', () => {
    const error = new QueueDriverMissingError('bullmq', new Error("Cannot find module 'bullmq'"));
    expect(error.code).toBe('TERN_ERR_QUEUE_DRIVER_MISSING');
    expect(error.message).toBe(
      "the Redis queue (queue: { backend: 'redis' }) needs the package bullmq, which is not installed: run `npm install bullmq@^5.81.5` in your project",
    );
  });
});
