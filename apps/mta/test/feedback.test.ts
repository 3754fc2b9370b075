// Asynchronous bounces and complaints end to end, on both backends: a real tern (in this process,
// so its platform events can be heard) delivers with VERP on to a real receiving server, which sees
// one signed return path per recipient. Later, a Postfix-shaped DSN (swaks), a Yahoo-shaped ARF
// report (Python's smtplib) and a bounce in prose come back over SMTP to the bounce domain: each
// lands in the original message's timeline (as the admin API shows it), suppresses the recipient
// with category and source, and is emitted as a platform event. Forged return paths change nothing.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recipientTag, returnPathFor, verifyReturnPath } from '@tern/delivery';
import { type PlatformEvent, silentLogger } from '@tern/plugin-api';
import { isQueueOperations, type TimelineEvent } from '@tern/queue';
import {
  freePort,
  type SmtpSink,
  smtpDialog,
  startRedis,
  startSmtpSink,
  type TestRedis,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config.js';
import { type RunningMta, startMta } from '../src/mta.js';
import { fixture, smtplibFrom, swaksFrom } from './feedback-reports.js';
import { sendMail } from './ops-fixtures/smtp.js';

const VERP = { domain: 'bounce.tern.test', secret: 'feedback-test-secret-0123456789' };
const TOKEN = 'feedback-admin-token-0123456789';

let sink: SmtpSink;
let redis: TestRedis;
const dir = mkdtempSync(join(tmpdir(), 'tern-feedback-'));

beforeAll(async () => {
  sink = await startSmtpSink();
  redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
});

afterAll(async () => {
  await sink?.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function rcptReply(port: number, to: string): Promise<string> {
  const smtp = await smtpDialog(port);
  try {
    await smtp.read();
    await smtp.command('EHLO mx.dest.test');
    await smtp.command('MAIL FROM:<>');
    const reply = await smtp.command(`RCPT TO:<${to}>`);
    await smtp.command('QUIT').catch(() => '');
    return reply;
  } finally {
    smtp.close();
  }
}

describe.each([
  ['embedded', (): Record<string, unknown> => ({ backend: 'embedded', path: join(dir, 'queue.db') })],
  ['redis', (): Record<string, unknown> => ({ backend: 'redis', url: redis.url, prefix: 'fbE2E' })],
])('asynchronous bounces and complaints: %s', (tag, queue) => {
  let mta: RunningMta;
  let port: number;
  let adminUrl: string;
  const events: PlatformEvent[] = [];
  const from = `news-${tag}@shop.test`;
  const gone = `gone-${tag}@dest.test`;
  const angry = `angry-${tag}@dest.test`;
  const legacy = `legacy-${tag}@dest.test`;
  const fine = `fine-${tag}@dest.test`;
  let queueId: string;
  /** The return path the receiving server saw for each recipient. */
  const seen = new Map<string, string>();

  beforeAll(async () => {
    port = await freePort();
    const adminPort = await freePort();
    const config = validateConfig(
      {
        hostname: 'tern.test',
        listeners: [{ kind: 'mx', port }],
        localDomains: ['example.test'],
        delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
        queue: { ...queue(), retry: { intervals: ['1s'], maxAge: '1h' } },
        admin: { listen: `127.0.0.1:${adminPort}`, token: TOKEN },
        bounces: { returnPath: VERP },
        intake: { spoolDir: join(dir, `spool-${tag}`) },
      },
      dir,
    );
    mta = await startMta(config, silentLogger);
    mta.events.on((event) => events.push(event));
    adminUrl = mta.adminUrl as string;
  }, 30_000);

  afterAll(async () => {
    await mta?.close();
  });

  async function timeline(id: string): Promise<TimelineEvent[]> {
    const response = await fetch(`${adminUrl}/api/messages/${id}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    if (response.status !== 200) return [];
    return ((await response.json()) as { timeline: TimelineEvent[] }).timeline;
  }

  async function suppression(address: string): Promise<Record<string, unknown> | undefined> {
    const response = await fetch(`${adminUrl}/api/suppressions/shop.test/${encodeURIComponent(address)}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const body = (await response.json()) as Record<string, unknown>;
    return response.status === 200 && body.address === address ? body : undefined;
  }

  it('delivers each recipient in its own transaction with a signed return path', async () => {
    const sent = await sendMail(port, { from, to: [gone, angry, legacy, fine], subject: `Feedback ${tag}` });
    queueId = sent.queueId;
    await waitFor(
      () => sink.messages.filter((m) => m.rcptTo[0]?.endsWith(`-${tag}@dest.test`)).length >= 4,
      15_000,
    );
    for (const m of sink.messages.filter((x) => x.rcptTo[0]?.endsWith(`-${tag}@dest.test`))) {
      expect(m.rcptTo).toHaveLength(1);
      const rcpt = m.rcptTo[0] as string;
      expect(m.mailFrom).toMatch(/^b\+[0-9a-z]+\.[a-z2-7]{6}\.[a-z2-7]{10}@bounce\.tern\.test$/);
      expect(m.mailFrom.split('@')[0]?.length).toBeLessThanOrEqual(64);
      expect(verifyReturnPath(VERP, m.mailFrom)).toEqual({ queueId, tag: recipientTag(VERP.secret, rcpt) });
      seen.set(rcpt, m.mailFrom);
    }
    expect(seen.get(gone)).toBe(returnPathFor(VERP, queueId, gone));
    // The original return path stays the message's, in its timeline.
    const received = (await timeline(queueId)).find((e) => e.type === 'received');
    expect(received).toMatchObject({ mailFrom: from });
  });

  it('a forged or unsigned return path at the bounce domain is refused at RCPT, and changes nothing', async () => {
    const good = seen.get(gone) as string;
    const forged = good.replace(/\.[a-z2-7]{10}@/, '.aaaaaaaaaa@');
    expect(await rcptReply(port, forged)).toBe(`550 5.1.1 <${forged}>: no such return path`);
    expect(await rcptReply(port, `someone@${VERP.domain}`)).toMatch(/^550 5\.1\.1/);
    expect(await rcptReply(port, `b+${queueId.toLowerCase()}@${VERP.domain}`)).toMatch(/^550 5\.1\.1/);
    // Never relayed through, even from a network that may relay: it is ours, and it is checked.
    const refused = await swaksFrom(port, forged, fixture('postfix-dsn.eml', { TO: forged, RCPT: gone }));
    expect(refused).toContain('550 5.1.1');
  });

  it('a Postfix DSN to the VERP address: timeline, suppression (bounce, bad-mailbox), bounced event', async () => {
    const to = seen.get(gone) as string;
    const out = await swaksFrom(port, to, fixture('postfix-dsn.eml', { TO: to, RCPT: gone }));
    expect(out).toMatch(/250 2\.0\.0 queued as/);
    let bounce: TimelineEvent | undefined;
    await waitFor(async () => {
      bounce = (await timeline(queueId)).find((e) => e.type === 'async-bounce' && e.recipient === gone);
      return bounce !== undefined;
    }, 15_000);
    expect(bounce).toMatchObject({
      type: 'async-bounce',
      recipient: gone,
      action: 'failed',
      status: '5.1.1',
      category: 'bad-mailbox',
      format: 'dsn',
      reportingMta: 'mailstore.dest.test',
      diagnostic: expect.stringContaining('User unknown in virtual mailbox table'),
    });
    await waitFor(async () => (await suppression(gone)) !== undefined, 5000);
    expect(await suppression(gone)).toMatchObject({
      scope: 'shop.test',
      source: 'bounce',
      category: 'bad-mailbox',
      queueId,
      reason: expect.stringContaining('550 5.1.1'),
    });
    await waitFor(() => events.some((e) => e.type === 'bounced' && e.recipient === gone), 5000);
    expect(events.find((e) => e.type === 'bounced' && e.recipient === gone)).toMatchObject({
      source: 'dsn',
      queueId,
      mailFrom: from,
      senderDomain: 'shop.test',
      code: 550,
      enhanced: '5.1.1',
      category: 'bad-mailbox',
    });
    // And the suppression works: the next RCPT from shop.test for it is refused.
    const smtp = await smtpDialog(port);
    await smtp.read();
    await smtp.command('EHLO client.test');
    await smtp.command(`MAIL FROM:<${from}>`);
    expect(await smtp.command(`RCPT TO:<${gone}>`)).toMatch(/^550 5\.1\.1 .*suppressed for shop\.test/);
    smtp.close();
  });

  it('an ARF report (Yahoo-shaped, to abuse@) names the VERP address inside: complaint, suppression, complained event', async () => {
    const verp = seen.get(angry) as string;
    const report = fixture('arf-complaint.eml', {
      TO: `abuse@${VERP.domain}`,
      ORIGINAL_FROM: verp,
      RETURN_PATH: verp,
      RCPT: angry,
    });
    expect(await smtplibFrom(port, `abuse@${VERP.domain}`, report)).toBe(0);
    let complaint: TimelineEvent | undefined;
    await waitFor(async () => {
      complaint = (await timeline(queueId)).find((e) => e.type === 'complaint');
      return complaint !== undefined;
    }, 15_000);
    expect(complaint).toMatchObject({
      type: 'complaint',
      recipient: angry,
      feedbackType: 'abuse',
      userAgent: 'Yahoo!-Mail-Feedback/2.0',
    });
    await waitFor(async () => (await suppression(angry)) !== undefined, 5000);
    expect(await suppression(angry)).toMatchObject({ scope: 'shop.test', source: 'complaint', queueId });
    await waitFor(() => events.some((e) => e.type === 'complained'), 5000);
    expect(events.filter((e) => e.type === 'complained')).toEqual([
      expect.objectContaining({ source: 'arf', recipient: angry, queueId, senderDomain: 'shop.test' }),
    ]);
  });

  it('a bounce in prose is matched by its VERP address alone', async () => {
    const to = seen.get(legacy) as string;
    await swaksFrom(port, to, fixture('plain-bounce.eml', { TO: to }));
    let bounce: TimelineEvent | undefined;
    await waitFor(async () => {
      bounce = (await timeline(queueId)).find((e) => e.type === 'async-bounce' && e.recipient === legacy);
      return bounce !== undefined;
    }, 15_000);
    expect(bounce).toMatchObject({ format: 'plain', action: 'failed', category: 'bad-mailbox' });
    await waitFor(async () => (await suppression(legacy)) !== undefined, 5000);
    expect(await suppression(legacy)).toMatchObject({ source: 'bounce', category: 'bad-mailbox' });
  });

  it('a report to abuse@ with a forged VERP address inside is read and dropped: nothing changes', async () => {
    const good = seen.get(fine) as string;
    const forged = good.replace(/\.[a-z2-7]{10}@/, '.bbbbbbbbbb@');
    const before = events.length;
    const report = fixture('arf-complaint.eml', {
      TO: `abuse@${VERP.domain}`,
      ORIGINAL_FROM: forged,
      RETURN_PATH: forged,
      RCPT: fine,
    });
    const out = await swaksFrom(port, `abuse@${VERP.domain}`, report);
    const reportId = /queued as (\S+)/.exec(out)?.[1] as string;
    expect(reportId).toBeDefined();
    // The report's own timeline says what became of it.
    let attempt: TimelineEvent | undefined;
    await waitFor(async () => {
      attempt = (await timeline(reportId)).find((e) => e.type === 'attempt');
      return attempt !== undefined;
    }, 15_000);
    expect(attempt).toMatchObject({
      recipients: [
        expect.objectContaining({ result: 'delivered', text: 'arf report matched nothing; dropped' }),
      ],
    });
    expect(await suppression(fine)).toBeUndefined();
    // Nothing about the original message or its recipient; the report itself is mail like any
    // other (queued, delivered into the feedback reader: the platform events of every message).
    expect(events.slice(before).filter((e) => e.queueId === queueId || e.recipient === fine)).toEqual([]);
    expect(events.slice(before).map((e) => [e.type, e.queueId])).toEqual([
      ['queued', reportId],
      ['delivered', reportId],
    ]);
    expect((await timeline(queueId)).filter((e) => e.type === 'complaint')).toHaveLength(1);
    const q = mta.queue;
    expect(isQueueOperations(q) && (await q.details(queueId))?.timeline.length).toBeGreaterThan(0);
  });

  it('counts the reports read by kind and result on /metrics', async () => {
    const response = await fetch(`${adminUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const text = await response.text();
    const count = (kind: string, result: string): number =>
      Number(
        new RegExp(`^tern_feedback_reports_total\\{kind="${kind}",result="${result}"\\} (\\d+)$`, 'm').exec(
          text,
        )?.[1] ?? 0,
      );
    // The tests above: one DSN, one ARF and one prose bounce matched; the forged ARF matched nothing.
    expect(count('dsn', 'matched')).toBe(1);
    expect(count('arf', 'matched')).toBe(1);
    expect(count('plain', 'matched')).toBe(1);
    expect(count('arf', 'unmatched')).toBe(1);
    expect(count('unknown', 'deferred')).toBe(0);
  });
});
