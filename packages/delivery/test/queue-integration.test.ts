// The Deliver contract end to end: the real embedded queue drives `deliver`, which talks SMTP to a sink.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memorySource } from '@tern/plugin-api/host';
import { type DeliveryReport, openEmbeddedQueue } from '@tern/queue';
import { type SmtpSink, startDnsServer, startSmtpSink, type TestDns, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDeliverer } from '../src/index.js';
import { SIMPLE_MESSAGE } from './helpers/jobs.js';

let dns: TestDns;
let sink: SmtpSink;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tern-delivery-queue-'));
  sink = await startSmtpSink({
    rcptReply: (address) =>
      address.startsWith('gone@') ? { code: 550, message: '5.1.1 No such user' } : undefined,
  });
  dns = await startDnsServer({
    'example.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] },
    'mx.example.test': { A: ['127.0.0.1'] },
  });
});

afterAll(async () => {
  await Promise.all([sink.stop(), dns.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

it('delivers what the embedded queue hands over and settles each recipient by its outcome', async () => {
  const queue = openEmbeddedQueue({ path: join(dir, 'queue.db'), pollIntervalMs: 100 });
  const deliverer = createDeliverer({
    hostname: 'out.tern.test',
    port: sink.port,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
  });
  try {
    const reports: { queueId: string; report: DeliveryReport }[] = [];
    await queue.startWorker(async (job, message) => {
      const report = await deliverer.deliver(job, message);
      reports.push({ queueId: job.queueId, report });
      return report;
    });
    const queueId = await queue.enqueue({
      envelope: {
        mailFrom: 'sender@origin.test',
        recipients: [{ address: 'alice@example.test' }, { address: 'gone@example.test' }],
      },
      content: memorySource([Buffer.from(SIMPLE_MESSAGE)]),
      receivedAt: Date.now(),
    });
    const [msg] = await sink.waitFor(1);
    expect(msg?.rcptTo).toEqual(['alice@example.test']);
    expect(msg?.raw.toString()).toBe(SIMPLE_MESSAGE);
    // alice is delivered and gone@ failed permanently: the job is done (the bounce is the queue's business).
    // alice delivered, gone@ failed for good: nothing is left to retry, so the message is finished.
    await waitFor(async () => (await queue.inspect(queueId)) === null);
    const report = reports.find((r) => r.queueId === queueId)?.report;
    expect(report?.recipients.map((r) => `${r.address}:${r.result}:${r.reply.enhanced}`)).toEqual([
      'alice@example.test:delivered:2.0.0',
      'gone@example.test:failed:5.1.1',
    ]);
  } finally {
    await queue.close();
    await deliverer.close();
  }
});
