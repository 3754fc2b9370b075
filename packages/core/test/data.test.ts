// The intake over real SMTP: bare CR / LF / NUL policy, size and recipient limits, the Received
// header, loop detection, the header block limit and the 998-octet line limit.
import { definePlugin } from '@tern/plugin-api';
import { readAll } from '@tern/plugin-api/host';
import { afterAll, describe, expect, test } from 'vitest';
import {
  closeAll,
  ehlo,
  HOSTNAME,
  LOCAL_DOMAIN,
  message,
  sendMail,
  startListener,
  testTls,
} from './helpers.js';

afterAll(closeAll);

describe('bare CR, bare LF and NUL in DATA', () => {
  const CASES: [string, string][] = [
    ['bare LF', 'Subject: x\r\n\r\nline one\nline two\r\n'],
    ['bare CR', 'Subject: x\r\n\r\nline one\rline two\r\n'],
    ['NUL', 'Subject: x\r\n\r\nline\x00one\r\n'],
    ['bare LF in the header block', 'Subject: x\nX-Other: y\r\n\r\nbody\r\n'],
    ['CR as the last byte before the terminator', 'Subject: x\r\n\r\nbody\r\r\n'],
  ];

  test.each(CASES)('policy reject: %s refuses the whole message with 550 5.6.0', async (_name, data) => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c, { data })).toBe(
      '550 5.6.0 Message contains bare CR, bare LF or NUL; use CRLF line endings',
    );
    expect(h.queue.attempts).toBe(0);
    // the session goes on
    expect(await sendMail(c)).toMatch(/^250 2\.0\.0 queued as /);
  });

  test('policy normalize: bare LF and bare CR become CRLF, NUL is dropped, clean chunks are untouched', async () => {
    const h = await startListener({ bareLineEndings: 'normalize' });
    const c = await h.connect();
    await ehlo(c);
    const data = 'Subject: x\nX-A: 1\r\n\r\none\ntwo\rthree\x00four\r\n\r\nclean line\r\n';
    expect(await sendMail(c, { data })).toMatch(/^250 2\.0\.0 queued as /);
    const raw = h.queue.raw(0).toString('latin1');
    const body = raw.slice(raw.indexOf('\r\n\r\n') + 4);
    expect(body).toBe('one\r\ntwo\r\nthreefour\r\n\r\nclean line\r\n');
    expect(raw).toContain('\r\nSubject: x\r\nX-A: 1\r\n\r\n');
  });
});

describe('lines over 998 octets (RFC 5322 2.1.1)', () => {
  const line = (n: number): string => `${'y'.repeat(n)}\r\n`;

  test('refused with 550 5.6.0 by default, in the body or the header block; 998 is fine', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c, { data: message('ok', line(998) + line(998)) })).toMatch(/^250 /);
    for (const data of [
      message('long body', line(999)),
      message('long at end', `short\r\n${'z'.repeat(5000)}`),
      `Subject: ${'h'.repeat(1000)}\r\n\r\nbody\r\n`,
    ]) {
      expect(await sendMail(c, { data })).toMatch(/^550 5\.6\.0 Message has a line longer than 998 octets/);
    }
    expect(h.queue.attempts).toBe(1);
    expect(await sendMail(c)).toMatch(/^250 /); // the session goes on
  });

  test('wrap: body lines are broken every 998 octets before the hooks see them', async () => {
    let seen = '';
    const h = await startListener(
      { longLines: 'wrap' },
      {
        plugins: [
          definePlugin({
            name: 'reader',
            message: async (ctx) => {
              for await (const chunk of ctx.message.body()) seen += (chunk as Buffer).toString('latin1');
            },
          }),
        ],
      },
    );
    const c = await h.connect();
    await ehlo(c);
    const long = 'a'.repeat(2500);
    expect(await sendMail(c, { data: message('wrapped', `${long}\r\n${line(998)}`) })).toMatch(/^250 /);
    // message() ends the body with one more CRLF.
    const expected = `${'a'.repeat(998)}\r\n${'a'.repeat(998)}\r\n${'a'.repeat(504)}\r\n${line(998)}\r\n`;
    expect(seen).toBe(expected);
    const raw = h.queue.raw(0).toString('latin1');
    expect(raw.endsWith(`\r\n\r\n${expected}`)).toBe(true);
    expect(raw.split('\r\n').every((l) => l.length <= 998)).toBe(true);
    // Header lines are not rewritten: one over the limit is refused even here.
    expect(await sendMail(c, { data: `Subject: ${'h'.repeat(1000)}\r\n\r\nbody\r\n` })).toMatch(
      /^550 5\.6\.0 /,
    );
  });
});

describe('message size', () => {
  test('SIZE is advertised; MAIL FROM SIZE= over it and an oversized message get 552 5.3.4; nothing is queued', async () => {
    const h = await startListener({ limits: { maxMessageSize: 2000 } });
    const c = await h.connect();
    expect(await ehlo(c)).toMatch(/\n250[ -]SIZE 2000(\n|$)/);
    expect(await c.command('MAIL FROM:<a@example.org> SIZE=2001')).toBe(
      '552 5.3.4 message exceeds fixed maximum message size 2000',
    );
    const big = message('big', 'x'.repeat(2100));
    expect(await sendMail(c, { data: big })).toBe(
      '552 5.3.4 Message size exceeds fixed maximum message size',
    );
    expect(h.queue.attempts).toBe(0);
    const fits = message('fits', `${'x'.repeat(88)}\r\n`.repeat(20));
    expect(await sendMail(c, { data: fits })).toMatch(/^250 2\.0\.0 queued as /);
  });

  test('a header block over maxHeaderBytes gets 552 5.3.4', async () => {
    const h = await startListener({ limits: { maxHeaderBytes: 1024 } });
    const c = await h.connect();
    await ehlo(c);
    const headers = Array.from({ length: 40 }, (_, i) => `X-Filler-${i}: ${'y'.repeat(40)}\r\n`).join('');
    expect(await sendMail(c, { data: `${headers}\r\nbody\r\n` })).toBe(
      '552 5.3.4 Message header block exceeds fixed maximum size',
    );
    expect(h.queue.attempts).toBe(0);
  });
});

describe('recipients', () => {
  test('maxRecipients below 100 is raised to 100 with a warning; the 101st recipient gets 452 4.5.3', async () => {
    const h = await startListener({ limits: { maxRecipients: 5 } });
    expect(h.listener.options.limits.maxRecipients).toBe(100);
    expect(
      h.logs.some((r) => r.level === 'warn' && /maxRecipients raised to 100/.test(r.message ?? '')),
    ).toBe(true);
    const c = await h.connect();
    await ehlo(c);
    await c.command('MAIL FROM:<a@example.org>');
    // pipelined, as PIPELINING allows
    c.send(Array.from({ length: 101 }, (_, i) => `RCPT TO:<u${i}@${LOCAL_DOMAIN}>\r\n`).join(''));
    const replies: string[] = [];
    for (let i = 0; i < 101; i++) replies.push(await c.read());
    expect(replies.slice(0, 100).every((r) => r === '250 2.1.5 Accepted')).toBe(true);
    expect(replies[100]).toBe('452 4.5.3 too many recipients');
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send(`${message()}.\r\n`);
    expect(await c.read()).toMatch(/^250 2\.0\.0 /);
    expect(h.queue.messages[0]?.message.envelope.recipients).toHaveLength(100);
  });

  test('a repeated recipient is one envelope entry', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    expect(
      await sendMail(c, { to: [`a@${LOCAL_DOMAIN}`, `A@${LOCAL_DOMAIN}`, `b@${LOCAL_DOMAIN}`] }),
    ).toMatch(/^250 /);
    expect(h.queue.messages[0]?.message.envelope.recipients.map((r) => r.address)).toEqual([
      `A@${LOCAL_DOMAIN}`,
      `b@${LOCAL_DOMAIN}`,
    ]);
  });
});

describe('Received header', () => {
  const DATE = String.raw`(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000`;

  test('EHLO, one recipient: from, by, with ESMTP, id, for and date; prepended above the original headers', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c, 'client.example');
    expect(await sendMail(c)).toMatch(/^250 /);
    const raw = h.queue.raw(0).toString('latin1');
    const received = new RegExp(
      `^Received: from client\\.example \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n` +
        `\\tby ${HOSTNAME.replaceAll('.', '\\.')} \\(Tern\\) with ESMTP id [0-9a-z]+\\.1\\r\\n` +
        `\\tfor <user@${LOCAL_DOMAIN}>; ${DATE}\\r\\nFrom: <sender@example\\.org>\\r\\n`,
    );
    expect(raw).toMatch(received);
    expect(raw).not.toContain('Message-ID'); // an mx listener does not add one for unauthenticated mail
  });

  test('HELO and two recipients: with SMTP and no for clause; the id counts transactions', async () => {
    const h = await startListener();
    const c = await h.connect();
    expect(await c.command('HELO old.example')).toMatch(/^250 /);
    expect(await sendMail(c)).toMatch(/^250 /);
    expect(await sendMail(c, { to: [`a@${LOCAL_DOMAIN}`, `b@${LOCAL_DOMAIN}`] })).toMatch(/^250 /);
    const second = h.queue.raw(1).toString('latin1');
    expect(second).toMatch(
      new RegExp(`^Received: from old\\.example .*\\r\\n\\tby .* with SMTP id [0-9a-z]+\\.2; ${DATE}\\r\\n`),
    );
    expect(second).not.toMatch(/\tfor </);
  });

  test('a HELO name with characters that could break the header is neutralised', async () => {
    const h = await startListener();
    const c = await h.connect();
    expect(await c.command('EHLO x(evil);by')).toMatch(/^250/);
    expect(await sendMail(c)).toMatch(/^250 /);
    expect(h.queue.raw(0).toString('latin1')).toMatch(/^Received: from x\?evil\?\?by \(/);
  });
});

describe('loop detection', () => {
  const withReceived = (count: number): string =>
    `${Array.from({ length: count }, (_, i) => `Received: from hop${i}.example by hop${i + 1}.example; Mon, 1 Jan 2030 00:00:00 +0000\r\n`).join('')}${message()}`;

  test('a message that arrives with more than maxReceivedHeaders (100) Received headers gets 554 5.4.6', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c, { data: withReceived(101) })).toBe(
      '554 5.4.6 Too many Received headers: mail loop detected',
    );
    expect(h.queue.attempts).toBe(0);
    expect(await sendMail(c, { data: withReceived(100) })).toMatch(/^250 2\.0\.0 queued as /);
    expect(
      h.queue
        .raw(0)
        .toString('latin1')
        .match(/^Received:/gm),
    ).toHaveLength(101);
  });

  test('the limit is configurable', async () => {
    const h = await startListener({ limits: { maxReceivedHeaders: 3 } });
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c, { data: withReceived(4) })).toMatch(/^554 5\.4\.6 /);
    expect(await sendMail(c, { data: withReceived(3) })).toMatch(/^250 /);
  });
});

describe('message shapes', () => {
  test('a message with headers only and one with an empty header block are queued intact', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c, { data: 'Subject: only headers\r\n' })).toMatch(/^250 /);
    expect(await sendMail(c, { data: '\r\nbody without headers\r\n' })).toMatch(/^250 /);
    const first = h.queue.raw(0).toString('latin1');
    expect(first.endsWith('\r\nSubject: only headers\r\n\r\n')).toBe(true);
    const second = h.queue.raw(1).toString('latin1');
    expect(second).toMatch(/^Received: [\s\S]*\r\n\r\nbody without headers\r\n$/);
    expect(second.indexOf('\r\n\r\n')).toBe(second.lastIndexOf('\r\n\r\n'));
  });

  test('the envelope carries DSN and 8BITMIME/SMTPUTF8 parameters', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    expect(
      await c.command('MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2Bd'),
    ).toMatch(/^250 /);
    expect(
      await c.command(`RCPT TO:<u@${LOCAL_DOMAIN}> NOTIFY=FAILURE,DELAY ORCPT=rfc822;u@${LOCAL_DOMAIN}`),
    ).toMatch(/^250 /);
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send(`${message()}.\r\n`);
    expect(await c.read()).toMatch(/^250 /);
    expect(h.queue.messages[0]?.message.envelope).toEqual({
      mailFrom: 'a@example.org',
      recipients: [
        { address: `u@${LOCAL_DOMAIN}`, notify: ['FAILURE', 'DELAY'], orcpt: `rfc822;u@${LOCAL_DOMAIN}` },
      ],
      body: '8BITMIME',
      smtputf8: true,
      ret: 'HDRS',
      envid: 'abc+d',
    });
    expect(h.queue.messages[0]?.message.source).toMatchObject({
      listener: 'test',
      remoteAddress: '127.0.0.1',
      helo: 'client.example',
    });
  });

  test('REQUIRETLS (TLS only) and a TLS-Required: No header reach the envelope; REQUIRETLS wins', async () => {
    const h = await startListener({ tls: testTls() });
    const c = await h.connect();
    expect(await ehlo(c)).not.toMatch(/REQUIRETLS/);
    expect(await c.command('MAIL FROM:<a@example.org> REQUIRETLS')).toMatch(/^530 5\.7\.0 /);
    expect(await c.command('STARTTLS')).toMatch(/^220 /);
    await c.startTls();
    expect(await ehlo(c)).toMatch(/^250[- ]REQUIRETLS$/m);
    const send = async (mailParams: string, headers: string): Promise<void> => {
      expect(await c.command(`MAIL FROM:<a@example.org>${mailParams}`)).toMatch(/^250 /);
      expect(await c.command(`RCPT TO:<u@${LOCAL_DOMAIN}>`)).toMatch(/^250 /);
      expect(await c.command('DATA')).toMatch(/^354 /);
      c.send(`${headers}${message()}.\r\n`);
      expect(await c.read()).toMatch(/^250 /);
    };
    await send(' REQUIRETLS', 'TLS-Required: No\r\n');
    await send('', 'TLS-Required:  no \r\n');
    await send('', 'TLS-Required: Yes\r\n');
    const envelopes = h.queue.messages.map((m) => m.message.envelope);
    expect(envelopes.map((e) => [e.requireTls, e.tlsRequiredNo])).toEqual([
      [true, undefined],
      [undefined, true],
      [undefined, undefined],
    ]);
  });

  test('X-Tern-Tag: taken from trusted clients into envelope.tags, dropped from others, never queued as a field', async () => {
    const send = async (trusted: boolean, fields: string) => {
      const h = await startListener({ trustedNetworks: trusted ? ['127.0.0.1/32'] : [] });
      const c = await h.connect();
      await ehlo(c);
      expect(await c.command('MAIL FROM:<a@example.org>')).toMatch(/^250 /);
      expect(await c.command(`RCPT TO:<u@${LOCAL_DOMAIN}>`)).toMatch(/^250 /);
      expect(await c.command('DATA')).toMatch(/^354 /);
      c.send(`${fields}${message()}.\r\n`);
      const reply = await c.read();
      const queued = h.queue.messages[0]?.message;
      const stored = queued ? (await readAll(queued.content)).toString() : '';
      return { reply, tags: queued?.envelope.tags, stored };
    };
    const trusted = await send(true, 'X-Tern-Tag: news, eu-1\r\nx-tern-tag: news\r\nX-Tern-Tag: weekly\r\n');
    expect(trusted.reply).toMatch(/^250 /);
    expect(trusted.tags).toEqual(['news', 'eu-1', 'weekly']);
    expect(trusted.stored).not.toMatch(/x-tern-tag/i);
    const outsider = await send(false, 'X-Tern-Tag: forged\r\n');
    expect(outsider.reply).toMatch(/^250 /);
    expect(outsider.tags).toBeUndefined();
    expect(outsider.stored).not.toMatch(/x-tern-tag/i);
    const bad = await send(true, 'X-Tern-Tag: not a tag\r\n');
    expect(bad.reply).toMatch(/^550 5\.6\.0 X-Tern-Tag "not a tag" is not a tag/);
    expect(bad.stored).toBe('');
  });

  test('ENVID and ORCPT out of bounds or malformed get 501 5.5.4 and change nothing', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    expect(await c.command(`MAIL FROM:<a@example.org> ENVID=${'e'.repeat(101)}`)).toMatch(
      /^501 5\.5\.4 ENVID/,
    );
    expect(await c.command(`RCPT TO:<u@${LOCAL_DOMAIN}>`)).toMatch(/^503 /);
    expect(await c.command('MAIL FROM:<a@example.org> ENVID=e+2B')).toMatch(/^250 /);
    expect(await c.command(`RCPT TO:<u@${LOCAL_DOMAIN}> ORCPT=u@${LOCAL_DOMAIN}`)).toMatch(/^501 5\.5\.4 /);
    expect(await c.command(`RCPT TO:<u@${LOCAL_DOMAIN}> NOTIFY=NEVER,DELAY`)).toMatch(/^501 5\.5\.4 /);
    expect(
      await c.command(`RCPT TO:<u@${LOCAL_DOMAIN}> NOTIFY=DELAY ORCPT=rfc822;u+2Bx@${LOCAL_DOMAIN}`),
    ).toMatch(/^250 /);
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send(`${message()}.\r\n`);
    expect(await c.read()).toMatch(/^250 /);
    expect(h.queue.messages[0]?.message.envelope).toMatchObject({
      envid: 'e+',
      recipients: [{ address: `u@${LOCAL_DOMAIN}`, notify: ['DELAY'], orcpt: `rfc822;u+x@${LOCAL_DOMAIN}` }],
    });
  });
});
