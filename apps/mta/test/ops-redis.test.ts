// The operations side with the Redis backend and two tern processes on one private redis-server:
// one takes mail in (no worker), the other delivers. Either node's admin API answers for any
// message, with the intake verdicts of the node that accepted it.
import { type SmtpSink, startRedis, startSmtpSink, type TestRedis, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendMail } from './ops-fixtures/smtp.js';
import { type OpsTern, startOpsTern, stopAllOpsTern } from './ops-fixtures/tern.js';

const GATE = `[{
  name: 'gate',
  rcptTo(ctx) {
    if (ctx.recipient.address.startsWith('spam')) {
      return { kind: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'No spam here' } };
    }
  },
}]`;

let redis: TestRedis;
let sink: SmtpSink;
let intake: OpsTern;
let worker: OpsTern;

beforeAll(async () => {
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
  sink = await startSmtpSink();
  const shared = {
    localDomains: ['example.test'],
    delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
    queue: { backend: 'redis', url: redis.url, prefix: 'opsE2E', retry: { intervals: ['1s'], maxAge: '1h' } },
  };
  intake = await startOpsTern(shared, { plugins: GATE, args: ['--no-worker'] });
  worker = await startOpsTern(shared, { plugins: GATE });
});

afterAll(async () => {
  await stopAllOpsTern();
  await sink?.stop();
  await redis?.stop();
});

describe('operations on a shared Redis queue', () => {
  it('finds a message accepted on one node from the other, with its intake verdicts and delivery', async () => {
    const { body: suspended } = await worker.api('POST', '/api/destinations/shared.test/suspend', {
      for: '1h',
    });
    expect(suspended.suspendedUntil).toBeGreaterThan(Date.now());
    const sent = await sendMail(intake.port, {
      from: 'alice@src.test',
      to: ['bob@shared.test', 'spam@shared.test'],
      subject: 'Across nodes',
    });
    expect(sent.rcpt['spam@shared.test']).toMatch(/^550/);

    // Held on the intake node, seen held on the worker node; the suspension is shared too.
    expect(await intake.api('POST', `/api/messages/${sent.queueId}/hold`)).toMatchObject({
      status: 200,
      body: { held: 1 },
    });
    const { body: summary } = await intake.api('GET', '/api/queue/summary');
    expect(summary.destinations).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          domain: 'shared.test',
          total: 1,
          held: 1,
          suspendedUntil: suspended.suspendedUntil,
        }),
      ]),
    );
    const { body: onWorker } = await worker.api('GET', `/api/messages/${encodeURIComponent(sent.messageId)}`);
    expect(onWorker).toMatchObject({ queueId: sent.queueId, state: 'queued', held: true });
    expect(onWorker.timeline).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ type: 'received', listener: `mx-${intake.port}` }),
        expect.objectContaining({
          type: 'hook',
          plugin: 'gate',
          hook: 'rcptTo',
          outcome: 'reject',
          code: 550,
        }),
        expect.objectContaining({ type: 'operator', action: 'hold' }),
      ]),
    );

    expect((await worker.api('POST', `/api/messages/${sent.queueId}/release`)).status).toBe(200);
    expect(await worker.api('POST', '/api/destinations/shared.test/resume')).toMatchObject({ status: 200 });
    await sink.waitFor(1, 8000);
    expect(sink.messages[0]?.rcptTo).toEqual(['bob@shared.test']);
    await waitFor(
      async () => (await intake.api('GET', `/api/messages/${sent.queueId}`)).body.state === 'finished',
      5000,
    );
    const { body: done } = await intake.api('GET', `/api/messages/${sent.queueId}`);
    expect(done.timeline.at(-1)).toMatchObject({
      type: 'attempt',
      attempt: 1,
      recipients: [expect.objectContaining({ address: 'bob@shared.test', result: 'delivered' })],
    });
  });

  it('times a Redis PING and reads the shared queue depth on every scrape', async () => {
    await worker.api('POST', '/api/destinations/depth.test/suspend', { for: '1h' });
    await sendMail(intake.port, { from: 'alice@src.test', to: ['c@depth.test'], subject: 'Depth' });
    let text = '';
    await waitFor(async () => {
      text = await (await fetch(`${worker.url}/metrics`)).text();
      return text.includes('tern_queue_jobs{domain="depth.test",state="scheduled"} 1');
    }, 5000);
    const ping = Number(/^tern_redis_ping_seconds (\S+)/m.exec(text)?.[1]);
    expect(ping).toBeGreaterThan(0);
    expect(ping).toBeLessThan(1);
    // The worker node accepted nothing itself; the intake node counted the message.
    let intakeMetrics = '';
    await waitFor(async () => {
      intakeMetrics = await (await fetch(`${intake.url}/metrics`)).text();
      return intakeMetrics.includes('tern_queue_jobs{domain="depth.test",state="scheduled"} 1');
    }, 5000);
    expect(intakeMetrics).toMatch(/^tern_messages_accepted_total\{listener="mx-\d+"\} 2$/m);
  });
});
