// The webhook dispatcher against a real HTTP receiver and a real embedded outbox: signed batches in
// order, a 500 and a timeout keep the events (with the endpoint's back-off and last error), a
// recovered receiver gets them all; events past maxAge are dropped and counted, a full outbox
// refuses and counts; a message's queued events written by its enqueue are posted once, before
// later events; subscriptions and filters; the config block and its errors.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PlatformEvent } from '@tern/plugin-api';
import { memorySource } from '@tern/plugin-api/host';
import { type EmbeddedQueue, type OutboxWrite, openEmbeddedQueue } from '@tern/queue';
import { waitFor } from '@tern/testkit';
import { Registry } from 'prom-client';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../src/config.js';
import { PlatformEvents } from '../src/events.js';
import {
  backoffMs,
  subscribes,
  WebhookDispatcher,
  type WebhookEndpoint,
  webhookEndpoints,
} from '../src/webhooks/dispatcher.js';
import { signWebhook, verifyWebhook } from '../src/webhooks/signature.js';
import { startWebhookReceiver, type WebhookReceiver } from './webhook-receiver.js';

const SECRET = 'a-webhook-secret-of-some-length';
const dir = mkdtempSync(join(tmpdir(), 'tern-webhooks-'));
const open: { close(): Promise<void> }[] = [];

afterEach(async () => {
  for (const item of open.splice(0).reverse()) await item.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function endpoint(url: string, extra: Partial<WebhookEndpoint> = {}): WebhookEndpoint {
  return {
    name: 'app',
    url,
    events: new Set(['queued', 'delivered', 'bounced']),
    secret: SECRET,
    timeoutMs: 500,
    batchSize: 2,
    maxPending: 1000,
    initialIntervalMs: 100,
    maxIntervalMs: 300,
    maxAgeMs: 60_000,
    ...extra,
  };
}

async function setUp(extra: Partial<WebhookEndpoint> = {}): Promise<{
  receiver: WebhookReceiver;
  queue: EmbeddedQueue;
  events: PlatformEvents;
  registry: Registry;
  dispatcher: WebhookDispatcher;
}> {
  const receiver = await startWebhookReceiver(SECRET);
  open.push({ close: () => receiver.stop() });
  const queue = openEmbeddedQueue({ path: join(mkdtempSync(join(dir, 'q-')), 'queue.db') });
  open.push(queue);
  const registry = new Registry();
  const dispatcher = new WebhookDispatcher({
    endpoints: [endpoint(receiver.url, extra)],
    outbox: queue.webhookOutbox,
    logger: (await import('@tern/plugin-api')).silentLogger,
    registry,
    pollIntervalMs: 50,
  });
  open.push(dispatcher);
  const events = new PlatformEvents();
  events.on(dispatcher.accept);
  return { receiver, queue, events, registry, dispatcher };
}

function event(type: PlatformEvent['type'], n: number): PlatformEvent {
  return { type, at: Date.now(), queueId: `Q${n}`, recipient: `r${n}@dest.test`, senderDomain: 'shop.test' };
}

async function counter(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = await registry.getSingleMetric(name)?.get();
  const value = metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return value?.value ?? 0;
}

describe('webhook dispatcher', () => {
  it('posts signed batches in order; a 500 and a timeout keep them, and they all arrive once it answers', async () => {
    const { receiver, events, registry, dispatcher } = await setUp();
    dispatcher.start();
    for (let n = 1; n <= 3; n++) events.emit(event('queued', n));
    await waitFor(() => receiver.events.length === 3, 5000);
    expect(receiver.events.map((e) => e.queueId)).toEqual(['Q1', 'Q2', 'Q3']);
    // Batches of at most two, every one signed.
    expect(receiver.posts.map((p) => p.events)).toEqual([2, 1]);
    expect(receiver.posts.every((p) => p.signed)).toBe(true);
    expect(receiver.events[0]).toMatchObject({
      type: 'queued',
      recipient: 'r1@dest.test',
      id: expect.any(String),
    });

    receiver.mode = 'fail';
    events.emit(event('delivered', 4));
    await waitFor(
      async () => (await dispatcher.status())[0]?.lastError?.startsWith('HTTP 500') === true,
      5000,
    );
    const failing = (await dispatcher.status())[0];
    expect(failing).toMatchObject({ pending: 1, lastError: 'HTTP 500: receiver down for maintenance' });
    expect(failing?.attempts).toBeGreaterThanOrEqual(1);

    receiver.mode = 'hang';
    await waitFor(
      async () => (await dispatcher.status())[0]?.lastError === 'no answer within 500 ms',
      10_000,
    );
    expect(
      await counter(registry, 'tern_webhook_posts_total', { endpoint: 'app', outcome: 'timeout' }),
    ).toBeGreaterThan(0);
    // Not an event of a type the endpoint does not take.
    events.emit(event('deferred', 5));
    events.emit(event('bounced', 6));

    receiver.mode = 'ok';
    await waitFor(() => receiver.events.length === 5, 10_000);
    expect(receiver.events.map((e) => `${e.type} ${e.queueId}`)).toEqual([
      'queued Q1',
      'queued Q2',
      'queued Q3',
      'delivered Q4',
      'bounced Q6',
    ]);
    await waitFor(async () => (await dispatcher.status())[0]?.attempts === 0, 5000);
    expect((await dispatcher.status())[0]).toMatchObject({ pending: 0, lastSuccessAt: expect.any(Number) });
    expect(await counter(registry, 'tern_webhook_events_total', { endpoint: 'app', outcome: 'posted' })).toBe(
      5,
    );
    expect(
      await counter(registry, 'tern_webhook_posts_total', { endpoint: 'app', outcome: 'http_error' }),
    ).toBeGreaterThan(0);
  });

  it('drops and counts events kept longer than maxAge', async () => {
    const { receiver, events, registry, dispatcher } = await setUp({ maxAgeMs: 400 });
    receiver.mode = 'fail';
    dispatcher.start();
    events.emit(event('queued', 1));
    events.emit(event('queued', 2));
    await waitFor(
      async () =>
        (await counter(registry, 'tern_webhook_events_total', { endpoint: 'app', outcome: 'expired' })) === 2,
      5000,
    );
    expect((await dispatcher.status())[0]?.pending).toBe(0);
    receiver.mode = 'ok';
    events.emit(event('queued', 3));
    await waitFor(() => receiver.events.length === 1, 5000);
    expect(receiver.events[0]?.queueId).toBe('Q3');
  });

  it('a full outbox takes no more events and counts the dropped ones', async () => {
    const { receiver, events, registry, dispatcher } = await setUp({ maxPending: 3 });
    for (let n = 1; n <= 5; n++) events.emit(event('queued', n));
    await waitFor(
      async () =>
        (await counter(registry, 'tern_webhook_events_total', { endpoint: 'app', outcome: 'dropped' })) === 2,
      5000,
    );
    dispatcher.start();
    await waitFor(() => receiver.events.length === 3, 5000);
    expect(receiver.events.map((e) => e.queueId)).toEqual(['Q1', 'Q2', 'Q3']);
  });

  it("a message's queued events written by its enqueue are posted once, before later events; a full outbox counts its refusals", async () => {
    const { receiver, queue, events, registry, dispatcher } = await setUp({ maxPending: 2 });
    const recipients = [1, 2, 3].map((n) => ({ address: `r${n}@dest.test` }));
    let queued: PlatformEvent[] = [];
    let writes: OutboxWrite[] = [];
    const id = await queue.enqueue(
      {
        envelope: { mailFrom: 'news@shop.test', recipients },
        content: memorySource([Buffer.from('Subject: written with the message\r\n\r\nHello.\r\n')]),
        receivedAt: Date.now(),
      },
      {
        outbox: (queueId) => {
          queued = [1, 2, 3].map((n) => ({ ...event('queued', n), queueId }));
          writes = dispatcher.outboxWrites(queued);
          return writes;
        },
      },
    );
    // In the store with the message, as far as the cap let them.
    expect(writes).toMatchObject([{ endpoint: 'app', cap: 2, kept: 2 }]);
    expect((await queue.webhookOutbox.head('app', 10)).map((e) => JSON.parse(e.payload).queueId)).toEqual([
      id,
      id,
    ]);
    dispatcher.written(queued, writes);
    expect(
      await counter(registry, 'tern_webhook_events_total', { endpoint: 'app', outcome: 'dropped' }),
    ).toBe(1);
    // In-process listeners still hear them; the dispatcher does not write them a second time.
    const heard: PlatformEvent[] = [];
    events.on((e) => heard.push(e));
    for (const e of queued) events.emit(e);
    expect(heard).toEqual(queued);
    dispatcher.start();
    await waitFor(() => receiver.events.length === 2, 5000);
    events.emit({ ...event('delivered', 1), queueId: id });
    await waitFor(() => receiver.events.length >= 3, 5000);
    expect(receiver.events.map((e) => `${e.type} ${e.recipient}`)).toEqual([
      'queued r1@dest.test',
      'queued r2@dest.test',
      'delivered r1@dest.test',
    ]);
    // Nor tried to: a second write would have met the full outbox and been counted.
    expect(
      await counter(registry, 'tern_webhook_events_total', { endpoint: 'app', outcome: 'dropped' }),
    ).toBe(1);
  });

  it('stopping aborts a post in flight: no wait for its timeout, the batch kept, no failure recorded', async () => {
    const { receiver, queue, events, dispatcher } = await setUp({ timeoutMs: 60_000 });
    receiver.mode = 'hang';
    dispatcher.start();
    events.emit(event('queued', 1));
    await waitFor(() => receiver.posts.length === 1, 5000);
    const started = Date.now();
    await dispatcher.close();
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await queue.webhookOutbox.state('app')).toMatchObject({ pending: 1, attempts: 0 });
  });

  it('a test event is posted at once, signed, and its outcome told', async () => {
    const { receiver, dispatcher } = await setUp();
    expect(await dispatcher.test('app')).toMatchObject({ endpoint: 'app', outcome: 'success', status: 200 });
    expect(receiver.events).toEqual([expect.objectContaining({ type: 'test' })]);
    receiver.mode = 'fail';
    expect(await dispatcher.test('app')).toMatchObject({ outcome: 'http_error', status: 500 });
    await expect(dispatcher.test('nope')).rejects.toThrow('nope');
  });
});

describe('webhook subscriptions and signatures', () => {
  const base = endpoint('http://127.0.0.1:9/');
  it('filters by type, sender domain, tag and API key (every filter given, any value of each)', () => {
    const e: PlatformEvent = {
      type: 'delivered',
      at: 0,
      senderDomain: 'shop.test',
      tags: ['news'],
      apiKey: 'k1',
    };
    expect(subscribes(base, e)).toBe(true);
    expect(subscribes(base, { ...e, type: 'deferred' })).toBe(false);
    expect(subscribes({ ...base, senderDomains: new Set(['shop.test', 'x.test']) }, e)).toBe(true);
    expect(subscribes({ ...base, senderDomains: new Set(['other.test']) }, e)).toBe(false);
    expect(subscribes({ ...base, tags: new Set(['news', 'promo']) }, e)).toBe(true);
    expect(subscribes({ ...base, tags: new Set(['promo']) }, e)).toBe(false);
    expect(subscribes({ ...base, tags: new Set(['news']) }, { ...e, tags: undefined } as PlatformEvent)).toBe(
      false,
    );
    expect(subscribes({ ...base, apiKeys: new Set(['k1']) }, e)).toBe(true);
    expect(subscribes({ ...base, apiKeys: new Set(['k2']), tags: new Set(['news']) }, e)).toBe(false);
  });

  it('backs off exponentially with jitter, up to the longest interval', () => {
    const ep = { ...base, initialIntervalMs: 1000, maxIntervalMs: 8000 };
    expect([1, 2, 3, 4, 5, 9].map((a) => backoffMs(ep, a, 0.5))).toEqual([
      1000, 2000, 4000, 8000, 8000, 8000,
    ]);
    expect(backoffMs(ep, 2, 0)).toBe(1600);
    expect(backoffMs(ep, 2, 1)).toBe(2400);
  });

  it('signs t.body with HMAC-SHA256 and refuses a changed body, another secret or an old time', () => {
    const now = Date.now();
    const header = signWebhook(SECRET, '{"events":[]}', now);
    expect(header).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    expect(verifyWebhook(SECRET, '{"events":[]}', header, 300, now)).toBe(true);
    expect(verifyWebhook(SECRET, '{"events":[1]}', header, 300, now)).toBe(false);
    expect(verifyWebhook('another-secret-entirely', '{"events":[]}', header, 300, now)).toBe(false);
    expect(verifyWebhook(SECRET, '{"events":[]}', header, 300, now + 600_000)).toBe(false);
  });
});

describe('config.webhooks', () => {
  const listeners = [{ kind: 'mx', port: 2525 }];
  const problems = (webhooks: unknown): readonly string[] => {
    try {
      validateConfig({ listeners, localDomains: ['example.test'], webhooks }, dir);
      return [];
    } catch (error) {
      if (error instanceof ConfigError) return error.problems;
      throw error;
    }
  };

  it('resolves defaults and reads a secret file', () => {
    writeFileSync(join(dir, 'hook.secret'), `${SECRET}\n`);
    const config = validateConfig(
      {
        listeners,
        localDomains: ['example.test'],
        webhooks: {
          endpoints: [
            { name: 'app', url: 'https://app.test/hooks', secretFile: 'hook.secret', events: ['bounced'] },
          ],
        },
      },
      dir,
    );
    const [app] = webhookEndpoints(config);
    expect(app).toMatchObject({
      name: 'app',
      secret: SECRET,
      timeoutMs: 10_000,
      batchSize: 100,
      maxPending: 100_000,
      initialIntervalMs: 10_000,
      maxIntervalMs: 1_800_000,
      maxAgeMs: 259_200_000,
    });
    expect([...(app?.events ?? [])]).toEqual(['bounced']);
  });

  it('names the field and the fix for each mistake', () => {
    expect(
      problems({ endpoints: [{ name: 'App!', url: 'ftp://x', secret: SECRET, events: ['sent'] }] }),
    ).toEqual(
      expect.arrayContaining([
        expect.stringContaining('config.webhooks.endpoints[0].name'),
        expect.stringContaining('config.webhooks.endpoints[0].url: an http:// or https:// URL'),
        expect.stringContaining('config.webhooks.endpoints[0].events[0]'),
      ]),
    );
    expect(problems({ endpoints: [{ name: 'a', url: 'http://x.test/' }] })).toEqual([
      expect.stringContaining('config.webhooks.endpoints[0]: set exactly one of secret or secretFile'),
    ]);
    expect(
      problems({ endpoints: [{ name: 'a', url: 'http://x.test/', secretFile: 'missing.secret' }] }),
    ).toEqual([
      expect.stringContaining('config.webhooks.endpoints[0].secretFile: file not found: missing.secret'),
    ]);
    expect(
      problems({
        endpoints: [
          { name: 'a', url: 'http://x.test/', secret: SECRET },
          { name: 'a', url: 'http://y.test/', secret: SECRET },
        ],
      }),
    ).toEqual([expect.stringContaining('config.webhooks.endpoints[1].name: a is used twice')]);
  });
});
