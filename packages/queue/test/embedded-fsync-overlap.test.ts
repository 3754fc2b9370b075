// The enqueue fsync of the embedded queue, held back by the test: a job its enqueue claimed is
// delivered while that fsync runs (one session's event loop would idle meanwhile), yet what follows
// the delivery (hooks, the outcome) waits until the enqueue has resolved.
import { definePlugin } from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import { waitFor } from '@tern/testkit';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type EmbeddedQueue, openEmbeddedQueue } from '../src/embedded/index.js';
import { scriptedDeliver } from './embedded-fixtures/deliver.js';
import { storePaths, testMessage } from './embedded-fixtures/messages.js';

/** fsync callbacks of the queue's WAL, kept until the test lets them through. */
const fsyncs = vi.hoisted(() => ({ held: [] as (() => void)[], hold: false }));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const fsync = (fd: number, callback: (error: NodeJS.ErrnoException | null) => void): void => {
    real.fsync(fd, (error) => {
      if (fsyncs.hold) fsyncs.held.push(() => callback(error));
      else callback(error);
    });
  };
  return { ...real, default: { ...real, fsync }, fsync };
});

function releaseFsyncs(): void {
  fsyncs.hold = false;
  for (const done of fsyncs.held.splice(0)) done();
}

const paths = storePaths();
const queues: EmbeddedQueue[] = [];

afterEach(async () => {
  releaseFsyncs();
  await Promise.all(queues.splice(0).map((q) => q.close()));
  paths.cleanup();
});

describe('embedded queue: delivery during the enqueue fsync', () => {
  it('delivers a job its enqueue claimed before that fsync ends, and runs the delivered hooks after the enqueue resolved', async () => {
    const q = openEmbeddedQueue({ path: paths.next() });
    queues.push(q);
    let acknowledged = false;
    const hookSaw: boolean[] = [];
    const plugins = new PluginHost([
      definePlugin({
        name: 'order',
        delivered: () => {
          hookSaw.push(acknowledged);
        },
      }),
    ]);
    const { deliver, calls } = scriptedDeliver();
    await q.startWorker(deliver, { plugins });

    fsyncs.hold = true;
    const enqueued = q.enqueue(testMessage({ to: ['a@dest.test'] })).then((id) => {
      acknowledged = true;
      return id;
    });
    await waitFor(() => calls.length === 1 && fsyncs.held.length > 0);
    expect(acknowledged).toBe(false);

    releaseFsyncs();
    const id = await enqueued;
    await waitFor(() => hookSaw.length === 1);
    expect(hookSaw).toEqual([true]);
    await waitFor(async () => (await q.inspect(id)) === null);
    expect(calls.map((c) => c.job.queueId)).toEqual([id]);
  });
});
