// The relay policy over real SMTP: every classic routing trick is refused for clients that may
// not relay, with the null sender and with a normal one; trusted and authenticated clients relay.
import { definePlugin } from '@tern/plugin-api';
import type { RawSmtp } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { closeAll, ehlo, type Harness, LOCAL_DOMAIN, sendMail, startListener } from './helpers.js';

afterAll(closeAll);

const RELAY_DENIED = '554 5.7.1 Relay access denied';
const BAD_ADDRESS = /^501 5\.1\.3 /;

// [name, RCPT TO argument, expected reply]
const TRICKS: [string, string, string | RegExp][] = [
  ['plain remote domain', '<user@remote.example>', RELAY_DENIED],
  ['percent hack', `<user%remote.example@${LOCAL_DOMAIN}>`, RELAY_DENIED],
  [
    'percent hack, upper-case local domain',
    `<user%remote.example@${LOCAL_DOMAIN.toUpperCase()}>`,
    RELAY_DENIED,
  ],
  ['bang path without a domain', '<remote.example!user>', BAD_ADDRESS],
  ['bang path at a local domain', `<remote.example!user@${LOCAL_DOMAIN}>`, RELAY_DENIED],
  ['source route through us to a remote user', `<@${LOCAL_DOMAIN}:user@remote.example>`, RELAY_DENIED],
  [
    'source route through a remote host to a local user',
    `<@remote.example:user@${LOCAL_DOMAIN}>`,
    RELAY_DENIED,
  ],
  ['multi-hop source route', `<@a.example,@${LOCAL_DOMAIN}:user@remote.example>`, RELAY_DENIED],
  ['quoted local part with @', `<"user@remote.example"@${LOCAL_DOMAIN}>`, BAD_ADDRESS],
  ['quoted local part with %', `<"user%remote.example"@${LOCAL_DOMAIN}>`, RELAY_DENIED],
  ['quoted local part with !', `<"remote.example!user"@${LOCAL_DOMAIN}>`, RELAY_DENIED],
  ['double @', `<user@remote.example@${LOCAL_DOMAIN}>`, BAD_ADDRESS],
  ['IPv4 address literal of this server', '<user@[127.0.0.1]>', RELAY_DENIED],
  ['other IPv4 address literal', '<user@[192.0.2.1]>', RELAY_DENIED],
  ['IPv6 address literal', '<user@[IPv6:::1]>', RELAY_DENIED],
  ['local domain as a subdomain of a remote one', `<user@${LOCAL_DOMAIN}.remote.example>`, RELAY_DENIED],
  ['remote domain with a trailing dot', '<user@remote.example.>', BAD_ADDRESS],
  ['unbracketed', `user%remote.example@${LOCAL_DOMAIN}`, BAD_ADDRESS],
];

const SENDERS = ['', 'sender@example.org'];

describe('a client that may not relay', () => {
  let h: Harness;
  let rcptHookCalls: string[];
  beforeAll(async () => {
    rcptHookCalls = [];
    // A plugin that would accept every recipient: the built-in policy must win anyway.
    const acceptAll = definePlugin({
      name: 'accept-all',
      rcptTo: (ctx) => {
        rcptHookCalls.push(ctx.recipient.address);
        return { kind: 'accept' };
      },
    });
    h = await startListener(
      { trustedNetworks: ['10.0.0.0/8'], limits: { maxErrors: 1000 } },
      { plugins: [acceptAll] },
    );
  });

  for (const sender of SENDERS) {
    describe(`with sender <${sender}>`, () => {
      let c: RawSmtp;
      beforeAll(async () => {
        c = await h.connect();
        await ehlo(c);
        expect(await c.command(`MAIL FROM:<${sender}>`)).toBe('250 2.1.0 Accepted');
      });

      test.each(TRICKS)('%s: RCPT TO:%s is refused', async (_name, argument, expected) => {
        const reply = await c.command(`RCPT TO:${argument}`);
        if (typeof expected === 'string') expect(reply).toBe(expected);
        else expect(reply).toMatch(expected);
      });

      test('no recipient was accepted, nothing can be sent, the hook never saw a trick', async () => {
        expect(await c.command('DATA')).toMatch(/^503 5\.5\.1 /);
        expect(rcptHookCalls).toEqual([]);
        // The same session still takes a genuine local recipient: the refusals above were not blanket ones.
        expect(await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`)).toBe('250 2.1.5 Accepted');
        expect(rcptHookCalls).toEqual([`user@${LOCAL_DOMAIN}`]);
        rcptHookCalls.length = 0;
        expect(await c.command('RSET')).toMatch(/^250 /);
      });
    });
  }

  test('nothing was queued', () => {
    expect(h.queue.attempts).toBe(0);
  });
});

describe('local domains', () => {
  test('matching is case-insensitive and IDNA-aware; postmaster without a domain is local', async () => {
    const h = await startListener({ localDomains: [LOCAL_DOMAIN, 'bücher.test', '[192.0.2.9]'] });
    const c = await h.connect();
    await ehlo(c);
    await c.command('MAIL FROM:<>');
    expect(await c.command(`RCPT TO:<User@${LOCAL_DOMAIN.toUpperCase()}>`)).toMatch(/^250 /);
    expect(await c.command('RCPT TO:<info@xn--bcher-kva.test>')).toMatch(/^250 /);
    expect(await c.command('RCPT TO:<info@bücher.test> SMTPUTF8')).toMatch(/^5/); // SMTPUTF8 is a MAIL parameter
    expect(await c.command('RCPT TO:<info@bücher.test>')).toMatch(/^250 /);
    // an address literal is local only because it is listed
    expect(await c.command('RCPT TO:<user@[192.0.2.9]>')).toMatch(/^250 /);
    expect(await c.command('RCPT TO:<user@[127.0.0.1]>')).toBe(RELAY_DENIED);
    expect(await c.command('RCPT TO:<postmaster>')).toMatch(/^250 /);
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send('Subject: x\r\n\r\nx\r\n.\r\n');
    expect(await c.read()).toMatch(/^250 2\.0\.0 /);
    // Addresses are kept as given, except that smtp-server turns A-labels into U-labels, so the
    // two spellings of bücher.test are one recipient.
    expect(h.queue.messages[0]?.message.envelope.recipients.map((r) => r.address)).toEqual([
      `User@${LOCAL_DOMAIN.toUpperCase()}`,
      'info@bücher.test',
      'user@[192.0.2.9]',
      `postmaster@${LOCAL_DOMAIN}`,
    ]);
  });
});

describe('clients that may relay', () => {
  test('a client in trustedNetworks relays to any domain, tricks included (it could relay anyway)', async () => {
    const h = await startListener({ trustedNetworks: ['127.0.0.0/8', '2001:db8::/32'] });
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c, { to: ['user@remote.example', `user%remote.example@${LOCAL_DOMAIN}`] })).toMatch(
      /^250 2\.0\.0 queued as /,
    );
    expect(h.queue.messages[0]?.message.envelope.recipients.map((r) => r.address)).toEqual([
      'user@remote.example',
      `user%remote.example@${LOCAL_DOMAIN}`,
    ]);
  });

  test('a client outside trustedNetworks does not', async () => {
    const h = await startListener({ trustedNetworks: ['127.0.0.2/32', '::1/128'] });
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c, { to: ['user@remote.example'] })).toBe(RELAY_DENIED);
  });

  test('an authenticated client relays (AUTH accepted by a plugin on an mx listener with insecure AUTH allowed)', async () => {
    const auth = definePlugin({
      name: 'auth',
      auth: (ctx) => (ctx.username === 'alice' && ctx.password === 'pw' ? { kind: 'accept' } : undefined),
    });
    const h = await startListener({ auth: true, allowInsecureAuth: true }, { plugins: [auth] });
    const c = await h.connect();
    await ehlo(c);
    expect(await sendMail(c, { to: ['user@remote.example'] })).toBe(RELAY_DENIED);
    await c.command('RSET');
    const token = Buffer.from('\0alice\0pw').toString('base64');
    expect(await c.command(`AUTH PLAIN ${token}`)).toBe('235 2.7.0 Authentication successful');
    expect(await sendMail(c, { to: ['user@remote.example'] })).toMatch(/^250 2\.0\.0 queued as /);
  });
});
