// End of DATA is only <CRLF>.<CRLF>. Each look-alike below is followed by the commands of a second
// message; at most one message may be queued and never the smuggled one.
import type { RawSmtp } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { closeAll, ehlo, type Harness, LOCAL_DOMAIN, sleep, startListener } from './helpers.js';

afterAll(closeAll);

const SEQUENCES: Record<string, string> = {
  'LF . LF': '\n.\n',
  'LF . CRLF': '\n.\r\n',
  'CR . CR': '\r.\r',
  'CR . CRLF': '\r.\r\n',
  'CRLF NUL . CRLF': '\r\n\x00.\r\n',
  'LF . CR': '\n.\r',
  'CR . LF': '\r.\n',
};

const FIRST = 'From: <a@example.org>\r\nSubject: first\r\n\r\nfirst body';
const SMUGGLED =
  'MAIL FROM:<smuggler@example.org>\r\n' +
  `RCPT TO:<victim@${LOCAL_DOMAIN}>\r\n` +
  'DATA\r\n' +
  'Subject: smuggled\r\n\r\nsmuggled body\r\n.\r\n';

async function openTransaction(h: Harness): Promise<RawSmtp> {
  const c = await h.connect();
  await ehlo(c);
  expect(await c.command('MAIL FROM:<a@example.org>')).toMatch(/^250 /);
  expect(await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`)).toMatch(/^250 /);
  expect(await c.command('DATA')).toMatch(/^354 /);
  return c;
}

/** Sends the sequence one byte per TCP write, so a parser that decides at chunk edges is tested too. */
async function sendSplit(c: RawSmtp, sequence: string): Promise<void> {
  c.send(FIRST);
  for (const byte of sequence) {
    await sleep(2);
    c.send(byte);
  }
  await sleep(2);
  c.send(SMUGGLED);
}

/** After the DATA reply the next reply must be NOOP's own: nothing smuggled was answered. */
async function expectNothingElseAnswered(c: RawSmtp): Promise<void> {
  expect(await c.command('NOOP')).toBe('250 2.0.0 OK');
  expect(await c.command('QUIT')).toMatch(/^221 /);
}

describe('policy reject (default): the whole message is refused, nothing queued', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startListener();
  });

  for (const [name, sequence] of Object.entries(SEQUENCES)) {
    test(`${name} in one write`, async () => {
      const before = h.queue.attempts;
      const c = await openTransaction(h);
      c.send(FIRST + sequence + SMUGGLED);
      expect(await c.read()).toBe(
        '550 5.6.0 Message contains bare CR, bare LF or NUL; use CRLF line endings',
      );
      await expectNothingElseAnswered(c);
      expect(h.queue.attempts).toBe(before);
      expect(h.queue.messages).toHaveLength(0);
    });

    test(`${name} split byte by byte`, async () => {
      const before = h.queue.attempts;
      const c = await openTransaction(h);
      await sendSplit(c, sequence);
      expect(await c.read()).toMatch(/^550 5\.6\.0 /);
      await expectNothingElseAnswered(c);
      expect(h.queue.attempts).toBe(before);
    });
  }
});

describe('policy normalize: one message is queued and the smuggled commands stay body text', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startListener({ bareLineEndings: 'normalize' });
  });

  for (const [name, sequence] of Object.entries(SEQUENCES)) {
    test(name, async () => {
      const before = h.queue.messages.length;
      const c = await openTransaction(h);
      c.send(FIRST + sequence + SMUGGLED);
      expect(await c.read()).toMatch(/^250 2\.0\.0 queued as /);
      await expectNothingElseAnswered(c);
      expect(h.queue.messages).toHaveLength(before + 1);
      const queued = h.queue.messages.at(-1)!;
      expect(queued.message.envelope.mailFrom).toBe('a@example.org');
      expect(queued.message.envelope.recipients.map((r) => r.address)).toEqual([`user@${LOCAL_DOMAIN}`]);
      const raw = h.queue.raw(h.queue.messages.length - 1).toString('latin1');
      expect(raw).toContain('first body');
      expect(raw).toContain('MAIL FROM:<smuggler@example.org>\r\n');
      expect(raw).toContain('smuggled body\r\n');
      // Normalized: every line ends in CRLF and no NUL is left.
      expect(raw).not.toMatch(/\r(?!\n)|(?<!\r)\n|\x00/);
    });
  }
});

describe('the real terminator and dot-stuffing', () => {
  test('commands pipelined after <CRLF>.<CRLF> run as a second transaction', async () => {
    const h = await startListener();
    const c = await openTransaction(h);
    c.send(`${FIRST}\r\n.\r\n${SMUGGLED}`);
    expect(await c.read()).toMatch(/^250 2\.0\.0 queued as /);
    expect(await c.read()).toMatch(/^250 /); // MAIL
    expect(await c.read()).toMatch(/^250 /); // RCPT
    expect(await c.read()).toMatch(/^354 /);
    expect(await c.read()).toMatch(/^250 2\.0\.0 queued as /);
    expect(h.queue.messages).toHaveLength(2);
  });

  test('a dot-stuffed line keeps one dot and does not end the message', async () => {
    const h = await startListener();
    const c = await openTransaction(h);
    c.send('Subject: dots\r\n\r\nline one\r\n..\r\n...two dots\r\nlast\r\n.\r\n');
    expect(await c.read()).toMatch(/^250 2\.0\.0 queued as /);
    const raw = h.queue.raw(0).toString('latin1');
    expect(raw.endsWith('\r\n\r\nline one\r\n.\r\n..two dots\r\nlast\r\n')).toBe(true);
  });
});
