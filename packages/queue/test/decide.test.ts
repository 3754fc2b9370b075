import type { SmtpReply } from '@tern/plugin-api';
import { describe, expect, it } from 'vitest';
import type { DeliveryJob, DeliveryReport, RecipientOutcome } from '../src/contract.js';
import { decideAttempt, MISSING_OUTCOME_REPLY } from '../src/decide.js';
import { RetrySchedule } from '../src/retry.js';

const ok: SmtpReply = { code: 250, enhanced: '2.0.0', text: 'OK' };
const busy: SmtpReply = { code: 451, enhanced: '4.7.1', text: 'Try later' };
const unknown: SmtpReply = { code: 550, enhanced: '5.1.1', text: 'No such user' };
const schedule = new RetrySchedule({ intervals: ['10s', '20s'], maxAge: '1m', delayNoticeAfter: '30s' });

function job(overrides: Partial<DeliveryJob> = {}, addresses = ['a@x.test', 'b@x.test']): DeliveryJob {
  return {
    id: 'q1:x.test',
    queueId: 'q1',
    domain: 'x.test',
    envelope: { mailFrom: 'sender@src.test', recipients: addresses.map((address) => ({ address })) },
    recipients: addresses.map((address) => ({ address, status: 'pending' })),
    attempts: 0,
    createdAt: 0,
    isBounce: false,
    ...overrides,
  };
}

function report(...outcomes: [string, RecipientOutcome['result'], SmtpReply][]): DeliveryReport {
  return {
    recipients: outcomes.map(([address, result, reply]) => ({ address, result, reply })),
    remoteMta: 'mx.x.test[192.0.2.1]:25',
  };
}

describe('decideAttempt', () => {
  it('finishes a job whose recipients were all delivered', () => {
    const d = decideAttempt(
      job(),
      report(['a@x.test', 'delivered', ok], ['b@x.test', 'delivered', ok]),
      schedule,
      1000,
    );
    expect(d.done).toBe(true);
    expect(d.retryAt).toBeUndefined();
    expect(d.delivered.map((r) => r.recipient.status)).toEqual(['delivered', 'delivered']);
    expect(d.delivered[0]?.recipient.remoteMta).toBe('mx.x.test[192.0.2.1]:25');
  });

  it('splits: the delivered recipient is done, only the deferred one retries on the schedule', () => {
    const d = decideAttempt(
      job(),
      report(['a@x.test', 'delivered', ok], ['b@x.test', 'deferred', busy]),
      schedule,
      1000,
    );
    expect(d.delivered.map((r) => r.recipient.address)).toEqual(['a@x.test']);
    expect(d.deferred.map((r) => r.recipient.address)).toEqual(['b@x.test']);
    expect(d.deferred[0]?.recipient.lastReply).toEqual(busy);
    expect(d.retryAt).toEqual(new Date(11_000));
    expect(d.done).toBe(false);
  });

  it('splits: a 5xx recipient fails and is bounced to the return path, the other is done', () => {
    const d = decideAttempt(
      job(),
      report(['a@x.test', 'delivered', ok], ['b@x.test', 'failed', unknown]),
      schedule,
      1000,
    );
    expect(d.failed).toEqual([
      expect.objectContaining({ reason: 'permanent', notify: true, reply: unknown }),
    ]);
    expect(d.failed[0]?.recipient).toMatchObject({ address: 'b@x.test', status: 'failed' });
    expect(d.notifyTo).toBe('sender@src.test');
    expect(d.done).toBe(true);
  });

  it('expires deferred recipients once the message outlived the schedule', () => {
    const d = decideAttempt(
      job({ attempts: 5 }),
      report(['a@x.test', 'deferred', busy], ['b@x.test', 'failed', unknown]),
      schedule,
      60_000,
    );
    expect(d.failed.map((f) => [f.recipient.address, f.reason])).toEqual([
      ['a@x.test', 'expired'],
      ['b@x.test', 'permanent'],
    ]);
    expect(d.deferred).toEqual([]);
    expect(d.done).toBe(true);
  });

  it('never notifies the null sender, nor about a bounce of our own', () => {
    const fromNull = decideAttempt(
      job({ envelope: { mailFrom: '', recipients: [{ address: 'a@x.test' }] } }, ['a@x.test']),
      report(['a@x.test', 'failed', unknown]),
      schedule,
      1000,
    );
    expect(fromNull.notifyTo).toBeUndefined();
    expect(fromNull.failed[0]?.notify).toBe(false);
    const ownBounce = decideAttempt(
      job({ isBounce: true }, ['a@x.test']),
      report(['a@x.test', 'failed', unknown]),
      schedule,
      1000,
    );
    expect(ownBounce.notifyTo).toBeUndefined();
    expect(ownBounce.failed[0]?.notify).toBe(false);
  });

  it('honours NOTIFY: NEVER and SUCCESS-only silence the bounce', () => {
    const j = job();
    const withNotify: DeliveryJob = {
      ...j,
      recipients: [
        { address: 'a@x.test', status: 'pending', notify: ['NEVER'] },
        { address: 'b@x.test', status: 'pending', notify: ['SUCCESS', 'FAILURE'] },
      ],
    };
    const d = decideAttempt(
      withNotify,
      report(['a@x.test', 'failed', unknown], ['b@x.test', 'failed', unknown]),
      schedule,
      1000,
    );
    expect(d.failed.map((f) => f.notify)).toEqual([false, true]);
  });

  it('retries a recipient the report left out instead of losing it', () => {
    const d = decideAttempt(job(), report(['A@X.TEST', 'delivered', ok]), schedule, 1000);
    expect(d.delivered.map((r) => r.recipient.address)).toEqual(['a@x.test']);
    expect(d.deferred.map((r) => [r.recipient.address, r.reply])).toEqual([
      ['b@x.test', MISSING_OUTCOME_REPLY],
    ]);
  });

  it('asks for one delay notice once the message waited long enough', () => {
    const early = decideAttempt(
      job(),
      report(['a@x.test', 'deferred', busy], ['b@x.test', 'deferred', busy]),
      schedule,
      10_000,
    );
    expect(early.delayNotice).toEqual([]);
    const due = decideAttempt(
      job({ attempts: 2 }),
      report(['a@x.test', 'deferred', busy], ['b@x.test', 'delivered', ok]),
      schedule,
      30_000,
    );
    expect(due.delayNotice.map((r) => r.recipient.address)).toEqual(['a@x.test']);
    const again = decideAttempt(
      job({ attempts: 3, delayNotified: true }),
      report(['a@x.test', 'deferred', busy], ['b@x.test', 'deferred', busy]),
      schedule,
      40_000,
    );
    expect(again.delayNotice).toEqual([]);
  });

  it('sends delay notices by default only to recipients that asked (NOTIFY=DELAY), never for NEVER', () => {
    const plain = new RetrySchedule({ intervals: ['10s'], maxAge: '10h' });
    const j: DeliveryJob = {
      ...job({}, ['a@x.test', 'b@x.test', 'c@x.test', 'd@x.test']),
      recipients: [
        { address: 'a@x.test', status: 'pending', notify: ['DELAY'] },
        { address: 'b@x.test', status: 'pending', notify: ['NEVER'] },
        { address: 'c@x.test', status: 'pending' },
        { address: 'd@x.test', status: 'pending', notify: ['FAILURE'] },
      ],
    };
    const deferAll = report(
      ['a@x.test', 'deferred', busy],
      ['b@x.test', 'deferred', busy],
      ['c@x.test', 'deferred', busy],
      ['d@x.test', 'deferred', busy],
    );
    const HOUR = 3_600_000;
    expect(decideAttempt(j, deferAll, plain, 4 * HOUR - 1).delayNotice).toEqual([]);
    const due = decideAttempt(j, deferAll, plain, 4 * HOUR);
    expect(due.delayNotice.map((r) => r.recipient.address)).toEqual(['a@x.test']);
    // Configured: recipients without NOTIFY get one too; NEVER and FAILURE-only still do not.
    const configured = decideAttempt(j, deferAll, schedule, 30_000);
    expect(configured.delayNotice.map((r) => r.recipient.address)).toEqual(['a@x.test', 'c@x.test']);
  });

  it('asks for success notices where NOTIFY has SUCCESS, unless the next hop reports itself', () => {
    const j: DeliveryJob = {
      ...job(),
      recipients: [
        { address: 'a@x.test', status: 'pending', notify: ['SUCCESS'] },
        { address: 'b@x.test', status: 'pending', notify: ['FAILURE'] },
      ],
    };
    const both = report(['a@x.test', 'delivered', ok], ['b@x.test', 'delivered', ok]);
    const relayed = decideAttempt(j, both, schedule, 1000);
    expect(relayed.successNotice.map((r) => r.recipient.address)).toEqual(['a@x.test']);
    expect(relayed.successAction).toBe('relayed');
    const local = decideAttempt(j, { ...both, successNotice: 'delivered' }, schedule, 1000);
    expect(local.successAction).toBe('delivered');
    expect(decideAttempt(j, { ...both, successNotice: 'next-hop' }, schedule, 1000).successNotice).toEqual(
      [],
    );
    // Never to <>, never about our own notices.
    const fromNull = decideAttempt({ ...j, envelope: { ...j.envelope, mailFrom: '' } }, both, schedule, 1000);
    expect(fromNull.successNotice).toEqual([]);
  });
});
