// The report reader on its own: DSN recipient blocks (several, folded, typed), ARF fields, prose,
// and the bounds that keep a hostile report small. The end-to-end test is feedback.test.ts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDsn } from '@tern/queue';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config.js';
import { feedbackSettings, withBounceDomain } from '../src/feedback/feedback.js';
import { parseFeedback, reportBlocks } from '../src/feedback/report.js';

const dir = mkdtempSync(join(tmpdir(), 'tern-feedback-units-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function multipart(type: string, parts: readonly [string, string][]): Buffer {
  const lines = [
    'From: MAILER-DAEMON@mx.test',
    'To: b+x.y.z@bounce.test',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=${type}; boundary="BB"`,
    '',
    'preamble',
  ];
  for (const [ctype, body] of parts) lines.push('--BB', `Content-Type: ${ctype}`, '', body);
  lines.push('--BB--', '');
  return Buffer.from(lines.join('\r\n'));
}

describe('parseFeedback', () => {
  it('reads every recipient block of a DSN, unfolding the diagnostic and dropping types', async () => {
    const report = await parseFeedback(
      multipart('delivery-status', [
        ['text/plain', 'It failed.'],
        [
          'message/delivery-status',
          [
            'Reporting-MTA: dns; mx.dest.test',
            '',
            'Final-Recipient: rfc822; <a@dest.test>',
            'Action: failed',
            'Status: 5.2.2 (mailbox full)',
            'Diagnostic-Code: smtp; 552 5.2.2 Mailbox full',
            '  try later',
            '',
            'Final-Recipient: rfc822;b@dest.test',
            'Action: Delayed',
            'Status: 4.4.1',
            'Will-Retry-Until: Wed, 2 Dec 2026 04:00:00 +0000',
          ].join('\r\n'),
        ],
        ['text/rfc822-headers', 'Return-Path: <b+q.t.s@bounce.test>\r\nSubject: x\r\n'],
      ]),
    );
    expect(report).toEqual({
      kind: 'dsn',
      reportingMta: 'mx.dest.test',
      originalReturnPath: 'b+q.t.s@bounce.test',
      recipients: [
        {
          finalRecipient: 'a@dest.test',
          action: 'failed',
          status: '5.2.2',
          diagnostic: '552 5.2.2 Mailbox full try later',
        },
        { finalRecipient: 'b@dest.test', action: 'delayed', status: '4.4.1' },
      ],
    });
  });

  it('reads an ARF report: type, agent, original sender and recipients', async () => {
    const report = await parseFeedback(
      multipart('feedback-report', [
        ['text/plain', 'An abuse report.'],
        [
          'message/feedback-report',
          [
            'Feedback-Type: Abuse',
            'User-Agent: Microsoft JMRP',
            'Version: 1',
            'Original-Mail-From: <b+q.t.s@bounce.test>',
            'Original-Rcpt-To: <one@dest.test>',
            'Original-Rcpt-To: two@dest.test',
          ].join('\r\n'),
        ],
        ['message/rfc822', 'Return-Path: <b+q.t.s@bounce.test>\r\nSubject: x\r\n\r\nbody'],
      ]),
    );
    expect(report).toEqual({
      kind: 'arf',
      feedbackType: 'abuse',
      userAgent: 'Microsoft JMRP',
      originalMailFrom: 'b+q.t.s@bounce.test',
      originalRcptTo: ['one@dest.test', 'two@dest.test'],
      originalReturnPath: 'b+q.t.s@bounce.test',
    });
  });

  it("reads a bounce Tern's own DSN generator wrote, as another Tern receives it", async () => {
    const verp = 'b+q1.abcdef.abcdefghij@bounce.test';
    const notice = buildDsn(
      {
        kind: 'bounce',
        to: verp,
        queueId: 'Q1',
        envelope: { mailFrom: verp, recipients: [{ address: 'gone@dest.test' }] },
        arrivalDate: new Date(),
        lastAttemptAt: new Date(),
        recipients: [
          {
            recipient: { address: 'gone@dest.test', status: 'failed' },
            action: 'failed',
            reason: 'permanent',
            reply: { code: 550, enhanced: '5.1.1', text: 'No such user' },
            category: 'bad-mailbox',
          },
        ],
        originalHeaders: Buffer.from(`Return-Path: <${verp}>\r\nSubject: hi`),
      },
      { reportingMta: 'mx.dest.test' },
    );
    const chunks: Buffer[] = [];
    for await (const chunk of notice.content.stream()) chunks.push(chunk as Buffer);
    expect(await parseFeedback(Buffer.concat(chunks))).toMatchObject({
      kind: 'dsn',
      reportingMta: 'mx.dest.test',
      originalReturnPath: verp,
      recipients: [
        {
          finalRecipient: 'gone@dest.test',
          action: 'failed',
          status: '5.1.1',
          diagnostic: expect.stringContaining('550 5.1.1 No such user'),
        },
      ],
    });
  });

  it('anything else is a plain bounce, its text kept short', async () => {
    const report = await parseFeedback(
      Buffer.from(`From: x@y.test\r\nSubject: failed\r\n\r\n${'550 no such user '.repeat(100)}\r\n`),
    );
    expect(report.kind).toBe('plain');
    expect(report.kind === 'plain' && report.text?.length).toBe(300);
  });

  it('reads at most 101 blocks and 50 fields a block, and keeps values short', () => {
    const many = Array.from(
      { length: 500 },
      (_, i) => `Final-Recipient: rfc822; r${i}@x.test\nAction: failed`,
    );
    expect(reportBlocks(many.join('\n\n'))).toHaveLength(101);
    const wide = Array.from({ length: 200 }, (_, i) => `X-F${i}: v`).join('\n');
    expect(reportBlocks(wide)[0]?.size).toBe(50);
    const long = `Diagnostic-Code: smtp; ${'x'.repeat(5000)}\n${' more\n'.repeat(1000)}`;
    expect(reportBlocks(long)[0]?.get('diagnostic-code')?.length).toBeLessThanOrEqual(1000);
  });
});

describe('bounces.returnPath', () => {
  it('reads the secret from secretFile, and adds the bounce domain to the local domains once', () => {
    writeFileSync(join(dir, 'verp.key'), 'a-secret-of-enough-length\n');
    const config = validateConfig(
      {
        listeners: [{ kind: 'mx', port: 2525 }],
        localDomains: ['a.test'],
        bounces: { returnPath: { domain: 'Bounce.A.test', secretFile: 'verp.key' } },
      },
      dir,
    );
    const settings = feedbackSettings(config);
    expect(settings).toEqual({
      returnPath: { domain: 'bounce.a.test', secret: 'a-secret-of-enough-length' },
      sign: true,
      maxReportBytes: 256 * 1024,
    });
    expect(withBounceDomain(['a.test'], settings)).toEqual(['a.test', 'bounce.a.test']);
    expect(withBounceDomain(['bounce.a.test'], settings)).toEqual(['bounce.a.test']);
    writeFileSync(join(dir, 'verp.key'), 'short\n');
    expect(() => feedbackSettings(config)).toThrow(/secretFile: verp.key holds a secret shorter than 16/);
  });
});
