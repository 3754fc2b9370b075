// Operator operations and timelines, one suite for every backend: each backend's test file calls
// `describeQueueOperations` with a way to open a fresh queue. Real queues, a real worker, a
// scripted deliver function that answers per recipient as @tern/delivery would.
import { setTimeout as sleep } from 'node:timers/promises';
import type { NextHop, SmtpReply } from '@tern/plugin-api';
import { waitFor } from '@tern/testkit';
import { describe, expect, it } from 'vitest';
import type {
  Deliver,
  DeliveryJob,
  IncomingMessage,
  QueueBackend,
  QueueOperations,
  RecipientOutcome,
} from '../src/contract.js';
import type { AttemptEvent, OperatorEvent, TimelineEvent } from '../src/timeline.js';
import { BUSY, OK, testMessage, UNKNOWN } from './redis-fixtures/deliveries.js';
import { parseReport } from './report-parser.js';

export type OperableQueue = QueueBackend & QueueOperations;

interface Call {
  readonly job: DeliveryJob;
  readonly message: Buffer;
  readonly at: number;
}

/** Answers each recipient from `script` and reports the hop it was given (an operator's reroute) or the MX. */
function scriptedDeliver(script: (address: string, attempt: number) => SmtpReply = () => OK): {
  deliver: Deliver;
  calls: Call[];
} {
  const calls: Call[] = [];
  const deliver: Deliver = async (job, open) => {
    const chunks: Buffer[] = [];
    for await (const chunk of await open()) chunks.push(chunk as Buffer);
    calls.push({ job, message: Buffer.concat(chunks), at: Date.now() });
    const recipients: RecipientOutcome[] = job.recipients.map((r) => {
      const reply = script(r.address, job.attempts);
      const result = reply.code < 300 ? 'delivered' : reply.code < 500 ? 'deferred' : 'failed';
      return { address: r.address, result, reply };
    });
    const hop: NextHop = job.nextHop ?? { type: 'mx', domain: job.domain };
    return {
      recipients,
      hop,
      remoteMta: `mx.${job.domain}[192.0.2.25]:25`,
      tls: { policy: 'mta-sts', applied: 'mta-sts-enforce', tls: true, validated: true, protocol: 'TLSv1.3' },
    };
  };
  return { deliver, calls };
}

const fast = { retry: { intervals: ['1s'], maxAge: '1m' }, hostname: 'mx.tern.test' } as const;
/** A schedule that never comes round during a test: only an operator's action can make a job run. */
const slow = { retry: { intervals: ['1h'], maxAge: '5d' }, hostname: 'mx.tern.test' } as const;

function message(from: string, to: readonly string[], subject: string, extra: Partial<IncomingMessage> = {}) {
  return { ...testMessage(from, to, subject), ...extra };
}

function operatorEvents(timeline: readonly TimelineEvent[]): string[] {
  return timeline.filter((e): e is OperatorEvent => e.type === 'operator').map((e) => e.action);
}

function attempts(timeline: readonly TimelineEvent[]): AttemptEvent[] {
  return timeline.filter((e): e is AttemptEvent => e.type === 'attempt');
}

export function describeQueueOperations(name: string, open: () => Promise<OperableQueue>): void {
  describe(`QueueOperations: ${name}`, () => {
    it('summarises by destination and lists with filters and a cursor', async () => {
      const q = await open();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        ids.push(await q.enqueue(message('alice@src.test', [`u${i}@x.test`], `S${i}`)));
      }
      ids.push(await q.enqueue(message('bob@other.test', ['v@y.test', 'w@x.test'], 'Mixed')));
      ids.push(await q.enqueue(message('', ['postmaster@y.test'], 'Null')));
      await q.hold(ids[0] as string);

      const summary = await q.summary();
      const x = summary.destinations.find((d) => d.domain === 'x.test');
      const y = summary.destinations.find((d) => d.domain === 'y.test');
      expect(x).toMatchObject({ total: 6, held: 1, active: 0, scheduled: 5, deferred: 0 });
      expect(y).toMatchObject({ total: 2, held: 0, scheduled: 2 });
      expect(summary.totals).toMatchObject({ total: 8, held: 1 });
      expect(summary.destinations[0]?.domain).toBe('x.test'); // most jobs first
      expect(x?.oldestCreatedAt).toBeLessThanOrEqual(Date.now());

      // Paging: 6 jobs to x.test, 4 per page, in arrival order, nothing twice.
      const first = await q.listJobs({ domain: 'X.TEST', limit: 4 });
      expect(first.jobs).toHaveLength(4);
      expect(first.cursor).toBeDefined();
      const second = await q.listJobs({ domain: 'x.test', limit: 4, cursor: first.cursor as string });
      expect(second.jobs).toHaveLength(2);
      expect(second.cursor).toBeUndefined();
      const listed = [...first.jobs, ...second.jobs].map((j) => j.queueId);
      // Queue ids order by arrival to the millisecond (then at random), and so do pages.
      expect(listed).toEqual([...ids.slice(0, 5), ids[5]].sort());

      expect((await q.listJobs({ state: 'held' })).jobs.map((j) => j.queueId)).toEqual([ids[0]]);
      expect((await q.listJobs({ sender: 'BOB@' })).jobs.map((j) => j.jobId).sort()).toEqual([
        `${ids[5]}@x.test`,
        `${ids[5]}@y.test`,
      ]);
      expect((await q.listJobs({ sender: '<>' })).jobs.map((j) => j.queueId)).toEqual([ids[6]]);
      const byRecipient = await q.listJobs({ recipient: 'u3@' });
      expect(byRecipient.jobs).toHaveLength(1);
      expect(byRecipient.jobs[0]).toMatchObject({
        queueId: ids[3],
        domain: 'x.test',
        state: 'scheduled',
        attempts: 0,
        mailFrom: 'alice@src.test',
        messageId: '<S3@src.test>',
      });
      expect(byRecipient.jobs[0]?.size).toBeGreaterThan(50);
      await expect(q.listJobs({ limit: 0 })).rejects.toThrow(/limit/);
      await expect(q.listJobs({ state: 'lost' as never })).rejects.toThrow(/state/);
    });

    it('shows a message: envelope, headers, jobs with per-recipient state, and its intake verdicts', async () => {
      const q = await open();
      const intake: TimelineEvent[] = [
        {
          type: 'hook',
          at: Date.now() - 5,
          plugin: 'spam',
          hook: 'message',
          outcome: 'continue',
          durationMs: 3,
        },
      ];
      const id = await q.enqueue(
        message('alice@src.test', ['bob@x.test', 'carol@y.test'], 'Details', {
          timeline: intake,
          source: { listener: 'mx-25', remoteAddress: '192.0.2.7', helo: 'client.test', sessionId: 's1' },
        }),
      );
      const details = await q.details(id);
      expect(details).toMatchObject({
        queueId: id,
        state: 'queued',
        messageId: '<Details@src.test>',
        held: false,
        envelope: { mailFrom: 'alice@src.test' },
        source: { listener: 'mx-25', remoteAddress: '192.0.2.7' },
      });
      expect(details?.headers).toContainEqual(['Subject', 'Details']);
      expect(
        details?.jobs.map((j) => [j.domain, j.state, j.recipients.map((r) => `${r.address}:${r.status}`)]),
      ).toEqual([
        ['x.test', 'scheduled', ['bob@x.test:pending']],
        ['y.test', 'scheduled', ['carol@y.test:pending']],
      ]);
      expect(details?.timeline[0]).toMatchObject({
        type: 'received',
        mailFrom: 'alice@src.test',
        recipients: ['bob@x.test', 'carol@y.test'],
        listener: 'mx-25',
        remoteAddress: '192.0.2.7',
        helo: 'client.test',
      });
      expect(details?.timeline[1]).toEqual(intake[0]);
      expect(await q.findByMessageId('<Details@src.test>')).toEqual([id]);
      expect(await q.findByMessageId(' Details@src.test ')).toEqual([id]);
      expect(await q.findByMessageId('nobody@src.test')).toEqual([]);
      expect(await q.details('0000000000000000000ZZ')).toBeNull();
    });

    it('records every attempt with hop, remote MTA and per-recipient replies, and keeps the timeline after delivery', async () => {
      const q = await open();
      const { deliver } = scriptedDeliver((address, attempt) =>
        address.startsWith('slow') && attempt === 0 ? BUSY : OK,
      );
      await q.startWorker(deliver, fast);
      const id = await q.enqueue(message('alice@src.test', ['slow@x.test', 'fast@x.test'], 'Attempts'));
      await waitFor(async () => (await q.details(id))?.state === 'finished', 8000);

      const details = await q.details(id);
      expect(details?.envelope?.mailFrom).toBe('alice@src.test');
      const [first, second] = attempts(details?.timeline ?? []);
      expect(first).toMatchObject({
        attempt: 1,
        domain: 'x.test',
        hop: { type: 'mx', domain: 'x.test' },
        remoteMta: 'mx.x.test[192.0.2.25]:25',
        // Which TLS policy applied and whether the server was validated.
        tls: {
          policy: 'mta-sts',
          applied: 'mta-sts-enforce',
          tls: true,
          validated: true,
          protocol: 'TLSv1.3',
        },
      });
      expect(first?.recipients).toEqual(
        expect.arrayContaining([
          { address: 'fast@x.test', result: 'delivered', code: 250, enhanced: '2.0.0', text: 'OK queued' },
          {
            address: 'slow@x.test',
            result: 'deferred',
            code: 451,
            enhanced: '4.7.1',
            text: 'Greylisted, try later',
            category: 'transient',
          },
        ]),
      );
      expect(first?.nextAttemptAt).toBeGreaterThan(first?.at ?? 0);
      expect(second).toMatchObject({
        attempt: 2,
        recipients: [{ address: 'slow@x.test', result: 'delivered' }],
      });
      expect(second?.nextAttemptAt).toBeUndefined();
      expect(await q.findByMessageId('Attempts@src.test')).toEqual([id]);
      const summary = await q.summary();
      expect(summary.destinations.find((d) => d.domain === 'x.test')).toBeUndefined();
    });

    it('never delivers a held message, not even when it falls due, until it is released', async () => {
      const q = await open();
      const { deliver, calls } = scriptedDeliver();
      const id = await q.enqueue(message('alice@src.test', ['bob@x.test', 'carol@y.test'], 'Held'));
      expect(await q.hold(id)).toBe(2);
      await q.startWorker(deliver, fast);
      await sleep(1500);
      expect(calls).toHaveLength(0);
      const held = await q.details(id);
      expect(held?.held).toBe(true);
      expect(held?.jobs.map((j) => j.state)).toEqual(['held', 'held']);
      expect(await q.retryNow(id)).toBe(0); // retry does not undo a hold
      await sleep(500);
      expect(calls).toHaveLength(0);

      expect(await q.release(id)).toBe(2);
      await waitFor(() => calls.length === 2, 5000);
      await waitFor(async () => (await q.details(id))?.state === 'finished', 5000);
      // The refused retry changed nothing, so it is not in the timeline.
      expect(operatorEvents((await q.details(id))?.timeline ?? [])).toEqual(['hold', 'release']);
      expect(await q.hold(id)).toBe(0); // finished: nothing left to hold
    });

    it('queues a quarantined message held, with its reason, until an operator releases it', async () => {
      const q = await open();
      const { deliver, calls } = scriptedDeliver();
      await q.startWorker(deliver, fast);
      const id = await q.enqueue(
        message('alice@src.test', ['bob@x.test'], 'Quarantine', { hold: 'spam score 12.5' }),
      );
      await sleep(1200);
      expect(calls).toHaveLength(0);
      expect(await q.details(id)).toMatchObject({
        held: true,
        holdReason: 'spam score 12.5',
        jobs: [{ state: 'held' }],
      });
      expect((await q.details(id))?.timeline[0]).toMatchObject({ type: 'received', hold: 'spam score 12.5' });
      expect((await q.listJobs({ state: 'held' })).jobs).toEqual([
        expect.objectContaining({ queueId: id, holdReason: 'spam score 12.5' }),
      ]);
      expect((await q.summary()).totals).toMatchObject({ held: 1, total: 1 });
      expect(await q.release(id)).toBe(1);
      await waitFor(() => calls.length === 1, 5000);
    });

    it('lets an attempt in flight finish when held, then keeps the job held', async () => {
      const q = await open();
      let finish: () => void = () => {};
      const calls: DeliveryJob[] = [];
      const deliver: Deliver = async (job) => {
        calls.push(job);
        if (calls.length === 1) {
          await new Promise<void>((resolve) => {
            finish = resolve;
          });
        }
        return {
          recipients: job.recipients.map((r) => ({ address: r.address, result: 'deferred', reply: BUSY })),
        };
      };
      await q.startWorker(deliver, fast);
      const id = await q.enqueue(message('alice@src.test', ['bob@x.test'], 'InFlight'));
      await waitFor(() => calls.length === 1, 5000);
      expect((await q.details(id))?.jobs[0]?.state).toBe('active');
      expect((await q.listJobs({ state: 'active' })).jobs.map((j) => j.queueId)).toEqual([id]);
      expect((await q.summary()).totals).toMatchObject({ active: 1, total: 1 });
      expect(await q.hold(id)).toBe(1);
      finish();
      await waitFor(async () => attempts((await q.details(id))?.timeline ?? []).length === 1, 5000);
      await sleep(1500); // the retry would be due after 1 s
      expect(calls).toHaveLength(1);
      const details = await q.details(id);
      expect(details?.jobs[0]).toMatchObject({ state: 'held', attempts: 1 });
      expect((await q.summary()).totals).toMatchObject({ held: 1, deferred: 1, active: 0 });
    });

    it('holds a job whose first attempt failed, then retries it now after release', async () => {
      const q = await open();
      let busy = true;
      const { deliver, calls } = scriptedDeliver(() => (busy ? BUSY : OK));
      await q.startWorker(deliver, slow);
      const id = await q.enqueue(message('alice@src.test', ['bob@x.test'], 'RetryNow'));
      await waitFor(() => calls.length === 1, 5000);
      await waitFor(async () => (await q.listJobs({ state: 'deferred' })).jobs.length === 1, 5000);
      expect((await q.summary()).destinations[0]).toMatchObject({ domain: 'x.test', deferred: 1, total: 1 });
      busy = false;
      expect(await q.retryNow(id)).toBe(1);
      await waitFor(() => calls.length === 2, 5000);
      await waitFor(async () => (await q.details(id))?.state === 'finished', 5000);
      expect(attempts((await q.details(id))?.timeline ?? []).map((a) => a.recipients[0]?.result)).toEqual([
        'deferred',
        'delivered',
      ]);
    });

    it('deletes a message without delivering it; its timeline says so', async () => {
      const q = await open();
      const { deliver, calls } = scriptedDeliver();
      const id = await q.enqueue(message('alice@src.test', ['bob@x.test', 'carol@y.test'], 'Doomed'));
      expect(await q.remove(id)).toBe(true);
      expect(await q.remove(id)).toBe(false);
      await q.startWorker(deliver, fast);
      await sleep(1000);
      expect(calls).toHaveLength(0);
      expect(await q.readMessage(id)).toBeNull();
      expect(await q.inspect(id)).toBeNull();
      const details = await q.details(id);
      expect(details?.state).toBe('finished');
      expect(operatorEvents(details?.timeline ?? [])).toEqual(['delete']);
      expect(await q.findByMessageId('Doomed@src.test')).toEqual([id]);
      expect((await q.summary()).totals.total).toBe(0);
      expect((await q.listJobs()).jobs).toEqual([]);
    });

    it('bounces now: an RFC 3464 bounce to the sender with the reason, and the message is gone', async () => {
      const q = await open();
      const id = await q.enqueue(
        message('alice@src.test', ['bob@x.test', 'carol@y.test'], 'Bounce', {
          envelope: {
            mailFrom: 'alice@src.test',
            recipients: [{ address: 'bob@x.test' }, { address: 'carol@y.test', notify: ['NEVER'] }],
          },
        }),
      );
      const result = await q.bounceNow(id, { reportingMta: 'mx.tern.test', reason: 'spam run' });
      expect(result).toMatchObject({ ok: true, recipients: 2 });
      const notice = result.ok ? result.notice : undefined;
      expect(notice).toBeDefined();
      const dsn = await q.readMessage(notice as string);
      const report = parseReport(dsn as Buffer);
      expect(report.headers.get('to')).toBe('<alice@src.test>');
      // carol asked for NOTIFY=NEVER: only bob is reported.
      expect(report.status.slice(1)).toEqual([
        expect.objectContaining({
          'final-recipient': 'rfc822; bob@x.test',
          action: 'failed',
          status: '5.0.0',
          'diagnostic-code': "smtp; 550 5.0.0 Returned by the mail system's operator: spam run",
        }),
      ]);
      expect((await q.details(notice as string))?.jobs.map((j) => j.domain)).toEqual(['src.test']);
      const details = await q.details(id);
      expect(details?.state).toBe('finished');
      expect(details?.timeline.at(-1)).toMatchObject({
        type: 'operator',
        action: 'bounce',
        notice,
        detail: 'spam run',
      });
      expect(await q.bounceNow(id, { reportingMta: 'mx.tern.test' })).toEqual({
        ok: false,
        reason: 'unknown',
      });

      // Never a bounce to <>: the message just goes.
      const nullSender = await q.enqueue(message('', ['bob@x.test'], 'NullBounce'));
      expect(await q.bounceNow(nullSender, { reportingMta: 'mx.tern.test' })).toEqual({
        ok: true,
        recipients: 1,
      });
      expect(await q.readMessage(nullSender)).toBeNull();
    });

    it('reroutes one job, then a whole destination; delivery gets the operator hop', async () => {
      const q = await open();
      let busy = true;
      const { deliver, calls } = scriptedDeliver(() => (busy ? BUSY : OK));
      await q.startWorker(deliver, slow);
      const smarthost: NextHop = { type: 'smtp', host: '192.0.2.80', port: 2525 };
      const id = await q.enqueue(message('alice@src.test', ['bob@x.test', 'carol@y.test'], 'Reroute'));
      await waitFor(() => calls.length === 2, 5000);
      await waitFor(async () => (await q.listJobs({ state: 'deferred' })).jobs.length === 2, 5000);
      expect(await q.reroute(id, smarthost, 'x.test')).toBe(1);
      expect(await q.reroute(id, smarthost, 'nowhere.test')).toBe(0);
      const details = await q.details(id);
      expect(details?.jobs.find((j) => j.domain === 'x.test')?.nextHop).toEqual(smarthost);
      expect(details?.jobs.find((j) => j.domain === 'y.test')?.nextHop).toBeUndefined();
      await q.rerouteDestination('Y.test', { type: 'lmtp', path: '/run/lmtp.sock' });
      expect((await q.summary()).destinations.find((d) => d.domain === 'y.test')?.nextHop).toEqual({
        type: 'lmtp',
        path: '/run/lmtp.sock',
      });
      busy = false;
      expect(await q.retryNow(id)).toBe(2);
      await waitFor(() => calls.length === 4, 5000);
      const hops = Object.fromEntries(calls.slice(2).map((c) => [c.job.domain, c.job.nextHop]));
      expect(hops).toEqual({ 'x.test': smarthost, 'y.test': { type: 'lmtp', path: '/run/lmtp.sock' } });
      await waitFor(async () => (await q.details(id))?.state === 'finished', 5000);
      const last = attempts((await q.details(id))?.timeline ?? []).find(
        (a) => a.domain === 'x.test' && a.attempt === 2,
      );
      expect(last?.hop).toEqual(smarthost);
      await q.rerouteDestination('y.test', null);
      expect((await q.summary()).destinations.find((d) => d.domain === 'y.test')).toBeUndefined();
    });

    it('suspends a destination: its jobs wait while others go; resume sends them at once', async () => {
      const q = await open();
      const { deliver, calls } = scriptedDeliver();
      await q.suspend('x.test', Date.now() + 3600_000);
      await expect(q.suspend('x.test', Date.now() - 1)).rejects.toThrow(/future/);
      await q.startWorker(deliver, fast);
      const id = await q.enqueue(message('alice@src.test', ['bob@x.test', 'carol@y.test'], 'Suspended'));
      await waitFor(() => calls.length === 1, 5000);
      expect(calls[0]?.job.domain).toBe('y.test');
      await sleep(1200);
      expect(calls).toHaveLength(1);
      const x = (await q.summary()).destinations.find((d) => d.domain === 'x.test');
      expect(x).toMatchObject({ total: 1, scheduled: 1 });
      expect(x?.suspendedUntil).toBeGreaterThan(Date.now());
      // Waiting costs no attempt. (The embedded store also lists the finished y.test job.)
      expect((await q.details(id))?.jobs.find((j) => j.domain === 'x.test')?.attempts).toBe(0);

      expect(await q.resume('x.test')).toBe(1);
      await waitFor(() => calls.length === 2, 5000);
      expect(calls[1]?.job.domain).toBe('x.test');
      await waitFor(async () => (await q.details(id))?.state === 'finished', 5000);
    });

    it('bounces a permanent failure and names the bounce in the timeline', async () => {
      const q = await open();
      const { deliver } = scriptedDeliver(() => UNKNOWN);
      await q.startWorker(deliver, fast);
      const id = await q.enqueue(message('alice@src.test', ['ghost@x.test'], 'Ghost'));
      await waitFor(async () => (await q.details(id))?.state === 'finished', 5000);
      const [attempt] = attempts((await q.details(id))?.timeline ?? []);
      expect(attempt?.recipients).toEqual([
        {
          address: 'ghost@x.test',
          result: 'failed',
          code: 550,
          enhanced: '5.1.1',
          text: 'No such user here',
          category: 'bad-mailbox',
        },
      ]);
      expect(attempt?.notices).toHaveLength(1);
      expect((await q.details(attempt?.notices[0] as string))?.timeline[0]).toMatchObject({
        type: 'received',
        mailFrom: '',
        isBounce: true,
      });
    });
  });
}
