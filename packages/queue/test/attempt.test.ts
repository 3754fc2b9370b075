// The shared attempt step with an in-memory store: hooks, notices, and what happens when a
// notice cannot be enqueued. The backends' own tests run the same step against real storage.
import { Readable } from 'node:stream';
import type { RecipientResult, SmtpReply } from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import { memoryLogger } from '@tern/plugin-api/testing';
import { describe, expect, it } from 'vitest';
import { type AttemptStore, attemptSettings, LOCAL_ERROR_REPLY, runDeliveryAttempt } from '../src/attempt.js';
import { BounceClassifier } from '../src/bounce-classifier.js';
import type { Deliver, DeliveryJob, IncomingMessage, OutcomeObserver } from '../src/contract.js';
import { attemptEvent } from '../src/timeline.js';
import { parseReport } from './report-parser.js';

const ok: SmtpReply = { code: 250, enhanced: '2.0.0', text: 'OK' };
const busy: SmtpReply = { code: 451, enhanced: '4.7.1', text: 'Try later' };
const unknown: SmtpReply = { code: 550, enhanced: '5.1.1', text: 'No such user' };
const HOUR = 3_600_000;

function job(overrides: Partial<DeliveryJob> = {}): DeliveryJob {
  return {
    id: 'Q1@x.test',
    queueId: 'Q1',
    domain: 'x.test',
    envelope: {
      mailFrom: 'alice@src.test',
      recipients: [{ address: 'bob@x.test' }, { address: 'dave@x.test' }],
    },
    recipients: [
      { address: 'bob@x.test', status: 'pending' },
      { address: 'dave@x.test', status: 'pending' },
    ],
    attempts: 0,
    createdAt: 0,
    isBounce: false,
    ...overrides,
  };
}

function replies(table: Record<string, SmtpReply>): Deliver {
  return async (j) => ({
    recipients: j.recipients.map((r) => {
      const reply = table[r.address] ?? ok;
      return {
        address: r.address,
        reply,
        result: reply.code < 300 ? 'delivered' : reply.code < 500 ? 'deferred' : 'failed',
      };
    }),
  });
}

function store(failEnqueue = false): AttemptStore & { sent: IncomingMessage[] } {
  const sent: IncomingMessage[] = [];
  return {
    sent,
    openMessage: async () => Readable.from([Buffer.from('Subject: hi\r\n\r\nbody\r\n')]),
    readHeaders: async () => Buffer.from('Subject: hi\r\n'),
    enqueue: async (message) => {
      if (failEnqueue) throw new Error('queue down');
      sent.push(message);
      return `N${sent.length}`;
    },
  };
}

describe('runDeliveryAttempt', () => {
  it('finishes a job when every recipient is settled and bounces the failed one', async () => {
    const s = store();
    const out = await runDeliveryAttempt(
      job(),
      replies({ 'bob@x.test': unknown }),
      s,
      attemptSettings({ hostname: 'h.test' }, () => 1000),
    );
    expect(out.next).toBeUndefined();
    expect(out.notices).toEqual(['N1']);
    expect(s.sent[0]?.isBounce).toBe(true);
    expect(s.sent[0]?.envelope).toEqual({ mailFrom: '', recipients: [{ address: 'alice@src.test' }] });
  });

  it('keeps only deferred recipients for the next attempt, at the scheduled time', async () => {
    const out = await runDeliveryAttempt(
      job(),
      replies({ 'bob@x.test': busy }),
      store(),
      attemptSettings({ retry: { intervals: ['30s'] } }, () => 1000),
    );
    expect(out.next?.recipients.map((r) => [r.address, r.status, r.lastReply])).toEqual([
      ['bob@x.test', 'pending', busy],
    ]);
    expect(out.next?.at).toEqual(new Date(31_000));
    expect(out.next?.attempts).toBe(1);
  });

  it('treats a throwing deliver as a temporary failure of every recipient', async () => {
    const logger = memoryLogger();
    const out = await runDeliveryAttempt(
      job(),
      async () => {
        throw new Error('boom');
      },
      store(),
      attemptSettings({ logger }, () => 1000),
    );
    expect(out.next?.recipients.map((r) => r.lastReply)).toEqual([LOCAL_ERROR_REPLY, LOCAL_ERROR_REPLY]);
    expect(logger.records.some((r) => r.level === 'error')).toBe(true);
  });

  it('sends one delay notice once it is due, and remembers that it did', async () => {
    const s = store();
    const settings = attemptSettings(
      { retry: { delayNoticeAfter: '4h' }, hostname: 'h.test' },
      () => 5 * HOUR,
    );
    const first = await runDeliveryAttempt(
      job({ attempts: 4 }),
      replies({ 'bob@x.test': busy }),
      s,
      settings,
    );
    expect(first.next?.delayNotified).toBe(true);
    expect(s.sent).toHaveLength(1);
    const report = parseReport(Buffer.concat(s.sent[0]?.content.chunks() ?? []));
    expect(report.status[1]).toMatchObject({
      action: 'delayed',
      'final-recipient': 'rfc822; bob@x.test',
      status: '4.7.1',
    });
    const second = await runDeliveryAttempt(
      job({ attempts: 5, delayNotified: true }),
      replies({ 'bob@x.test': busy }),
      s,
      settings,
    );
    expect(second.next?.delayNotified).toBe(true);
    expect(s.sent).toHaveLength(1);
  });

  it('sorts every recipient not delivered into a category: hooks, DSN and timeline get it', async () => {
    const seen: Record<string, unknown[]> = {};
    const plugins = new PluginHost([
      {
        name: 'watch',
        deferred: (ctx) => {
          seen.deferred = ctx.results.map((r) => r.category);
        },
        bounced: (ctx) => {
          seen.bounced = ctx.results.map((r) => r.category);
        },
      },
    ]);
    const s = store();
    // The operator's rule comes before the shipped ones, which would say `transient` for "Try later".
    const classifier = new BounceClassifier({ rules: [{ category: 'spam-block', text: 'try later' }] });
    const j = job();
    const out = await runDeliveryAttempt(
      j,
      replies({ 'bob@x.test': unknown, 'dave@x.test': busy }),
      s,
      attemptSettings({ plugins, classifier }, () => 1000),
    );
    expect(seen).toEqual({ deferred: ['spam-block'], bounced: ['bad-mailbox'] });
    const dsn = parseReport(Buffer.concat(s.sent[0]?.content.chunks() ?? []));
    expect(dsn.status[1]).toMatchObject({
      'final-recipient': 'rfc822; bob@x.test',
      'x-tern-bounce-category': 'bad-mailbox',
    });
    expect(attemptEvent(j, out, 2000).recipients).toEqual([
      expect.objectContaining({ address: 'dave@x.test', result: 'deferred', category: 'spam-block' }),
      expect.objectContaining({ address: 'bob@x.test', result: 'failed', category: 'bad-mailbox' }),
    ]);
  });

  it('tells the outcome observer of delivered, deferred and bounced recipients before the hooks; a throwing observer changes nothing', async () => {
    const order: string[] = [];
    const plugins = new PluginHost([
      {
        name: 'watch',
        delivered: (ctx) => void order.push(`hook delivered ${ctx.results.map((r) => r.recipient.address)}`),
        deferred: (ctx) => void order.push(`hook deferred ${ctx.results.map((r) => r.recipient.address)}`),
        bounced: (ctx) => void order.push(`hook bounced ${ctx.results.map((r) => r.recipient.address)}`),
      },
    ]);
    const to = (results: readonly RecipientResult[]): string =>
      results.map((r) => r.recipient.address).join();
    const observer: OutcomeObserver = {
      delivered: (o) => void order.push(`observer delivered ${to(o.results)} via ${o.remoteMta}`),
      deferred: (o) => void order.push(`observer deferred ${to(o.results)} at ${o.nextAttemptAt.getTime()}`),
      bounced: (o) => void order.push(`observer bounced ${to(o.results)} ${o.reason}`),
    };
    const three = job({
      recipients: [
        { address: 'bob@x.test', status: 'pending' },
        { address: 'dave@x.test', status: 'pending' },
        { address: 'eve@x.test', status: 'pending' },
      ],
    });
    const table = { 'bob@x.test': unknown, 'dave@x.test': busy };
    const deliver: Deliver = async (j, message) => ({
      ...(await replies(table)(j, message)),
      remoteMta: 'mx.x.test[192.0.2.1]:25',
    });
    const settings = { plugins, retry: { intervals: ['1m'] } };
    await runDeliveryAttempt(
      three,
      deliver,
      store(),
      attemptSettings({ ...settings, observer }, () => 1000),
    );
    expect(order).toEqual([
      'observer delivered eve@x.test via mx.x.test[192.0.2.1]:25',
      'hook delivered eve@x.test',
      'observer deferred dave@x.test at 61000',
      'hook deferred dave@x.test',
      'observer bounced bob@x.test permanent',
      'hook bounced bob@x.test',
    ]);

    const thrower = {
      delivered: () => {
        throw new Error('observer bug');
      },
      deferred: () => {
        throw new Error('observer bug');
      },
      bounced: () => {
        throw new Error('observer bug');
      },
    };
    const logger = memoryLogger();
    const s = store();
    const out = await runDeliveryAttempt(
      three,
      deliver,
      s,
      attemptSettings({ retry: { intervals: ['1m'] }, observer: thrower, logger }, () => 1000),
    );
    expect(out.decision.delivered.map((d) => d.recipient.address)).toEqual(['eve@x.test']);
    expect(out.next?.recipients.map((r) => r.address)).toEqual(['dave@x.test']);
    expect(s.sent).toHaveLength(1); // bob's bounce
    expect(logger.records.filter((r) => r.message === 'outcome observer threw')).toHaveLength(3);
  });

  it('sends the bounce where a bounced hook redirects it', async () => {
    const s = store();
    const plugins = new PluginHost([
      { name: 'redirect', bounced: () => ({ redirectTo: 'postmaster@src.test' }) },
    ]);
    await runDeliveryAttempt(
      job(),
      replies({ 'bob@x.test': unknown }),
      s,
      attemptSettings({ plugins }, () => 1000),
    );
    expect(s.sent[0]?.envelope.recipients).toEqual([{ address: 'postmaster@src.test' }]);
  });

  it('keeps a failed recipient in the job when its bounce cannot be enqueued, rather than losing the bounce', async () => {
    const out = await runDeliveryAttempt(
      job(),
      replies({ 'bob@x.test': unknown }),
      store(true),
      attemptSettings({ retry: { intervals: ['1m'] } }, () => 1000),
    );
    expect(out.notices).toEqual([]);
    expect(out.next?.recipients.map((r) => r.address)).toEqual(['bob@x.test']);
    expect(out.next?.at).toEqual(new Date(61_000));
  });

  it('does not let a deferred hook schedule a hot loop', async () => {
    const plugins = new PluginHost([{ name: 'eager', deferred: () => ({ retryAt: new Date(0) }) }]);
    const out = await runDeliveryAttempt(
      job(),
      replies({ 'bob@x.test': busy }),
      store(),
      attemptSettings({ plugins, retry: { minInterval: '10s' } }, () => 1000),
    );
    expect(out.next?.at).toEqual(new Date(11_000));
  });
});

describe('per-recipient log lines', () => {
  /** A clock that reads each of `times` once, then stays at the last. */
  function clock(...times: number[]): () => number {
    let i = 0;
    return () => times[Math.min(i++, times.length - 1)] as number;
  }

  const lines = (records: ReturnType<typeof memoryLogger>['records'], message: string) =>
    records.filter((r) => r.message === message).map((r) => r.fields);

  it('logs one delivered line per recipient with relay, TLS, Postfix delays, DSN code and reply', async () => {
    const logger = memoryLogger();
    const deliver: Deliver = async (j) => ({
      recipients: j.recipients.map((r) => ({ address: r.address, result: 'delivered', reply: ok })),
      hop: { type: 'mx', domain: 'x.test' },
      remoteMta: 'mx.x.test[192.0.2.25]:25',
      tls: {
        policy: 'dane',
        applied: 'dane',
        tls: true,
        validated: true,
        protocol: 'TLSv1.3',
        cipher: 'TLS_AES_256_GCM_SHA384',
      },
      connectMs: 1500,
      transferMs: 250,
    });
    // Received at 0, this attempt from 60 s to 62 s: 250 ms of it neither connecting nor sending.
    await runDeliveryAttempt(job(), deliver, store(), attemptSettings({ logger }, clock(60_000, 62_000)));
    const delivered = lines(logger.records, 'delivered');
    expect(delivered).toEqual([
      {
        queueId: 'Q1',
        jobId: 'Q1@x.test',
        domain: 'x.test',
        recipient: 'bob@x.test',
        attempt: 1,
        remoteMta: 'mx.x.test[192.0.2.25]:25',
        tls: 'TLSv1.3',
        tlsCipher: 'TLS_AES_256_GCM_SHA384',
        tlsPolicy: 'dane',
        tlsValidated: true,
        delay: 62,
        delays: '60/0.25/1.5/0.25',
        code: 250,
        enhanced: '2.0.0',
        text: 'OK',
      },
      expect.objectContaining({ recipient: 'dave@x.test', delays: '60/0.25/1.5/0.25' }),
    ]);
  });

  it('logs deferred and bounced recipients one per line, with the retry time and the notice sent', async () => {
    const logger = memoryLogger();
    const s = store();
    await runDeliveryAttempt(
      job({ attempts: 2, createdAt: 1000 }),
      replies({ 'bob@x.test': unknown, 'dave@x.test': busy }),
      s,
      attemptSettings({ logger, retry: { intervals: ['30s'] } }, clock(1234, 1300)),
    );
    // A deliverer that says nothing of the connection: no relay, no TLS, no set-up or transfer time.
    expect(lines(logger.records, 'deferred')).toEqual([
      expect.objectContaining({
        recipient: 'dave@x.test',
        attempt: 3,
        remoteMta: 'none',
        tls: 'none',
        delay: 0.3,
        delays: '0.23/0.07/0/0',
        code: 451,
        enhanced: '4.7.1',
        text: 'Try later',
        category: 'transient',
        retryAt: new Date(31_300).toISOString(),
      }),
    ]);
    expect(lines(logger.records, 'bounced')).toEqual([
      expect.objectContaining({
        recipient: 'bob@x.test',
        code: 550,
        enhanced: '5.1.1',
        text: 'No such user',
        category: 'bad-mailbox',
        reason: 'permanent',
        notice: 'N1',
        bounceTo: 'alice@src.test',
      }),
    ]);
    expect(lines(logger.records, 'deferred')[0]).not.toHaveProperty('tlsCipher');
  });

  it('says why a bounced recipient got no notice', async () => {
    const logger = memoryLogger();
    const quiet = job({
      envelope: {
        mailFrom: 'alice@src.test',
        recipients: [{ address: 'bob@x.test', notify: ['NEVER'] }, { address: 'dave@x.test' }],
      },
      recipients: [
        { address: 'bob@x.test', status: 'pending', notify: ['NEVER'] },
        { address: 'dave@x.test', status: 'pending' },
      ],
    });
    await runDeliveryAttempt(
      quiet,
      replies({ 'bob@x.test': unknown, 'dave@x.test': unknown }),
      store(),
      attemptSettings({ logger }, () => 1000),
    );
    await runDeliveryAttempt(
      job({ envelope: { mailFrom: '', recipients: [{ address: 'bob@x.test' }] } }),
      replies({ 'bob@x.test': unknown, 'dave@x.test': unknown }),
      store(),
      attemptSettings({ logger }, () => 1000),
    );
    expect(
      lines(logger.records, 'bounced').map((f) => [
        f.recipient,
        f.notice === 'none' ? f.noticeSkipped : 'sent',
      ]),
    ).toEqual([
      ['bob@x.test', 'not requested (NOTIFY)'],
      ['dave@x.test', 'sent'],
      ['bob@x.test', 'null sender'],
      ['dave@x.test', 'null sender'],
    ]);
  });
});

describe('the plugin host of an attempt', () => {
  it('asks for the host at the start of each attempt and gives deliver the one its hooks run on', async () => {
    const seen: string[] = [];
    const hostOf = (name: string): PluginHost =>
      new PluginHost([{ name, delivered: () => void seen.push(`delivered by ${name}`) }]);
    let current = hostOf('first');
    const given: (PluginHost | undefined)[] = [];
    const deliver: Deliver = async (j, message, attempt) => {
      given.push(attempt?.plugins);
      return replies({})(j, message);
    };
    const settings = attemptSettings({ plugins: () => current }, () => 1000);
    const before = current;
    await runDeliveryAttempt(job(), deliver, store(), settings);
    current = hostOf('second'); // a reload
    await runDeliveryAttempt(job(), deliver, store(), settings);
    expect(seen).toEqual(['delivered by first', 'delivered by second']);
    expect(given).toEqual([before, current]);
  });

  it('keeps the host it started with to its end, and retains it until then', async () => {
    const seen: string[] = [];
    const old = new PluginHost([{ name: 'old', deferred: () => void seen.push('old') }]);
    const replaced = new PluginHost([{ name: 'new', deferred: () => void seen.push('new') }]);
    let current = old;
    let midway: () => void = () => {};
    const reached = new Promise<void>((resolve) => {
      midway = resolve;
    });
    let finish: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const deliver: Deliver = async (j, message) => {
      midway();
      await gate;
      return replies({ 'bob@x.test': busy, 'dave@x.test': busy })(j, message);
    };
    const running = runDeliveryAttempt(
      job(),
      deliver,
      store(),
      attemptSettings({ plugins: () => current }, () => 1000),
    );
    await reached;
    current = replaced;
    expect(old.idle).toBe(false);
    let drained = false;
    const idle = old.whenIdle().then(() => {
      drained = true;
    });
    finish();
    await running;
    await idle;
    expect(drained).toBe(true);
    expect(seen).toEqual(['old']);
    expect(old.idle).toBe(true);
  });
});

describe('a job a limit refused', () => {
  const throttled: SmtpReply = { code: 451, enhanced: '4.7.0', text: 'throttled by a local limit' };
  const wait: Deliver = async (j) => ({
    recipients: j.recipients.map((r) => ({ address: r.address, result: 'deferred', reply: throttled })),
    wait: { key: 'domain:x.test', retryAfterMs: 400, spacingMs: 100, burst: 10 },
  });

  it('is not an attempt: attempts, recipients and delay notice stay as they were, no hook runs', async () => {
    const host = new PluginHost([
      {
        name: 'watch',
        deferred: () => {
          throw new Error('the deferred hook must not run for a wait');
        },
      },
    ]);
    const s = store();
    const out = await runDeliveryAttempt(
      job({ attempts: 3, delayNotified: false, createdAt: 0 }),
      wait,
      s,
      attemptSettings(
        { plugins: host, retry: { intervals: ['1m'], delayNoticeAfter: '1h' } },
        () => 2 * HOUR,
      ),
    );
    expect(out.waiting?.key).toBe('domain:x.test');
    expect(out.next?.attempts).toBe(3);
    expect(out.next?.delayNotified).toBe(false);
    expect(out.next?.recipients.map((r) => [r.status, r.lastReply])).toEqual([
      ['pending', undefined],
      ['pending', undefined],
    ]);
    expect(out.next?.at).toEqual(new Date(2 * HOUR + 400));
    expect(out.decision.deferred).toEqual([]);
    // No delay notice although one is due: nothing was attempted.
    expect(s.sent).toEqual([]);
  });

  it('past the message lifetime is decided like any attempt: expired and bounced', async () => {
    const s = store();
    const out = await runDeliveryAttempt(
      job({ createdAt: 0 }),
      wait,
      s,
      attemptSettings({ retry: { intervals: ['1m'], maxAge: '1h' } }, () => 2 * HOUR),
    );
    expect(out.waiting).toBeUndefined();
    expect(out.next).toBeUndefined();
    expect(out.decision.failed.map((f) => f.reason)).toEqual(['expired', 'expired']);
    expect(s.sent[0]?.isBounce).toBe(true);
  });
});
