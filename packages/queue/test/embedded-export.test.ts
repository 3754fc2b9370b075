// Moving mail out of an embedded store: export to JSON lines, import into another embedded
// store and into a real Redis queue; only recipients still pending travel.
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { memorySource } from '@tern/plugin-api/host';
import { startRedis, waitFor } from '@tern/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type EmbeddedQueue,
  EmbeddedStoreLockedError,
  type ExportedMessage,
  exportQueue,
  ImportError,
  importQueue,
  openEmbeddedQueue,
} from '../src/embedded/index.js';
import { openRedisQueue } from '../src/redis/index.js';
import { scriptedDeliver } from './embedded-fixtures/deliver.js';
import { storePaths, testMessage } from './embedded-fixtures/messages.js';

const paths = storePaths();
const open: { close(): Promise<void> }[] = [];

afterEach(async () => {
  // In order: a Redis queue closes before its server stops.
  for (const q of open.splice(0)) await q.close();
  paths.cleanup();
});

function queueAt(path: string): EmbeddedQueue {
  const q = openEmbeddedQueue({ path });
  open.push(q);
  return q;
}

/** A store with one message part-delivered, one held, one untouched; closed afterwards. */
async function storeWithWork(): Promise<{
  path: string;
  partial: string;
  held: string;
  fresh: string;
  bodies: Map<string, Buffer>;
}> {
  const path = paths.next();
  const q = openEmbeddedQueue({ path });
  const bodies = new Map<string, Buffer>();
  const add = async (to: EmbeddedQueue, m: ReturnType<typeof testMessage>): Promise<string> => {
    const id = await to.enqueue({ ...m, messageId: '<x@origin.test>' });
    bodies.set(id, Buffer.concat(m.content.chunks() ?? []));
    return id;
  };
  const partial = await add(
    q,
    testMessage({ to: ['ok@one.test', 'wait@one.test', 'done@two.test'], receivedAt: Date.now() - 3600_000 }),
  );
  const held = await add(q, testMessage({ to: ['h@three.test'] }));
  await q.hold(held);
  const { deliver } = scriptedDeliver((address) => (address === 'wait@one.test' ? 'deferred' : 'delivered'));
  await q.startWorker(deliver, { retry: { intervals: ['1h'] } });
  await waitFor(async () => (await q.inspect(partial))?.jobs.every((j) => j.attempts === 1) === true);
  await q.close();
  // Without a worker (a running one starts a new message's attempt before its enqueue resolves):
  // held, then let be, it is exported as not held.
  const idle = openEmbeddedQueue({ path });
  const fresh = await add(idle, testMessage({ to: ['f@four.test'] }));
  await idle.hold(fresh);
  await idle.release(fresh);
  await idle.close();
  return { path, partial, held, fresh, bodies };
}

describe('embedded queue: export and import', () => {
  it('exports only unfinished recipients and imports them into another store', async () => {
    const { path, partial, held, bodies } = await storeWithWork();
    const file = join(paths.next(), '..', 'export.jsonl');
    const summary = await exportQueue(path, file);
    expect(summary.messages).toBe(3);
    expect(summary.recipients).toBe(3);

    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as ExportedMessage);
    const byId = new Map(lines.map((l) => [l.queueId, l]));
    expect(byId.get(partial)?.envelope.recipients).toEqual([{ address: 'wait@one.test' }]);
    expect(byId.get(partial)?.attempts).toBe(1);
    expect(byId.get(held)?.held).toBe(true);

    const target = queueAt(paths.next());
    const result = await importQueue(file, target);
    expect(result.imported).toBe(3);
    const newPartial = result.ids.get(partial) as string;
    const record = await target.inspect(newPartial);
    expect(record?.envelope.recipients).toEqual([{ address: 'wait@one.test' }]);
    expect(record?.createdAt).toBe(byId.get(partial)?.receivedAt);
    expect(record?.messageId).toBe('<x@origin.test>');
    expect(await target.readMessage(newPartial)).toEqual(bodies.get(partial));
    expect(result.held).toEqual([result.ids.get(held)]);

    // The source store is untouched: it still has the same work.
    const source = queueAt(path);
    expect((await source.summary()).totals.total).toBe(3);
  });

  it('imports into a Redis queue, where the mail is then delivered', async () => {
    const { path, partial, bodies } = await storeWithWork();
    const file = join(paths.next(), '..', 'export.jsonl');
    await exportQueue(path, file);
    const redis = await startRedis();
    open.push({ close: () => redis.stop() });
    const target = await openRedisQueue({ url: redis.url, prefix: 'export-test' });
    open.unshift(target);
    const { ids } = await importQueue(file, target);
    const id = ids.get(partial) as string;
    expect((await target.readMessage(id))?.equals(bodies.get(partial) as Buffer)).toBe(true);
    const { deliver, calls } = scriptedDeliver();
    await target.startWorker(deliver, { concurrency: 2 });
    await waitFor(() => calls.length === 3, 10_000);
    expect(calls.find((c) => c.job.queueId === id)?.job.recipients.map((r) => r.address)).toEqual([
      'wait@one.test',
    ]);
  });

  it('moves a message stored in slices, streaming its body out and in', async () => {
    const path = paths.next();
    const q = openEmbeddedQueue({ path });
    // Above the inline limit, and not a multiple of 3 (base64 carries bytes between slices).
    const body = randomBytes(3 * 1024 * 1024 + 1);
    const id = await q.enqueue({ ...testMessage(), content: memorySource([body]), eightBit: true });
    await q.close();

    const file = join(paths.next(), '..', 'large.jsonl');
    expect(await exportQueue(path, file)).toMatchObject({ messages: 1, bytes: body.length });
    const line = JSON.parse(readFileSync(file, 'utf8')) as ExportedMessage;
    expect(line.queueId).toBe(id);
    expect(Buffer.from(line.body, 'base64').equals(body)).toBe(true);

    const target = queueAt(paths.next());
    const { ids } = await importQueue(file, target);
    const { deliver, calls } = scriptedDeliver();
    expect((await target.readMessage(ids.get(id) as string))?.equals(body)).toBe(true);
    await target.startWorker(deliver);
    await waitFor(() => calls.length === 1);
    expect(calls[0]?.job).toMatchObject({ size: body.length, eightBit: true });
  });

  it('refuses to export a store that is in use', async () => {
    const path = paths.next();
    queueAt(path);
    await expect(exportQueue(path, `${path}.jsonl`)).rejects.toThrow(EmbeddedStoreLockedError);
  });

  it('names the line that cannot be imported and resumes with skip', async () => {
    const good = (queueId: string): string =>
      JSON.stringify({
        version: 1,
        queueId,
        envelope: { mailFrom: 'a@origin.test', recipients: [{ address: 'b@dest.test' }] },
        receivedAt: 1_700_000_000_000,
        held: false,
        attempts: 0,
        body: Buffer.from('Subject: x\r\n\r\nhi\r\n').toString('base64'),
      } satisfies ExportedMessage);
    const file = join(paths.next(), '..', 'broken.jsonl');
    writeFileSync(file, `${good('A')}\n{"version":2}\n${good('C')}\n`);
    const target = queueAt(paths.next());
    const error = await importQueue(file, target).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportError);
    expect((error as ImportError).line).toBe(2);
    expect((error as ImportError).imported).toBe(1);
    expect((error as Error).message).toContain(`${file}:2: unknown export version 2`);

    const rest = await importQueue(Readable.from([`${good('A')}\n`, `${good('C')}\n`]), target, { skip: 1 });
    expect([...rest.ids.keys()]).toEqual(['C']);
    expect((await target.summary()).totals.total).toBe(2);
  });
});
