// The sending platform of issue 15 working together, on both queue backends: an application posts
// mail over HTTP (an API key, an Idempotency-Key); tern delivers it with a signed VERP return path to
// a real receiving SMTP server that refuses one mailbox at RCPT; a DSN and an ARF complaint come back
// later over SMTP (swaks, Python's smtplib) to the bounce domain; every outcome reaches a real HTTP
// receiver as a webhook event whose X-Tern-Signature it verifies; bounced and complaining recipients
// end up on the suppression list (read back through the admin API), and the HTTP API then refuses
// them with 422 recipient_suppressed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyReturnPath } from '@tern/delivery';
import { silentLogger } from '@tern/plugin-api';
import { isQueueOperations, type QueueOperations } from '@tern/queue';
import { type SmtpSink, startRedis, startSmtpSink, type TestRedis, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config.js';
import { addApiKey } from '../src/http/api-keys.js';
import { type RunningMta, startMta } from '../src/mta.js';
import { fixture, smtplibFrom, swaksFrom } from './feedback-reports.js';
import {
  type ReceivedEvent,
  startWebhookReceiver,
  typesOf,
  type WebhookReceiver,
} from './webhook-receiver.js';

const VERP = { domain: 'bounce.tern.test', secret: 'platform-e2e-verp-secret-0123' };
const WEBHOOK_SECRET = 'platform-e2e-webhook-secret';
const ADMIN_TOKEN = 'platform-e2e-admin-token-0123456789';
const FAST_SCRYPT = { N: 1024, r: 8, p: 1 };

const dir = mkdtempSync(join(tmpdir(), 'tern-e2e-platform-'));
const keysFile = join(dir, 'api-keys');
let sink: SmtpSink;
let redis: TestRedis;
let token: string;

beforeAll(async () => {
  [sink, redis] = await Promise.all([
    // The receiving server: `gone-…` mailboxes do not exist (a synchronous hard bounce).
    startSmtpSink({
      hostname: 'mx.dest.test',
      rcptReply: (address) =>
        address.startsWith('gone-') ? { code: 550, message: '5.1.1 No such user here' } : undefined,
    }),
    startRedis({ appendonly: true, appendfsync: 'always', maxmemoryPolicy: 'noeviction' }),
  ]);
  token = await addApiKey(keysFile, 'shop-app', ['shop.test'], FAST_SCRYPT);
}, 60_000);

afterAll(async () => {
  await Promise.all([sink?.stop(), redis?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

describe.each(['embedded', 'redis'] as const)('the sending platform on the %s queue', (backend) => {
  let mta: RunningMta;
  let ops: QueueOperations;
  let receiver: WebhookReceiver;
  const once = `once-${backend}@dest.test`;
  const gone = `gone-${backend}@dest.test`;
  const later = `later-${backend}@dest.test`;
  const angry = `angry-${backend}@dest.test`;
  /** Queue id of the message to each recipient. */
  const queueIds = new Map<string, string>();

  beforeAll(async () => {
    receiver = await startWebhookReceiver(WEBHOOK_SECRET);
    const config = validateConfig(
      {
        hostname: 'tern.test',
        // The MX listener takes the reports sent back to the bounce domain.
        listeners: [{ kind: 'mx', host: '127.0.0.1', port: 0 }],
        localDomains: ['tern.test'],
        delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
        queue: {
          ...(backend === 'redis'
            ? { backend: 'redis', url: redis.url, prefix: 'platformE2E' }
            : { backend: 'embedded', path: 'queue.db' }),
          retry: { intervals: ['1s'], maxAge: '1h' },
        },
        intake: { spoolDir: 'spool' },
        admin: { listen: '127.0.0.1:0', token: ADMIN_TOKEN },
        http: { listen: '127.0.0.1:0', apiKeysFile: keysFile },
        bounces: { returnPath: VERP },
        suppression: { enabled: true },
        webhooks: {
          pollInterval: '100ms',
          endpoints: [
            {
              name: 'app',
              url: receiver.url,
              secret: WEBHOOK_SECRET,
              // Only what concerns this application's key: every event must carry it.
              filters: { senderDomains: ['shop.test'], apiKeys: ['shop-app'] },
              retry: { initialInterval: '200ms', maxInterval: '1s', maxAge: '1h' },
            },
          ],
        },
      },
      join(dir, backend),
    );
    mta = await startMta(config, silentLogger);
    if (!isQueueOperations(mta.queue)) throw new Error('the queue has no operations');
    ops = mta.queue;
  }, 60_000);

  afterAll(async () => {
    await mta?.close(5000);
    await receiver?.stop();
  });

  async function post(
    to: string,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${mta.injectionUrl}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...headers },
      body: JSON.stringify({
        from: { name: 'Shop', address: 'news@shop.test' },
        to: [to],
        subject: `Platform ${backend}`,
        text: 'Your order has shipped.',
        tags: ['orders'],
      }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  /** Posts a message to `to` and waits until the receiving server has it: the return path it saw. */
  async function postDelivered(to: string): Promise<string> {
    const res = await post(to);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const queueId = res.body.queueId as string;
    queueIds.set(to, queueId);
    await waitFor(() => typesOf(receiver.events, queueId, to).includes('delivered'), 15_000);
    const seen = sink.messages.filter((m) => m.rcptTo.includes(to));
    expect(seen).toHaveLength(1);
    const returnPath = seen[0]?.mailFrom as string;
    expect(verifyReturnPath(VERP, returnPath)?.queueId).toBe(queueId);
    return returnPath;
  }

  async function suppression(address: string): Promise<Record<string, unknown> | undefined> {
    const res = await fetch(`${mta.adminUrl}/api/suppressions/shop.test/${encodeURIComponent(address)}`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const body = (await res.json()) as Record<string, unknown>;
    return res.status === 200 && body.address === address ? body : undefined;
  }

  const event = (type: string, to: string): ReceivedEvent | undefined =>
    receiver.events.find((e) => e.type === type && e.queueId === queueIds.get(to) && e.recipient === to);

  it('the same Idempotency-Key twice: one queue id, one delivery, one queued and one delivered event', async () => {
    const key = { 'idempotency-key': `order-4711-${backend}` };
    const first = await post(once, key);
    const again = await post(once, key);
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    expect(again).toEqual({
      status: 200,
      body: expect.objectContaining({ queueId: first.body.queueId, duplicate: true }),
    });
    const queueId = first.body.queueId as string;
    queueIds.set(once, queueId);
    await waitFor(() => typesOf(receiver.events, queueId, once).includes('delivered'), 15_000);
    // Nothing left that could deliver it again: the queue has drained.
    await waitFor(async () => (await ops.summary()).totals.total === 0, 15_000);
    expect(sink.messages.filter((m) => m.rcptTo.includes(once))).toHaveLength(1);
    expect(typesOf(receiver.events, queueId, once)).toEqual(['queued', 'delivered']);
    expect(event('queued', once)).toMatchObject({
      source: 'injection',
      apiKey: 'shop-app',
      tags: ['orders'],
    });
    expect(event('delivered', once)).toMatchObject({
      source: 'smtp',
      code: 250,
      senderDomain: 'shop.test',
      apiKey: 'shop-app',
    });
  });

  it('a recipient refused at RCPT with 550 5.1.1: suppressed, and signed bounced (smtp) and suppressed events', async () => {
    const res = await post(gone);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const queueId = res.body.queueId as string;
    queueIds.set(gone, queueId);
    await waitFor(() => typesOf(receiver.events, queueId, gone).includes('suppressed'), 15_000);
    expect(typesOf(receiver.events, queueId, gone)).toEqual(['queued', 'bounced', 'suppressed']);
    expect(event('bounced', gone)).toMatchObject({
      source: 'smtp',
      code: 550,
      enhanced: '5.1.1',
      category: 'bad-mailbox',
      mailFrom: 'news@shop.test',
      apiKey: 'shop-app',
      tags: ['orders'],
    });
    expect(event('suppressed', gone)).toMatchObject({
      source: 'smtp',
      category: 'bad-mailbox',
      apiKey: 'shop-app',
    });
    expect(await suppression(gone)).toMatchObject({
      scope: 'shop.test',
      source: 'bounce',
      category: 'bad-mailbox',
      queueId,
      reason: expect.stringContaining('550 5.1.1'),
    });
  });

  it('a recipient accepted, then bounced by a DSN to the VERP return path: suppressed, signed bounced (dsn) event', async () => {
    const returnPath = await postDelivered(later);
    const out = await swaksFrom(
      mta.listeners[0]?.port as number,
      returnPath,
      fixture('postfix-dsn.eml', { TO: returnPath, RCPT: later }),
    );
    expect(out).toMatch(/250 2\.0\.0 queued as/);
    await waitFor(() => event('bounced', later) !== undefined, 15_000);
    expect(event('bounced', later)).toMatchObject({
      source: 'dsn',
      code: 550,
      enhanced: '5.1.1',
      category: 'bad-mailbox',
      mailFrom: 'news@shop.test',
      apiKey: 'shop-app',
      tags: ['orders'],
    });
    await waitFor(() => event('suppressed', later) !== undefined, 10_000);
    expect(event('suppressed', later)).toMatchObject({
      source: 'dsn',
      category: 'bad-mailbox',
      apiKey: 'shop-app',
    });
    expect(await suppression(later)).toMatchObject({
      scope: 'shop.test',
      source: 'bounce',
      category: 'bad-mailbox',
      queueId: queueIds.get(later),
    });
  });

  it('an ARF complaint to abuse@ the bounce domain: complained (arf) event and a suppression', async () => {
    const returnPath = await postDelivered(angry);
    const abuse = `abuse@${VERP.domain}`;
    const report = fixture('arf-complaint.eml', {
      TO: abuse,
      ORIGINAL_FROM: returnPath,
      RETURN_PATH: returnPath,
      RCPT: angry,
    });
    expect(await smtplibFrom(mta.listeners[0]?.port as number, abuse, report)).toBe(0);
    await waitFor(() => event('complained', angry) !== undefined, 15_000);
    expect(event('complained', angry)).toMatchObject({
      source: 'arf',
      senderDomain: 'shop.test',
      apiKey: 'shop-app',
      tags: ['orders'],
    });
    await waitFor(() => event('suppressed', angry) !== undefined, 10_000);
    expect(event('suppressed', angry)).toMatchObject({ source: 'arf', apiKey: 'shop-app' });
    expect(await suppression(angry)).toMatchObject({
      scope: 'shop.test',
      source: 'complaint',
      queueId: queueIds.get(angry),
    });
  });

  it('posting again to a suppressed recipient is refused with 422 recipient_suppressed, and nothing is queued', async () => {
    // The reports and tern's own DSN for the hard bounce have gone through: an empty queue.
    await waitFor(async () => (await ops.summary()).totals.total === 0, 15_000);
    for (const [to, source] of [
      [gone, 'bounce: bad-mailbox'],
      [later, 'bounce: bad-mailbox'],
      [angry, 'complaint'],
    ] as const) {
      const res = await post(to);
      expect(res).toEqual({
        status: 422,
        body: expect.objectContaining({
          code: 'recipient_suppressed',
          suppressed: [
            expect.objectContaining({
              recipient: to,
              scope: 'shop.test',
              source,
              since: expect.stringMatching(/^\d{4}-/),
            }),
          ],
        }),
      });
    }
    // A refusal queues nothing (and a 201 would have been durable before it was answered).
    expect((await ops.summary()).totals.total).toBe(0);
    // Every post the receiver got was signed with the endpoint's secret, and every event was taken.
    expect(receiver.posts.length).toBeGreaterThan(0);
    expect(receiver.posts.every((p) => p.signed)).toBe(true);
    expect(receiver.posts.reduce((n, p) => n + p.events, 0)).toBe(receiver.events.length);
  });
});
