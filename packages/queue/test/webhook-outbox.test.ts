// The webhook outbox on both backends: events come back in the order written, a full outbox takes
// no more, one node at a time holds an endpoint's lease (two nodes on one Redis), posted events
// are removed by id, the endpoint's back-off state is shared, and an embedded outbox survives a
// reopen of the store. Events written with a message (its `queued`) are in the outbox when the
// enqueue resolves, on every backend and engine, and a refused or withdrawn enqueue leaves none.
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import type { QueueBackend } from '../src/contract.js';
import { QueueUnavailableError } from '../src/errors.js';
import type { OutboxWrite, WebhookOutbox } from '../src/webhook-outbox.js';
import { testMessage } from './redis-fixtures/deliveries.js';
import { storeFixtures } from './store-fixtures.js';

const fixtures = storeFixtures();

describe.each([
  [
    'embedded',
    async (): Promise<[WebhookOutbox, WebhookOutbox]> => {
      const q = fixtures.embedded();
      return [q.webhookOutbox, q.webhookOutbox];
    },
  ],
  [
    'redis, two nodes',
    async (): Promise<[WebhookOutbox, WebhookOutbox]> => {
      const a = await fixtures.onRedis();
      return [a.webhookOutbox, (await fixtures.onRedis(a.prefix)).webhookOutbox];
    },
  ],
])('webhook outbox: %s', (_name, open) => {
  it('keeps events in the order written, up to the cap, and removes posted ones by id', async () => {
    const [a, b] = await open();
    expect(await a.append('hooks', ['{"n":1}', '{"n":2}'], 3, 1000)).toBe(2);
    expect(await b.append('hooks', ['{"n":3}', '{"n":4}', '{"n":5}'], 3, 2000)).toBe(1);
    const head = await b.head('hooks', 10);
    expect(head.map((e) => e.payload)).toEqual(['{"n":1}', '{"n":2}', '{"n":3}']);
    expect(head.map((e) => e.createdAt)).toEqual([1000, 1000, 2000]);
    await b.remove('hooks', [head[0]?.id as string, head[1]?.id as string]);
    expect((await a.head('hooks', 10)).map((e) => e.payload)).toEqual(['{"n":3}']);
    expect(await a.state('hooks')).toMatchObject({ pending: 1, oldestAt: 2000, attempts: 0 });
    // Another endpoint is another outbox.
    expect(await a.head('other', 10)).toEqual([]);
  });

  it('one owner at a time holds an endpoint; a released or lapsed lease can be taken', async () => {
    const [a, b] = await open();
    expect(await a.lease('ep', 'node-a', 60_000)).toBe(true);
    expect(await b.lease('ep', 'node-b', 60_000)).toBe(false);
    expect(await a.lease('ep', 'node-a', 60_000)).toBe(true);
    await b.release('ep', 'node-b');
    expect(await b.lease('ep', 'node-b', 60_000)).toBe(false);
    await a.release('ep', 'node-a');
    expect(await b.lease('ep', 'node-b', 50)).toBe(true);
    const until = Date.now() + 5000;
    let taken = false;
    while (!taken && Date.now() < until) taken = await a.lease('ep', 'node-a', 60_000);
    expect(taken).toBe(true);
  });

  it('records failures and a success as the endpoint state every node reads', async () => {
    const [a, b] = await open();
    await a.record('st', { ok: false, at: 10, error: 'HTTP 500 Internal Server Error', nextAttemptAt: 20 });
    await a.record('st', { ok: false, at: 30, error: 'timed out after 1000 ms', nextAttemptAt: 50 });
    expect(await b.state('st')).toEqual({
      pending: 0,
      attempts: 2,
      nextAttemptAt: 50,
      lastFailureAt: 30,
      lastError: 'timed out after 1000 ms',
    });
    await b.record('st', { ok: true, at: 60 });
    expect(await a.state('st')).toMatchObject({ attempts: 0, nextAttemptAt: 0, lastSuccessAt: 60 });
  });

  it('refuses an endpoint name that is not one a config can hold', async () => {
    const [a] = await open();
    await expect(a.append('bad name', ['{}'], 10)).rejects.toThrow(/letters, digits/);
  });
});

describe('webhook outbox: embedded store', () => {
  it('pending events survive closing and reopening the store', async () => {
    const path = fixtures.storePath();
    const first = fixtures.embedded(path);
    await first.webhookOutbox.append('keep', ['{"a":1}', '{"a":2}'], 10);
    await first.close();
    fixtures.closed();
    const again = fixtures.embedded(path);
    expect((await again.webhookOutbox.head('keep', 10)).map((e) => e.payload)).toEqual([
      '{"a":1}',
      '{"a":2}',
    ]);
  });

  it('a version 5 store gains the outbox tables and keeps its mail', async () => {
    const path = fixtures.storePath();
    const q = fixtures.embedded(path);
    const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'Before'));
    await q.close();
    fixtures.closed();
    const raw = new Database(path);
    raw.exec('DROP TABLE webhook_events; DROP TABLE webhook_endpoints; PRAGMA user_version = 5;');
    raw.close();
    const upgraded = fixtures.embedded(path);
    expect((await upgraded.details(id))?.envelope?.mailFrom).toBe('alice@src.test');
    expect(await upgraded.webhookOutbox.append('app', ['{"b":1}'], 10)).toBe(1);
    expect((await upgraded.webhookOutbox.head('app', 10)).map((e) => e.payload)).toEqual(['{"b":1}']);
  });
});

describe.each([
  ['embedded', async (): Promise<QueueBackend> => fixtures.embedded()],
  ['redis, tern engine', async (): Promise<QueueBackend> => fixtures.onRedis(undefined, { engine: 'tern' })],
  [
    'redis, bullmq engine',
    async (): Promise<QueueBackend> => fixtures.onRedis(undefined, { engine: 'bullmq' }),
  ],
])('webhook events written with the message: %s', (_name, open) => {
  /** One `queued` event per recipient, for each endpoint, as the app's sink builds them. */
  function outbox(
    seen: string[],
    endpoints: readonly [string, number][],
  ): (queueId: string) => OutboxWrite[] {
    return (queueId) => {
      seen.push(queueId);
      return endpoints.map(([endpoint, cap]) => ({
        endpoint,
        cap,
        payloads: [
          `{"type":"queued","queueId":"${queueId}","n":1}`,
          `{"type":"queued","queueId":"${queueId}","n":2}`,
        ],
      }));
    };
  }

  it('are in the outbox when the enqueue resolves, behind events written before, up to the cap', async () => {
    const q = await open();
    const box = q.webhookOutbox as WebhookOutbox;
    await box.append('app', ['{"type":"earlier"}'], 10);
    await box.append('full', ['{"a":1}', '{"a":2}'], 10);
    const seen: string[] = [];
    const writes: OutboxWrite[] = [];
    const build = outbox(seen, [
      ['app', 10],
      ['full', 3],
    ]);
    const id = await q.enqueue(testMessage('a@src.test', ['b@x.test'], 'WithEvents'), {
      outbox: (queueId) => {
        writes.push(...build(queueId));
        return writes;
      },
    });
    expect(seen).toEqual([id]);
    expect((await box.head('app', 10)).map((e) => e.payload)).toEqual([
      '{"type":"earlier"}',
      `{"type":"queued","queueId":"${id}","n":1}`,
      `{"type":"queued","queueId":"${id}","n":2}`,
    ]);
    // The cap holds as for `append`: one more fitted, the other is the caller's to count as dropped.
    expect((await box.head('full', 10)).map((e) => e.payload)).toEqual([
      '{"a":1}',
      '{"a":2}',
      `{"type":"queued","queueId":"${id}","n":1}`,
    ]);
    expect(writes.map((w) => w.kept)).toEqual([2, 1]);
    // Events appended later come after them (the order an endpoint receives).
    await box.append('app', ['{"type":"delivered"}'], 10);
    expect((await box.head('app', 10)).at(-1)?.payload).toBe('{"type":"delivered"}');
    expect(await q.inspect(id)).not.toBeNull();
  });

  it('a message quarantined on arrival has its events written too', async () => {
    const q = await open();
    const writes: OutboxWrite[] = [];
    const id = await q.enqueue(
      { ...testMessage('a@src.test', ['b@x.test'], 'Quarantined'), hold: 'spam score 12' },
      {
        outbox: (queueId) => {
          writes.push({ endpoint: 'app', cap: 10, payloads: [`{"type":"held","queueId":"${queueId}"}`] });
          return writes;
        },
      },
    );
    expect((await (q.webhookOutbox as WebhookOutbox).head('app', 10)).map((e) => e.payload)).toEqual([
      `{"type":"held","queueId":"${id}"}`,
    ]);
    expect(writes[0]?.kept).toBe(1);
    expect((await q.inspect(id))?.jobs[0]?.state).toBe('held');
  });

  it('a message without outbox writes (or with none to make) writes no event', async () => {
    const q = await open();
    await q.enqueue(testMessage('a@src.test', ['b@x.test'], 'NoEvents'));
    await q.enqueue(testMessage('a@src.test', ['b@x.test'], 'EmptyEvents'), {
      outbox: () => [{ endpoint: 'app', cap: 10, payloads: [] }],
    });
    expect(await (q.webhookOutbox as WebhookOutbox).state('app')).toMatchObject({ pending: 0 });
  });

  it('a refused enqueue leaves no event (and no message)', async () => {
    const q = await open();
    const seen: string[] = [];
    // The second endpoint's name cannot be an outbox key: the write fails as a whole.
    const build = outbox(seen, [
      ['app', 10],
      ['bad name', 10],
    ]);
    await expect(
      q.enqueue(testMessage('a@src.test', ['b@x.test'], 'Refused'), { outbox: build }),
    ).rejects.toThrow(/letters, digits/);
    expect(await (q.webhookOutbox as WebhookOutbox).head('app', 10)).toEqual([]);
    for (const id of seen) expect(await q.inspect(id)).toBeNull();
    // Nor counts against the cap: an outbox of two takes the next message's two.
    const writes: OutboxWrite[] = [];
    await q.enqueue(testMessage('a@src.test', ['b@x.test'], 'Next'), {
      outbox: (queueId) => {
        writes.push(...outbox([], [['app', 2]])(queueId));
        return writes;
      },
    });
    expect(writes.map((w) => w.kept)).toEqual([2]);
    expect(await (q.webhookOutbox as WebhookOutbox).state('app')).toMatchObject({ pending: 2 });
  });
});

describe.each([
  'tern',
  'bullmq',
] as const)('webhook events written with the message: redis, %s engine, withdrawn', (engine) => {
  it('a replica that does not confirm withdraws the message and its events', async () => {
    // A lone Redis has no replica: WAIT confirms none, so every enqueue is withdrawn (451).
    const q = await fixtures.onRedis(undefined, { engine, replicaAck: { replicas: 1, timeoutMs: 50 } });
    await q.webhookOutbox.append('app', ['{"type":"earlier"}'], 10);
    let queueId = '';
    const refused = q.enqueue(testMessage('a@src.test', ['b@x.test', 'c@y.test'], 'Withdrawn'), {
      outbox: (id) => {
        queueId = id;
        return [
          { endpoint: 'app', cap: 10, payloads: ['{"type":"queued","n":1}', '{"type":"queued","n":2}'] },
          { endpoint: 'other', cap: 10, payloads: ['{"type":"queued","n":1}'] },
        ];
      },
    });
    await expect(refused).rejects.toThrow(QueueUnavailableError);
    // The withdraw went out on the enqueue's connection, as the outbox's reads do: they see it done.
    expect((await q.webhookOutbox.head('app', 10)).map((e) => e.payload)).toEqual(['{"type":"earlier"}']);
    expect(await q.webhookOutbox.head('other', 10)).toEqual([]);
    expect(await q.inspect(queueId)).toBeNull();
    // Later events still take the next sequence numbers: the order stays the order written.
    await q.webhookOutbox.append('app', ['{"type":"later"}'], 10);
    expect((await q.webhookOutbox.head('app', 10)).map((e) => e.payload)).toEqual([
      '{"type":"earlier"}',
      '{"type":"later"}',
    ]);
  });
});
