// Command-level behaviour over real SMTP: enhanced codes on every error, line-ending policy for
// command lines, line length, unknown parameters, error limit and timeouts.

import { waitFor } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { closeAll, dialFrom, ehlo, LOCAL_DOMAIN, sendMail, sleep, startListener } from './helpers.js';

afterAll(closeAll);

// One enhanced code of the reply's class right after the code, then human text.
const ERROR_REPLY = /^([45])\d\d ([45])\.\d{1,3}\.\d{1,3} [^\s]/;

function expectCleanError(reply: string): void {
  const match = ERROR_REPLY.exec(reply);
  expect(match, reply).not.toBeNull();
  expect(match?.[1]).toBe(match?.[2]);
  // exactly one enhanced code, and nothing that looks like an exception, a stack or a path
  expect(reply.match(/\b[245]\.\d{1,3}\.\d{1,3}\b/g), reply).toHaveLength(1);
  expect(reply).not.toMatch(/Error:|\bat \S+ \(|node_modules|\/work\/|TypeError|undefined/);
}

describe('every error reply carries exactly one enhanced status code', () => {
  test('errors from smtp-server and from core', async () => {
    const h = await startListener({ limits: { maxErrors: 100 } });
    const c = await h.connect();
    const replies: string[] = [];
    replies.push(await c.command('MAIL FROM:<a@example.org>')); // before EHLO
    replies.push(await c.command('EHLO'));
    replies.push(await c.command('HELO a b'));
    await ehlo(c);
    for (const line of [
      'FOO',
      'MAIL FROM:bad',
      `RCPT TO:<user@${LOCAL_DOMAIN}>`,
      'DATA',
      'VRFY',
      'STARTTLS',
      'AUTH PLAIN',
      'XCLIENT ADDR=192.0.2.1',
      'MAIL FROM:<a@example.org> FOO=bar',
      'MAIL FROM:<a@example.org> SIZE=abc',
      'MAIL FROM:<a@example.org> BODY=BINARYMIME',
      'MAIL FROM:<a@example.org> SIZE=99999999999',
    ]) {
      replies.push(await c.command(line));
    }
    expect(await c.command('MAIL FROM:<a@example.org>')).toBe('250 2.1.0 Accepted');
    replies.push(await c.command('MAIL FROM:<b@example.org>')); // nested
    replies.push(await c.command('RCPT TO:<>'));
    replies.push(await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}> NOTIFY=SOMETIMES`));
    replies.push(await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}> FOO=1`));
    replies.push(await c.command('RCPT TO:<user@remote.example>'));
    expect(replies).toHaveLength(20);
    for (const reply of replies) expectCleanError(reply);
    expect(replies).toContain('555 5.5.4 MAIL FROM/RCPT TO parameter not recognized');
    expect(replies).toContain('552 5.3.4 message exceeds fixed maximum message size 26214400');
    expect(replies).toContain('554 5.7.1 Relay access denied');
    expect(replies).toContain('502 5.5.1 AUTH not available');
  });

  test('an HTTP request is closed with 421 4.7.0', async () => {
    const h = await startListener();
    const c = await h.connect();
    expect(await c.command('GET / HTTP/1.1')).toBe('421 4.7.0 HTTP requests not allowed');
    await c.closed;
  });
});

describe('command lines', () => {
  test('a bare LF command line is refused (500 5.5.2) and not executed under policy reject', async () => {
    const h = await startListener();
    const c = await h.connect();
    c.send('EHLO client.example\n');
    expect(await c.read()).toBe('500 5.5.2 Command line must end with CRLF');
    c.send('MAIL FROM:<a@example.org>\n');
    expect(await c.read()).toMatch(/^500 5\.5\.2 /);
    await ehlo(c);
    // the MAIL above was not executed: no transaction is open
    expect(await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`)).toMatch(/^503 5\.5\.1 /);
  });

  test('a bare LF command line is accepted under policy normalize', async () => {
    const h = await startListener({ bareLineEndings: 'normalize' });
    const c = await h.connect();
    c.send('EHLO client.example\n');
    expect(await c.read()).toMatch(/^250-/);
    c.send('MAIL FROM:<a@example.org>\n');
    expect(await c.read()).toBe('250 2.1.0 Accepted');
  });

  test('a CR or NUL inside a command line is refused', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    c.send('MAIL FROM:<a@example.org>\rRCPT TO:<x@local.test>\r\n');
    expect(await c.read()).toBe('500 5.5.2 Command line contains a bare CR or NUL');
    c.send('NOOP\x00\r\n');
    expect(await c.read()).toMatch(/^500 5\.5\.2 /);
    expect(await c.command('NOOP')).toBe('250 2.0.0 OK');
  });

  test('a line over maxLineLength gets 500 5.5.2 and the connection goes on', async () => {
    const h = await startListener({ limits: { maxLineLength: 100 } });
    const c = await h.connect();
    await ehlo(c);
    c.send(`NOOP ${'x'.repeat(60)}`);
    await sleep(20);
    c.send(`${'y'.repeat(60)}\r\n`); // the long line arrives in two writes
    expect(await c.read()).toBe('500 5.5.2 Line too long');
    expect(await c.command(`MAIL FROM:<${'a'.repeat(80)}@example.org>`)).toBe('500 5.5.2 Line too long');
    expect(await c.command('NOOP')).toBe('250 2.0.0 OK');
  });

  test('a command without CRLF is not run when the client closes after it', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    expect(await c.command('MAIL FROM:<a@example.org>')).toMatch(/^250 /);
    expect(await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`)).toMatch(/^250 /);
    c.send('DATA');
    c.close();
    await sleep(100);
    expect(h.logs.some((r) => r.message === 'closed')).toBe(true);
    expect(h.queue.attempts).toBe(0);
  });
});

describe('clients that vanish', () => {
  test.each([
    'close',
    'reset',
  ] as const)('a client that goes away mid-DATA (%s) queues nothing and harms no one', async (how) => {
    const h = await startListener();
    const c = await dialFrom(h.port, '127.0.0.1');
    await c.read();
    await c.command('EHLO client.example');
    await c.command('MAIL FROM:<a@example.org>');
    await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`);
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send('Subject: half\r\n\r\nhalf a message');
    await sleep(50);
    if (how === 'reset') c.reset();
    else c.close();
    await waitFor(() => h.listener.connections === 0);
    expect(h.logs.some((r) => r.message === 'DATA aborted')).toBe(true);
    expect(h.queue.attempts).toBe(0);
    const next = await h.connect();
    await ehlo(next);
    expect(await sendMail(next)).toMatch(/^250 2\.0\.0 /);
  });
});

describe('limits on a session', () => {
  test('maxErrors error replies end the connection with 421 4.7.0', async () => {
    const h = await startListener({ limits: { maxErrors: 3 } });
    const c = await h.connect();
    await ehlo(c);
    expect(await c.command('MAIL FROM:bad')).toMatch(/^501 /);
    expect(await c.command('MAIL FROM:bad')).toMatch(/^501 /);
    expect(await c.command('MAIL FROM:bad')).toMatch(/^501 /);
    expect(await c.read()).toBe('421 4.7.0 Too many errors, closing connection');
    await c.closed;
  });

  test('an idle client is closed after the socket timeout with 421 4.4.2', async () => {
    const h = await startListener({ limits: { timeouts: { socket: 300 } } });
    const c = await h.connect();
    await ehlo(c);
    const started = Date.now();
    expect(await c.read()).toBe('421 4.4.2 Timeout - closing connection');
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    await c.closed;
  });

  test('the socket timeout defaults to RFC 5321 five minutes (smtp-server alone would use 60 s)', async () => {
    // The 300 ms test above proves the value reaches smtp-server; this one pins the default.
    const h = await startListener();
    expect(h.listener.options.limits.timeouts.socket).toBe(5 * 60_000);
  });

  test('DATA that does not finish within the data timeout gets 421 4.4.2 and nothing is queued', async () => {
    const h = await startListener({ limits: { timeouts: { data: 300 } } });
    const c = await h.connect();
    await ehlo(c);
    await c.command('MAIL FROM:<a@example.org>');
    await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`);
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send('Subject: slow\r\n\r\nstill typing');
    expect(await c.read()).toBe('421 4.4.2 Timeout waiting for the end of DATA, closing connection');
    await c.closed;
    expect(h.queue.attempts).toBe(0);
  });
});

test('RSET ends the transaction; a second transaction on the same connection works', async () => {
  const h = await startListener();
  const c = await h.connect();
  await ehlo(c);
  await c.command('MAIL FROM:<a@example.org>');
  await c.command(`RCPT TO:<one@${LOCAL_DOMAIN}>`);
  expect(await c.command('RSET')).toMatch(/^250 /);
  expect(await c.command('DATA')).toMatch(/^503 5\.5\.1 /);
  expect(await sendMail(c, { to: [`two@${LOCAL_DOMAIN}`] })).toMatch(/^250 2\.0\.0 queued as /);
  expect(await sendMail(c, { to: [`three@${LOCAL_DOMAIN}`] })).toMatch(/^250 2\.0\.0 queued as /);
  expect(h.queue.messages.map((m) => m.message.envelope.recipients.map((r) => r.address))).toEqual([
    [`two@${LOCAL_DOMAIN}`],
    [`three@${LOCAL_DOMAIN}`],
  ]);
});
