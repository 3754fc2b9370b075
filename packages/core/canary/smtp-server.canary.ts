// Run by scripts/smtp-server-canary.mjs against the newest smtp-server 3.x: does core, built on that
// copy, still find every private member it relies on, and do real sessions still work? Each test
// is one thing a release could break; its name says which.
import { definePlugin } from '@tern/plugin-api';
import { afterAll, describe, expect, test } from 'vitest';
import { missingSmtpServerInternals } from '../src/smtp-server-internals.js';
import {
  closeAll,
  dialFrom,
  ehlo,
  LOCAL_DOMAIN,
  message,
  sendMail,
  startListener,
  testTls,
} from '../test/helpers.js';

afterAll(closeAll);

const plain = (user: string, password: string): string =>
  Buffer.from(`\0${user}\0${password}`).toString('base64');
const auth = definePlugin({
  name: 'canary-auth',
  auth: (ctx) => (ctx.username === 'alice' && ctx.password === 'secret' ? { kind: 'accept' } : undefined),
});

test('the copy under test is the one the canary installed', async () => {
  const { default: pkg } = await import('smtp-server/package.json');
  expect((pkg as { version: string }).version).toBe(process.env.TERN_SMTP_SERVER_VERSION);
});

test('the private members core relies on are all there', () => {
  const missing = missingSmtpServerInternals();
  if (missing.length > 0) {
    throw new Error(
      `smtp-server ${process.env.TERN_SMTP_SERVER_VERSION} changed private members core relies on (see src/smtp-server-internals.ts): ${missing.join(', ')}`,
    );
  }
});

describe('real sessions', () => {
  test('EHLO, STARTTLS, AUTH PLAIN, then MAIL/RCPT/DATA relays', async () => {
    const h = await startListener(
      { kind: 'submission', tls: testTls(), authFailureDelayMs: 0 },
      { plugins: [auth] },
    );
    const c = await h.connect();
    expect(await ehlo(c)).toMatch(/\n250[ -]STARTTLS/);
    expect(await c.command('STARTTLS')).toBe('220 2.0.0 Ready to start TLS');
    await c.startTls();
    expect(await ehlo(c)).toMatch(/\n250[ -]AUTH PLAIN LOGIN/);
    expect(await c.command(`AUTH PLAIN ${plain('alice', 'wrong')}`)).toBe(
      '535 5.7.8 Authentication credentials invalid',
    );
    expect(await c.command('AUTH PLAIN')).toBe('334 ');
    expect(await c.command(plain('alice', 'secret'))).toBe('235 2.7.0 Authentication successful');
    expect(await sendMail(c, { to: ['friend@remote.example'] })).toMatch(/^250 2\.0\.0 queued as /);
    expect(h.queue.raw(0).toString()).toMatch(/with ESMTPSA/);
  });

  test('XCLIENT from a trusted proxy: a new greeting and the forwarded client', async () => {
    const h = await startListener({ xclient: true, trustedNetworks: ['127.0.0.2/32'] });
    const c = await dialFrom(h.port, '127.0.0.2');
    expect(await c.read()).toMatch(/^220 /);
    expect(await c.command('EHLO proxy.example')).toMatch(/\n250[ -]XCLIENT/);
    expect(await c.command('XCLIENT ADDR=198.51.100.7 NAME=client.example')).toMatch(/^220 /);
    await c.command('EHLO client.example');
    expect(await c.command('MAIL FROM:<a@example.org>')).toMatch(/^250 /);
    expect(await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`)).toMatch(/^250 /);
    expect(await c.command('DATA')).toMatch(/^354 /);
    expect(await c.command(`${message()}.`)).toMatch(/^250 2\.0\.0 queued as /);
    expect(h.queue.raw(0).toString()).toMatch(/client\.example \(client\.example \[198\.51\.100\.7\]\)/);
    const untrusted = await dialFrom(h.port, '127.0.0.3');
    expect(await untrusted.read()).toMatch(/^220 /);
    expect(await untrusted.command('XCLIENT ADDR=192.0.2.1')).toMatch(/^5\d\d 5\.\d\.\d /);
  });

  test('a PROXY header from a trusted client', async () => {
    const h = await startListener({ proxy: true, trustedNetworks: ['127.0.0.2/32'] });
    const c = await dialFrom(h.port, '127.0.0.2');
    c.send('PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n');
    expect(await c.read()).toMatch(/^220 /);
    await c.command('EHLO client.example');
    expect(await sendMailBound(c)).toMatch(/^250 /);
    expect(h.queue.raw(0).toString()).toMatch(/\[198\.51\.100\.7\]/);
  });

  test('a pipelined burst is answered in order, one reply per command', async () => {
    const h = await startListener();
    const c = await h.connect();
    await ehlo(c);
    const noops = 150; // more than smtp-server runs before yielding to the event loop
    c.send(
      `${'NOOP\r\n'.repeat(noops)}MAIL FROM:<a@example.org>\r\nRCPT TO:<one@${LOCAL_DOMAIN}>\r\n` +
        `RCPT TO:<nobody@remote.example>\r\nRCPT TO:<two@${LOCAL_DOMAIN}>\r\nDATA\r\n${message()}.\r\nRSET\r\n`,
    );
    const replies: string[] = [];
    for (let i = 0; i < noops + 7; i++) replies.push(await c.read());
    expect(replies.slice(0, noops).every((r) => r.startsWith('250 '))).toBe(true);
    expect(replies.slice(noops).map((r) => r.slice(0, 9))).toEqual([
      '250 2.1.0',
      '250 2.1.5',
      '554 5.7.1',
      '250 2.1.5',
      '354 End d',
      '250 2.0.0',
      '250 2.0.0',
    ]);
    expect(h.queue.messages[0]?.message.envelope.recipients.map((r) => r.address)).toEqual([
      `one@${LOCAL_DOMAIN}`,
      `two@${LOCAL_DOMAIN}`,
    ]);
  });

  test('our command parser: bare LF and over-long lines refused, a trickled line cut at its deadline', async () => {
    const h = await startListener({ limits: { maxLineLength: 512, timeouts: { command: 300 } } });
    const c = await h.connect();
    await ehlo(c);
    c.send('NOOP\n');
    expect(await c.read()).toBe('500 5.5.2 Command line must end with CRLF');
    expect(await c.command(`NOOP ${'x'.repeat(600)}`)).toMatch(/^500 5\.5\.2 /);
    c.send('NOOP');
    expect(await c.read()).toBe(
      '421 4.4.2 Timeout waiting for the end of the command line, closing connection',
    );
  });
});

/** MAIL, RCPT and DATA over a bound client (the helpers' sendMail takes the test kit's client). */
async function sendMailBound(c: { command(line: string): Promise<string> }): Promise<string> {
  await c.command('MAIL FROM:<a@example.org>');
  await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`);
  await c.command('DATA');
  return c.command(`${message()}.`);
}
