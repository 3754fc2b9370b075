// Delivery webhooks end to end on both backends: a real tern (on Redis, an intake node and a
// worker node), real SMTP in and out (a sink that refuses one mailbox for good), and a real HTTP
// receiver that checks every signature. Events arrive per recipient and in order per message;
// while the receiver fails (500) or never answers, events wait in the outbox (visible in the admin
// API, `tern webhook list` and the metrics), survive a restart of tern, and all arrive once it
// answers again. `tern webhook test` posts a signed test event. With the intake node far from Redis
// (a slow link) and the worker near it, every message's `queued` still arrives before its outcome:
// it is written with the message, so no worker can deliver it first; and an intake node killed
// right after its 250 loses no `queued` event.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type SmtpSink, smtpDialog, startRedis, startSmtpSink, type TestRedis, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSlowLink } from './ops-fixtures/slow-link.js';
import { sendMail } from './ops-fixtures/smtp.js';
import { type OpsTern, startOpsTern, stopAllOpsTern, tern } from './ops-fixtures/tern.js';
import { startWebhookReceiver, typesOf, type WebhookReceiver } from './webhook-receiver.js';

const SECRET = 'an-end-to-end-webhook-secret';
let sink: SmtpSink;
let redis: TestRedis;
let receiver: WebhookReceiver;
const dir = mkdtempSync(join(tmpdir(), 'tern-webhooks-e2e-'));

beforeAll(async () => {
  sink = await startSmtpSink({
    rcptReply: (address) =>
      address.startsWith('gone') ? { code: 550, message: '5.1.1 No such user' } : undefined,
  });
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  receiver = await startWebhookReceiver(SECRET);
});

afterAll(async () => {
  await stopAllOpsTern();
  await sink?.stop();
  await redis?.stop();
  await receiver?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function config(queue: Record<string, unknown>): Record<string, unknown> {
  return {
    localDomains: ['example.test'],
    delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
    queue: { ...queue, retry: { intervals: ['1s'], maxAge: '1h' } },
    webhooks: {
      pollInterval: '100ms',
      endpoints: [
        {
          name: 'app',
          url: receiver.url,
          secret: SECRET,
          filters: { senderDomains: ['shop.test'] },
          timeout: '1s',
          batchSize: 10,
          retry: { initialInterval: '200ms', maxInterval: '1s', maxAge: '1h' },
        },
      ],
    },
  };
}

async function rcpt(port: number, from: string, to: string): Promise<string> {
  const smtp = await smtpDialog(port);
  try {
    await smtp.read();
    await smtp.command('EHLO client.test');
    await smtp.command(`MAIL FROM:<${from}>`);
    const reply = await smtp.command(`RCPT TO:<${to}>`);
    await smtp.command('QUIT').catch(() => '');
    return reply;
  } finally {
    smtp.close();
  }
}

describe.each([
  ['embedded', (): Record<string, unknown> => ({ backend: 'embedded', path: join(dir, 'queue.db') })],
  [
    'redis, two nodes',
    (): Record<string, unknown> => ({ backend: 'redis', url: redis.url, prefix: 'whE2E' }),
  ],
])('webhooks: %s', (name, queueConfig) => {
  const redisNodes = name.startsWith('redis');
  let intake: OpsTern;
  let worker: OpsTern;
  const tag = name.split(',')[0] as string;

  async function start(): Promise<void> {
    const shared = config(queueConfig());
    if (redisNodes) {
      intake = await startOpsTern(shared, { args: ['--no-worker'] });
      worker = await startOpsTern(shared);
    } else {
      intake = await startOpsTern(shared);
      worker = intake;
    }
  }
  async function stop(): Promise<void> {
    await intake.stop();
    if (worker !== intake) await worker.stop();
  }
  const endpoint = async (node: OpsTern) => (await node.api('GET', '/api/webhooks')).body.endpoints[0];

  beforeAll(async () => {
    receiver.mode = 'ok';
    await start();
  });

  it('delivered, bounced and suppressed recipients arrive signed, per recipient, in order per message', async () => {
    const fine = `fine-${tag}@dest.test`;
    const gone = `gone-${tag}@dest.test`;
    const sent = await sendMail(intake.port, {
      from: 'news@shop.test',
      to: [fine, gone],
      subject: `W ${tag}`,
    });
    // Another sender domain: filtered out.
    const other = await sendMail(intake.port, { from: 'a@other.test', to: [fine], subject: `O ${tag}` });
    await waitFor(
      () =>
        typesOf(receiver.events, sent.queueId, fine).includes('delivered') &&
        typesOf(receiver.events, sent.queueId, gone).includes('suppressed'),
      20_000,
    );
    expect(typesOf(receiver.events, sent.queueId, fine)).toEqual(['queued', 'delivered']);
    expect(typesOf(receiver.events, sent.queueId, gone)).toEqual(['queued', 'bounced', 'suppressed']);
    const bounced = receiver.events.find((e) => e.type === 'bounced' && e.queueId === sent.queueId);
    expect(bounced).toMatchObject({
      recipient: gone,
      mailFrom: 'news@shop.test',
      senderDomain: 'shop.test',
      code: 550,
      enhanced: '5.1.1',
      category: 'bad-mailbox',
      source: 'smtp',
      id: expect.any(String),
      at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    expect(receiver.events.find((e) => e.type === 'delivered' && e.queueId === sent.queueId)).toMatchObject({
      code: 250,
      source: 'smtp',
    });
    // The next RCPT for the suppressed recipient is refused, and that is an event too.
    expect(await rcpt(intake.port, 'news@shop.test', gone)).toMatch(/^550 5\.1\.1 /);
    await waitFor(
      () => receiver.events.some((e) => e.type === 'suppressed' && e.source === 'intake'),
      10_000,
    );
    expect(receiver.events.filter((e) => e.queueId === other.queueId)).toEqual([]);
    expect(receiver.posts.every((p) => p.signed)).toBe(true);
  });

  it('while the endpoint fails or hangs, events wait (and survive a restart); once it answers they all arrive', async () => {
    receiver.mode = 'fail';
    const to = `later-${tag}@dest.test`;
    const sent = await sendMail(intake.port, { from: 'news@shop.test', to: [to], subject: `L ${tag}` });
    // The message itself is delivered; its events wait.
    await waitFor(() => sink.messages.some((m) => m.rcptTo.includes(to)), 15_000);
    await waitFor(async () => (await endpoint(worker))?.lastError?.startsWith('HTTP 500') === true, 15_000);
    await waitFor(async () => (await endpoint(worker))?.pending >= 2, 15_000);
    const failing = await endpoint(intake);
    expect(failing).toMatchObject({ name: 'app', lastError: 'HTTP 500: receiver down for maintenance' });
    expect(failing.attempts).toBeGreaterThan(0);
    const list = await tern(['webhook', 'list', '--admin', intake.url, '--token', intake.token]);
    expect(list.status).toBe(0);
    expect(list.stdout).toMatch(/^app {2}FAILING {2}\d+ pending {2}http:\/\/127\.0\.0\.1:\d+\/hooks$/m);
    expect(list.stdout).toContain('last error: HTTP 500: receiver down for maintenance');
    // On Redis either node may be the one that posted: the counters of both together.
    const metrics = `${(await intake.api('GET', '/metrics')).body}${worker === intake ? '' : (await worker.api('GET', '/metrics')).body}`;
    expect(metrics).toMatch(/tern_webhook_posts_total\{endpoint="app",outcome="http_error"\} [1-9]/);
    expect(metrics).toMatch(/tern_webhook_pending\{endpoint="app"\} [1-9]/);

    receiver.mode = 'hang';
    await waitFor(async () => (await endpoint(worker))?.lastError === 'no answer within 1000 ms', 15_000);

    await stop();
    expect(typesOf(receiver.events, sent.queueId, to)).toEqual([]);
    receiver.mode = 'ok';
    await start();
    await waitFor(() => typesOf(receiver.events, sent.queueId, to).length === 2, 20_000);
    expect(typesOf(receiver.events, sent.queueId, to)).toEqual(['queued', 'delivered']);
    await waitFor(async () => (await endpoint(intake))?.pending === 0, 10_000);
    expect(await endpoint(intake)).toMatchObject({ attempts: 0, lastSuccessAt: expect.any(Number) });
    expect(receiver.posts.every((p) => p.signed)).toBe(true);
  });

  it("an operator's hold, bounce and suppression are events too", async () => {
    receiver.mode = 'ok';
    const domain = `held-${tag}.test`;
    const to = `someone@${domain}`;
    // A suspended destination keeps the message queued, so there is something to hold.
    expect((await worker.api('POST', `/api/destinations/${domain}/suspend`, { for: '1h' })).status).toBe(200);
    const sent = await sendMail(intake.port, { from: 'news@shop.test', to: [to], subject: `H ${tag}` });
    const held = await worker.api('POST', `/api/messages/${sent.queueId}/hold`, {});
    expect(held.body).toMatchObject({ held: 1 });
    await waitFor(() => typesOf(receiver.events, sent.queueId, to).includes('held'), 10_000);
    expect(typesOf(receiver.events, sent.queueId, to)).toEqual(['queued', 'held']);
    expect(receiver.events.find((e) => e.type === 'held' && e.queueId === sent.queueId)).toMatchObject({
      source: 'operator',
      senderDomain: 'shop.test',
    });
    const added = await worker.api('POST', '/api/suppressions', {
      scope: 'shop.test',
      address: `manual-${tag}@dest.test`,
      reason: 'asked to be removed',
    });
    expect(added.status).toBe(201);
    await waitFor(() => receiver.events.some((e) => e.recipient === `manual-${tag}@dest.test`), 10_000);
    expect(receiver.events.find((e) => e.recipient === `manual-${tag}@dest.test`)).toMatchObject({
      type: 'suppressed',
      source: 'operator',
      senderDomain: 'shop.test',
      text: 'asked to be removed',
    });
    // An operator's "bounce now" fails the pending recipient: a bounced event from the operator.
    const bounced = await worker.api('POST', `/api/messages/${sent.queueId}/bounce`, {
      reason: 'sender asked',
    });
    expect(bounced.body).toMatchObject({ ok: true, recipients: 1 });
    await waitFor(() => typesOf(receiver.events, sent.queueId, to).includes('bounced'), 10_000);
    expect(typesOf(receiver.events, sent.queueId, to)).toEqual(['queued', 'held', 'bounced']);
    expect(receiver.events.find((e) => e.type === 'bounced' && e.queueId === sent.queueId)).toMatchObject({
      source: 'operator',
      senderDomain: 'shop.test',
      code: 550,
      enhanced: '5.0.0',
      text: expect.stringContaining('sender asked'),
    });
  });

  it('tern webhook test posts a signed test event and says how it went', async () => {
    receiver.mode = 'ok';
    const before = receiver.events.length;
    const ok = await tern(['webhook', 'test', 'app', '--admin', worker.url, '--token', worker.token]);
    expect(ok.stdout).toMatch(/^app: test event accepted \(HTTP 200, \d+ ms\)$/m);
    expect(ok.status).toBe(0);
    expect(receiver.events.slice(before)).toEqual([expect.objectContaining({ type: 'test' })]);
    const unknown = await tern(['webhook', 'test', 'nope', '--admin', worker.url, '--token', worker.token]);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toContain('no webhook endpoint nope (configured: app)');
  });

  afterAll(async () => {
    await stop();
  });
});

describe.each(['tern', 'bullmq'])('webhooks: redis, intake node far from Redis (%s engine)', (engine) => {
  /**
   * An intake node (no worker) on a slow link to Redis and a worker node near it, both up; then
   * each command of the intake node takes 150 ms each way, so its own writes after an enqueue land
   * 300 ms or more after the worker node could take the message's job.
   */
  async function farIntake(prefix: string, test: (intake: OpsTern) => Promise<void>): Promise<void> {
    receiver.mode = 'ok';
    const link = await startSlowLink(redis.port);
    const queue = { backend: 'redis', prefix: `${prefix}${engine}`, engine };
    const intake = await startOpsTern(config({ ...queue, url: link.url }), { args: ['--no-worker'] });
    const worker = await startOpsTern(config({ ...queue, url: redis.url }));
    try {
      link.delayMs = 150;
      await test(intake);
    } finally {
      await intake.stop();
      await worker.stop();
      await link.stop();
    }
  }

  it("every message's queued arrives before its delivered, though the worker node delivers first", async () => {
    await farIntake('whSlow', async (intake) => {
      const to = (i: number): string => `far${i + 1}-${engine}@dest.test`;
      const sent = await Promise.all(
        [0, 1, 2, 3, 4].map((i) =>
          sendMail(intake.port, { from: 'news@shop.test', to: [to(i)], subject: `F${i}` }),
        ),
      );
      await waitFor(
        () => sent.every((m, i) => typesOf(receiver.events, m.queueId, to(i)).length === 2),
        30_000,
      ).catch(() => {});
      expect(sent.map((m, i) => typesOf(receiver.events, m.queueId, to(i)))).toEqual(
        sent.map(() => ['queued', 'delivered']),
      );
    });
  }, 60_000);

  it('an intake node killed right after its 250 loses no queued event', async () => {
    await farIntake('whKill', async (intake) => {
      const to = `killed-${engine}@dest.test`;
      const sent = await sendMail(intake.port, { from: 'news@shop.test', to: [to], subject: 'K' });
      // The 250 is in: the message is durable. The node dies before any later write of its lands.
      process.kill(intake.pid, 'SIGKILL');
      await waitFor(() => typesOf(receiver.events, sent.queueId, to).includes('delivered'), 30_000);
      // Posted in the order written: a `queued` in the outbox would have come first.
      expect(typesOf(receiver.events, sent.queueId, to)).toEqual(['queued', 'delivered']);
    });
  }, 60_000);
});
