// The sending platform of issue 15 working together, on both queue backends: an application posts
// mail over HTTP (an API key, an Idempotency-Key); tern delivers it with a signed VERP return path to
// a real receiving SMTP server that refuses one mailbox at RCPT; a DSN and an ARF complaint come back
// later over SMTP (swaks, Python's smtplib) to the bounce domain; every outcome reaches a real HTTP
// receiver as a webhook event whose X-Tern-Signature it verifies; bounced and complaining recipients
// end up on the suppression list (read back through the admin API), and the HTTP API then refuses
// them with 422 recipient_suppressed. Then tags as streams: a `tag:newsletter` list that stops
// newsletters (over HTTP and over SMTP with X-Tern-Tag, refused at DATA or bounced with a DSN)
// and never order mail, complaints about a newsletter that stop newsletters only, and the
// tern_tag_events_total counters on /metrics.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyReturnPath } from '@tern/delivery';
import { type PlatformEvent, silentLogger } from '@tern/plugin-api';
import { isQueueOperations, type QueueOperations } from '@tern/queue';
import { run, type SmtpSink, startRedis, startSmtpSink, type TestRedis, waitFor } from '@tern/testkit';
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
  const platform: PlatformEvent[] = [];

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
        suppression: { enabled: true, tagScopes: ['Newsletter'] },
        metrics: { tags: ['newsletter', 'orders'] },
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
    // Every event, SMTP-submitted mail's too (the webhook endpoint hears only the API key's).
    mta.events.on((e) => platform.push(e));
  }, 60_000);

  afterAll(async () => {
    await mta?.close(5000);
    await receiver?.stop();
  });

  async function post(
    to: string,
    headers: Record<string, string> = {},
    tags: readonly string[] = ['orders'],
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${mta.injectionUrl}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...headers },
      body: JSON.stringify({
        from: { name: 'Shop', address: 'news@shop.test' },
        to: [to],
        subject: `Platform ${backend}`,
        text: 'Your order has shipped.',
        tags,
      }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  /** Posts a message to `to` and waits until the receiving server has it: the return path it saw. */
  async function postDelivered(to: string, tags?: readonly string[]): Promise<string> {
    const res = await post(to, {}, tags);
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

  async function suppression(
    address: string,
    scope = 'shop.test',
  ): Promise<Record<string, unknown> | undefined> {
    const res = await fetch(`${mta.adminUrl}/api/suppressions/${scope}/${encodeURIComponent(address)}`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const body = (await res.json()) as Record<string, unknown>;
    return res.status === 200 && body.address === address ? body : undefined;
  }

  /** An ARF complaint about the message `to` got through `returnPath`, sent to abuse@ the bounce domain by smtplib. */
  async function complain(to: string, returnPath: string): Promise<void> {
    const abuse = `abuse@${VERP.domain}`;
    const report = fixture('arf-complaint.eml', {
      TO: abuse,
      ORIGINAL_FROM: returnPath,
      RETURN_PATH: returnPath,
      RCPT: to,
    });
    expect(await smtplibFrom(mta.listeners[0]?.port as number, abuse, report)).toBe(0);
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
    await complain(angry, await postDelivered(angry));
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

  // Tags as streams: `tag:newsletter` is a list of its own (suppression.tagScopes).
  const unsub = `unsub-${backend}@dest.test`;
  const fresh = `fresh-${backend}@dest.test`;
  const fan = `fan-${backend}@dest.test`;
  const dead = `gone-news-${backend}@dest.test`;

  async function admin(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: { error?: string; entries?: { address: string }[] } }> {
    const res = await fetch(`${mta.adminUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return {
      status: res.status,
      body: (await res.json()) as { error?: string; entries?: { address: string }[] },
    };
  }

  /** A newsletter submitted over SMTP by Python's smtplib from 127.0.0.1 (a trusted network): the DATA reply. */
  async function submitNewsletter(to: readonly string[]): Promise<{ code: number; text: string }> {
    const script = [
      'import json, smtplib, sys',
      "s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))",
      'try:',
      '    s.sendmail(sys.argv[2], sys.argv[3].split(","), sys.stdin.buffer.read())',
      "    print(json.dumps({'code': 250, 'text': ''}))",
      'except smtplib.SMTPDataError as e:',
      "    print(json.dumps({'code': e.smtp_code, 'text': e.smtp_error.decode()}))",
      's.quit()',
    ].join('\n');
    const message = [
      'From: Shop <news@shop.test>',
      `To: ${to.join(', ')}`,
      'Subject: This week at the shop',
      'X-Tern-Tag: newsletter',
      '',
      'New in the shop this week.',
      '',
    ].join('\r\n');
    const result = await run(
      'python3',
      ['-c', script, String(mta.listeners[0]?.port), 'news@shop.test', to.join(',')],
      {
        input: message,
      },
    );
    expect(result.status, result.output).toBe(0);
    return JSON.parse(result.stdout) as { code: number; text: string };
  }

  it('the admin API takes tag:<name> scopes (lower-cased) and refuses a scope that is not a tag', async () => {
    const added = await admin('POST', '/api/suppressions', {
      scope: 'tag:Newsletter',
      address: unsub,
      reason: 'unsubscribed from the newsletter',
    });
    expect(added.status, JSON.stringify(added.body)).toBeLessThan(300);
    expect(await suppression(unsub, 'tag:newsletter')).toMatchObject({
      scope: 'tag:newsletter',
      source: 'manual',
    });
    const listed = await admin('GET', '/api/suppressions?scope=tag:newsletter');
    expect(listed.body.entries?.map((e) => e.address)).toEqual([unsub]);
    const bad = await admin('POST', '/api/suppressions', { scope: 'tag:no spaces', address: unsub });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/^scope: "tag:no spaces" is not .*tag like tag:newsletter/);
    // Only the newsletter stream: the sender domain's list does not have it.
    expect(await suppression(unsub)).toBeUndefined();
  });

  it('HTTP: a newsletter to a recipient on tag:newsletter is refused with 422 naming the scope; order mail to it is delivered', async () => {
    expect(await post(unsub, {}, ['newsletter'])).toEqual({
      status: 422,
      body: expect.objectContaining({
        code: 'recipient_suppressed',
        suppressed: [
          expect.objectContaining({ recipient: unsub, scope: 'tag:newsletter', source: 'manual' }),
        ],
      }),
    });
    // Order mail (and a tag that is not counted by name, for the metrics) still goes.
    await postDelivered(unsub, ['orders', 'misc']);
  });

  it('SMTP with X-Tern-Tag: every recipient on tag:newsletter → 550 5.7.1 at DATA, a suppressed event, nothing queued', async () => {
    const reply = await submitNewsletter([unsub]);
    expect(reply.code).toBe(550);
    expect(reply.text).toMatch(
      new RegExp(`^5\\.7\\.1 <${unsub}>: recipient is suppressed for tag:newsletter since \\d{4}-`),
    );
    expect(
      platform.find((e) => e.type === 'suppressed' && e.recipient === unsub && e.source === 'intake'),
    ).toMatchObject({ tags: ['newsletter'], code: 550, enhanced: '5.7.1', senderDomain: 'shop.test' });
    expect(
      platform.some((e) => e.type === 'queued' && e.recipient === unsub && e.tags?.includes('newsletter')),
    ).toBe(false);
  });

  it('SMTP with X-Tern-Tag to a suppressed and a fresh recipient: taken; the fresh one delivered, the other bounced with a DSN to the sender', async () => {
    const before = sink.messages.length;
    const out = (
      await run('swaks', [
        '--server',
        `127.0.0.1:${mta.listeners[0]?.port}`,
        '--from',
        'news@shop.test',
        '--to',
        `${unsub},${fresh}`,
        '--header',
        'X-Tern-Tag: newsletter',
        '--header',
        'Subject: This week at the shop',
      ])
    ).output;
    const queueId = /250 2\.0\.0 queued as (\S+)/.exec(out)?.[1] as string;
    expect(queueId, out).toBeDefined();
    await waitFor(
      () => platform.some((e) => e.type === 'bounced' && e.queueId === queueId && e.recipient === unsub),
      15_000,
    );
    await waitFor(() => sink.messages.slice(before).some((m) => m.rcptTo.includes(fresh)), 15_000);
    // The fresh recipient got the newsletter, without the tag header; the suppressed one got nothing.
    const delivered = sink.messages.slice(before).filter((m) => m.rcptTo.includes(fresh));
    expect(delivered).toHaveLength(1);
    expect(delivered[0]?.headers).not.toMatch(/X-Tern-Tag/i);
    expect(sink.messages.some((m) => m.rcptTo.includes(unsub) && m.headers.includes('This week'))).toBe(
      false,
    );
    // The bounce: a DSN to the sender, naming the recipient and why.
    await waitFor(
      () =>
        sink.messages.slice(before).some((m) => m.rcptTo.includes('news@shop.test') && m.raw.includes(unsub)),
      15_000,
    );
    const dsn =
      sink.messages
        .slice(before)
        .find((m) => m.rcptTo.includes('news@shop.test'))
        ?.raw.toString()
        // Unfolded: a long Diagnostic-Code may be folded.
        .replace(/\r?\n[ \t]+/g, ' ') ?? '';
    expect(dsn).toMatch(/Content-Type: multipart\/report; report-type=delivery-status/i);
    expect(dsn).toMatch(new RegExp(`Final-Recipient: rfc822; ?${unsub}`, 'i'));
    expect(dsn).toMatch(/Status: 5\.7\.1/);
    expect(dsn).toContain('suppressed for tag:newsletter');
    // Events: bounced (the queue's) and suppressed (ours, with the queue id), both with the tag.
    expect(platform.find((e) => e.type === 'bounced' && e.queueId === queueId)).toMatchObject({
      recipient: unsub,
      enhanced: '5.7.1',
      tags: ['newsletter'],
    });
    expect(platform.find((e) => e.type === 'suppressed' && e.queueId === queueId)).toMatchObject({
      recipient: unsub,
      source: 'intake',
      tags: ['newsletter'],
    });
    // The timeline says so, and the refusal put no entry anywhere else.
    await waitFor(
      async () => (await ops.details(queueId))?.timeline.some((t) => t.type === 'attempt') === true,
      10_000,
    );
    const attempts = (await ops.details(queueId))?.timeline.filter((t) => t.type === 'attempt') ?? [];
    expect(attempts.flatMap((a) => (a.type === 'attempt' ? a.recipients : []))).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ address: unsub, result: 'failed', code: 550, enhanced: '5.7.1' }),
        expect.objectContaining({ address: fresh, result: 'delivered' }),
      ]),
    );
    expect(await suppression(unsub)).toBeUndefined();
  });

  it('a complaint about a newsletter suppresses for tag:newsletter only: order mail still goes', async () => {
    await complain(fan, await postDelivered(fan, ['newsletter']));
    await waitFor(() => event('suppressed', fan) !== undefined, 15_000);
    expect(event('suppressed', fan)).toMatchObject({
      source: 'arf',
      tags: ['newsletter'],
      senderDomain: 'shop.test',
    });
    expect(await suppression(fan, 'tag:newsletter')).toMatchObject({
      source: 'complaint',
      queueId: queueIds.get(fan),
    });
    expect(await suppression(fan)).toBeUndefined();
    expect((await post(fan, {}, ['newsletter'])).body).toMatchObject({
      code: 'recipient_suppressed',
      suppressed: [expect.objectContaining({ scope: 'tag:newsletter', source: 'complaint' })],
    });
    expect((await post(fan, {}, ['orders'])).status).toBe(201);
  });

  it('a hard bounce of a newsletter suppresses for the sender domain: the mailbox is gone for every stream', async () => {
    const res = await post(dead, {}, ['newsletter']);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    queueIds.set(dead, res.body.queueId as string);
    await waitFor(() => event('suppressed', dead) !== undefined, 15_000);
    expect(await suppression(dead)).toMatchObject({
      scope: 'shop.test',
      source: 'bounce',
      category: 'bad-mailbox',
    });
    expect(await suppression(dead, 'tag:newsletter')).toBeUndefined();
  });

  it('/metrics counts the events by tag: the listed tags, other and none, and nothing else', async () => {
    await waitFor(async () => (await ops.summary()).totals.total === 0, 15_000);
    const text = await (await fetch(`${mta.adminUrl}/metrics`)).text();
    const series = new Map<string, number>();
    for (const [, tag, event, value] of text.matchAll(
      /^tern_tag_events_total\{tag="([^"]*)",event="([^"]*)"\} (\S+)$/gm,
    ))
      series.set(`${tag} ${event}`, Number(value));
    expect(new Set([...series.keys()].map((k) => k.split(' ')[0]))).toEqual(
      new Set(['newsletter', 'orders', 'other', 'none']),
    );
    // Every event type has a series from the start, at 0 until it happens.
    expect(series.get('newsletter held')).toBe(0);
    // Newsletters: to unsub and fresh (one SMTP message), fan and dead (HTTP) queued; fresh and fan
    // delivered; unsub (DSN) and dead (hard bounce) bounced; one complaint (fan).
    expect(series.get('newsletter queued')).toBe(4);
    expect(series.get('newsletter delivered')).toBe(2);
    expect(series.get('newsletter bounced')).toBe(2);
    expect(series.get('newsletter complained')).toBe(1);
    // unsub by the operator, at DATA and at delivery; fan (complaint); dead (bounce).
    expect(series.get('newsletter suppressed')).toBe(5);
    // The post with tags orders and misc counts once under each: orders, and other.
    expect(series.get('other queued')).toBe(1);
    expect(series.get('other delivered')).toBe(1);
    expect(series.get('orders delivered')).toBeGreaterThanOrEqual(5);
    // Reports from remote MTAs (from <>) carry no tag.
    expect(series.get('none queued')).toBeGreaterThanOrEqual(3);
  });
});
