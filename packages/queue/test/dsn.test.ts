import { rfc5322Date } from '@tern/plugin-api';
import { describe, expect, it } from 'vitest';
import { buildDsn, type DsnInput, headerBlockOf, returnsFullMessage } from '../src/dsn.js';
import { parseReport } from './report-parser.js';

const originalHeaders = Buffer.from(
  'From: Alice <alice@src.test>\r\nTo: bob@x.test\r\nSubject: Lunch?\r\nMessage-ID: <m1@src.test>\r\n',
);
const arrival = new Date(Date.UTC(2025, 5, 1, 10, 0, 0));
const attempted = new Date(Date.UTC(2025, 5, 1, 10, 5, 0));

describe('buildDsn', () => {
  it('builds an RFC 3464 bounce from <> to the return path', () => {
    const dsn = buildDsn(
      {
        kind: 'bounce',
        to: 'alice@src.test',
        queueId: 'Q123',
        envelope: { mailFrom: 'alice@src.test', recipients: [], envid: 'env-7' },
        arrivalDate: arrival,
        lastAttemptAt: attempted,
        recipients: [
          {
            action: 'failed',
            reason: 'permanent',
            reply: { code: 550, enhanced: '5.1.1', text: 'No such user' },
            recipient: {
              address: 'bob@x.test',
              orcpt: 'rfc822;Bob@X.test',
              status: 'failed',
              remoteMta: 'mx.x.test[192.0.2.1]:25',
            },
          },
          {
            action: 'failed',
            reason: 'expired',
            reply: { code: 451, enhanced: '4.2.2', text: 'Mailbox full' },
            recipient: { address: 'carol@x.test', status: 'failed' },
          },
        ],
        originalHeaders,
      },
      { reportingMta: 'mx.tern.test', now: attempted },
    );
    expect(dsn.isBounce).toBe(true);
    expect(dsn.envelope).toEqual({ mailFrom: '', recipients: [{ address: 'alice@src.test' }] });

    const report = parseReport(Buffer.concat(dsn.content.chunks() ?? []));
    expect(report.headers.get('to')).toBe('<alice@src.test>');
    expect(report.headers.get('from')).toBe('Mail Delivery System <MAILER-DAEMON@mx.tern.test>');
    expect(report.headers.get('auto-submitted')).toBe('auto-replied');
    expect(report.headers.get('content-type')).toMatch(/^multipart\/report; report-type=delivery-status;/);
    expect(report.parts.map((p) => p.headers.get('content-type'))).toEqual([
      'text/plain; charset=utf-8',
      'message/delivery-status',
      'text/rfc822-headers',
    ]);
    expect(report.parts[0]?.body).toContain('<bob@x.test>: 550 5.1.1 No such user');

    const [perMessage, bob, carol] = report.status;
    expect(perMessage).toMatchObject({
      'reporting-mta': 'dns; mx.tern.test',
      'original-envelope-id': 'env-7',
      'arrival-date': 'Sun, 01 Jun 2025 10:00:00 +0000',
    });
    expect(bob).toEqual({
      'final-recipient': 'rfc822; bob@x.test',
      'original-recipient': 'rfc822; Bob@X.test',
      action: 'failed',
      status: '5.1.1',
      'remote-mta': 'dns; mx.x.test',
      'diagnostic-code': 'smtp; 550 5.1.1 No such user',
      'last-attempt-date': rfc5322Date(attempted),
    });
    expect(carol).toMatchObject({
      action: 'failed',
      status: '5.4.7',
      'diagnostic-code': 'smtp; 451 4.2.2 Mailbox full',
    });
    expect(carol?.['remote-mta']).toBeUndefined();

    expect(report.parts[2]?.body).toBe(originalHeaders.toString());
  });

  it('builds a delay notice with Will-Retry-Until', () => {
    const until = new Date(Date.UTC(2025, 5, 6, 10, 0, 0));
    const dsn = buildDsn(
      {
        kind: 'delay',
        to: 'alice@src.test',
        queueId: 'Q1',
        envelope: { mailFrom: 'alice@src.test', recipients: [] },
        arrivalDate: arrival,
        lastAttemptAt: attempted,
        willRetryUntil: until,
        recipients: [
          {
            action: 'delayed',
            reply: { code: 421, enhanced: '4.4.2', text: 'Timeout' },
            recipient: { address: 'bob@x.test', status: 'pending' },
          },
        ],
        originalHeaders,
      },
      { reportingMta: 'mx.tern.test' },
    );
    const report = parseReport(Buffer.concat(dsn.content.chunks() ?? []));
    expect(report.headers.get('subject')).toMatch(/Delayed/);
    expect(report.status[1]).toMatchObject({
      action: 'delayed',
      status: '4.4.2',
      'will-retry-until': rfc5322Date(until),
    });
  });

  it('refuses to address the null sender', () => {
    expect(() =>
      buildDsn(
        {
          kind: 'bounce',
          to: '',
          queueId: 'Q',
          envelope: { mailFrom: '', recipients: [] },
          arrivalDate: arrival,
          lastAttemptAt: attempted,
          recipients: [],
          originalHeaders,
        },
        { reportingMta: 'h' },
      ),
    ).toThrow(/null sender/);
  });

  it('keeps reply text on one line so a remote server cannot inject fields', () => {
    const dsn = buildDsn(
      {
        kind: 'bounce',
        to: 'a@src.test',
        queueId: 'Q',
        envelope: { mailFrom: 'a@src.test', recipients: [] },
        arrivalDate: arrival,
        lastAttemptAt: attempted,
        recipients: [
          {
            action: 'failed',
            reason: 'permanent',
            reply: { code: 550, enhanced: '5.0.0', text: 'bad\r\nAction: delivered' },
            recipient: { address: 'b@x.test', status: 'failed' },
          },
        ],
        originalHeaders,
      },
      { reportingMta: 'h' },
    );
    const report = parseReport(Buffer.concat(dsn.content.chunks() ?? []));
    expect(report.status[1]?.action).toBe('failed');
    expect(report.status[1]?.['diagnostic-code']).toBe('smtp; 550 5.0.0 bad Action: delivered');
  });

  it('finds the header block of a stored message', () => {
    expect(headerBlockOf(Buffer.from('A: 1\r\nB: 2\r\n\r\nbody')).toString()).toBe('A: 1\r\nB: 2\r\n');
    expect(headerBlockOf(Buffer.from('A: 1\r\nB: 2')).toString()).toBe('A: 1\r\nB: 2');
  });

  const failedBob: DsnInput['recipients'][number] = {
    action: 'failed',
    reason: 'permanent',
    reply: { code: 550, enhanced: '5.1.1', text: 'No such user' },
    recipient: { address: 'bob@x.test', status: 'failed' },
  };
  const original = Buffer.from(`${originalHeaders.toString()}\r\nCaf\xe9 at noon\r\n`, 'latin1');
  /** A bounce about bob to alice, with `changes` on top. */
  const notice = (changes: Partial<DsnInput>, envelope: Partial<DsnInput['envelope']> = {}) =>
    buildDsn(
      {
        kind: 'bounce',
        to: 'alice@src.test',
        queueId: 'Q',
        envelope: { mailFrom: 'alice@src.test', recipients: [], ...envelope },
        arrivalDate: arrival,
        lastAttemptAt: attempted,
        recipients: [failedBob],
        originalHeaders,
        ...changes,
      },
      { reportingMta: 'h' },
    );

  it('returns the whole message as message/rfc822 when given (RET=FULL), bytes unchanged', () => {
    const dsn = notice({ originalMessage: original }, { ret: 'FULL' });
    const raw = Buffer.concat(dsn.content.chunks() ?? []);
    const report = parseReport(raw);
    expect(report.parts[2]?.headers.get('content-type')).toBe('message/rfc822');
    expect(raw.includes(original)).toBe(true);
  });

  it('returns headers only for REQUIRETLS messages, and asks REQUIRETLS of the notice (RFC 8689 section 5)', () => {
    expect(returnsFullMessage({ mailFrom: 'a@b', recipients: [], ret: 'FULL' })).toBe(true);
    expect(returnsFullMessage({ mailFrom: 'a@b', recipients: [], ret: 'FULL', requireTls: true })).toBe(
      false,
    );
    expect(returnsFullMessage({ mailFrom: 'a@b', recipients: [] })).toBe(false);
    const dsn = notice({}, { requireTls: true });
    expect(dsn.envelope).toEqual({
      mailFrom: '',
      recipients: [{ address: 'alice@src.test' }],
      requireTls: true,
    });
  });

  it('builds a success notice: delivered or relayed, 2.x.x, ENVID and ORCPT as the client meant them', () => {
    const dsn = notice(
      {
        kind: 'success',
        recipients: [
          {
            action: 'relayed',
            reply: { code: 250, enhanced: '2.6.0', text: 'queued' },
            recipient: { address: 'bob@x.test', status: 'delivered', orcpt: 'rfc822;b+ob@x.test' },
          },
        ],
      },
      { envid: 'id+1 two' },
    );
    const report = parseReport(Buffer.concat(dsn.content.chunks() ?? []));
    expect(report.headers.get('subject')).toBe('Successful Mail Delivery Report');
    expect(report.status[0]?.['original-envelope-id']).toBe('id+1 two');
    expect(report.status[1]).toMatchObject({
      'original-recipient': 'rfc822; b+ob@x.test',
      action: 'relayed',
      status: '2.6.0',
    });
  });
});
