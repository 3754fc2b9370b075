// Signatures made through the queue stage and checked by verifiers we did not write: dkimpy
// (Debian's python3-dkim) and mailauth, both fetching the public keys from a real DNS server.
import { definePlugin, type Plugin } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type Canonicalization, type DkimOptions, dkim, generateKey } from '../src/index.js';
import {
  CRLF,
  type DkimpyResult,
  dkimpyPython,
  message,
  sendThrough,
  signaturesOf,
  verifyWithDkimpy,
  verifyWithMailauth,
} from './helpers.js';

const rsa = generateKey({ domain: 'example.com', selector: 'rsa1', type: 'rsa', bits: 2048 });
const ed = generateKey({ domain: 'example.com', selector: 'ed1', type: 'ed25519' });
const org = generateKey({ domain: 'example.org', selector: 'org1', type: 'rsa', bits: 2048 });
const relay = generateKey({ domain: 'relay.example', selector: 'relay', type: 'rsa', bits: 2048 });
const rsa1024 = generateKey({ domain: 'weak.example', selector: 'old', type: 'rsa', bits: 1024 });

let dns: TestDns;

beforeAll(async () => {
  // Fail here, with the install hint, rather than with a confusing spawn error in every test.
  dkimpyPython();
  dns = await startDnsServer({
    [rsa.dnsName]: { TXT: [rsa.txtRecord] },
    [ed.dnsName]: { TXT: [ed.txtRecord] },
    [org.dnsName]: { TXT: [org.txtRecord] },
    [relay.dnsName]: { TXT: [relay.txtRecord] },
    [rsa1024.dnsName]: { TXT: [rsa1024.txtRecord] },
  });
});

afterAll(async () => {
  await dns?.stop();
});

const rsaOnly = (extra: Partial<DkimOptions> = {}): Plugin =>
  dkim({ domains: { 'example.com': { selector: 'rsa1', key: rsa.privateKeyPem } }, ...extra });

/** example.com with an RSA and an Ed25519 key, both active: two signatures per message. */
const dualSigner = (): Plugin =>
  dkim({
    domains: {
      'example.com': [
        { selector: 'rsa1', key: rsa.privateKeyPem, algorithm: 'rsa-sha256' },
        { selector: 'ed1', key: ed.privateKeyPem, algorithm: 'ed25519-sha256' },
      ],
    },
  });

const valid = (results: DkimpyResult[]): boolean[] => results.map((r) => r.valid);

/** Replaces the first occurrence of `from` in the message, failing if it is not there. */
function tamper(raw: Buffer, from: string, to: string): Buffer {
  const text = raw.toString('latin1');
  expect(text).toContain(from);
  return Buffer.from(text.replace(from, to), 'latin1');
}

describe('RSA-SHA256', () => {
  test.each<Canonicalization>([
    'relaxed/relaxed',
    'simple/simple',
    'relaxed/simple',
    'simple/relaxed',
  ])('%s verifies with dkimpy and mailauth', async (canonicalization) => {
    const { raw } = await sendThrough(rsaOnly({ canonicalization }), message());
    const [signature] = signaturesOf(raw);
    expect(signature).toContain(`c=${canonicalization};`);
    expect(signature).toContain('a=rsa-sha256;');
    expect(signature).toMatch(/ d=example\.com;/);
    expect(signature).toMatch(/ s=rsa1;/);
    expect(await verifyWithDkimpy(raw, dns)).toMatchObject([
      { valid: true, domain: 'example.com', selector: 'rsa1' },
    ]);
    expect(await verifyWithMailauth(raw, dns)).toMatchObject([{ result: 'pass', domain: 'example.com' }]);
  });

  test.each<Canonicalization>([
    'relaxed/relaxed',
    'simple/simple',
  ])('%s: odd bodies and headers verify (empty body, no final CRLF, folded and spaced fields)', async (canonicalization) => {
    const bodies = ['', 'no final line end', '\r\n\r\n\r\n', '  \t\r\n', 'tabs\t\tand  spaces  \r\n\r\n'];
    for (const body of bodies) {
      const raw = message('"Smith, Alice (Ops)" <alice@EXAMPLE.com>', body, [
        'X-Long: a folded\r\n\tcontinuation line\r\n  and another',
        // dkimpy refuses WSP before the colon (obsolete syntax), so only after it here.
        'X-Spaced:   spaced   out   ',
      ]);
      const signed = (await sendThrough(rsaOnly({ canonicalization }), raw)).raw;
      expect(valid(await verifyWithDkimpy(signed, dns)), JSON.stringify(body)).toEqual([true]);
    }
  });

  test('t= always, x= only with expiresIn, never l=', async () => {
    const before = Math.floor(Date.now() / 1000);
    const plain = signaturesOf((await sendThrough(rsaOnly(), message())).raw)[0] as string;
    expect(plain).toMatch(/ t=\d+;/);
    expect(plain).not.toMatch(/[; ]x=/);
    expect(plain).not.toMatch(/[; ]l=/);
    const expiring = (await sendThrough(rsaOnly({ expiresIn: 86_400 }), message())).raw;
    const sig = signaturesOf(expiring)[0] as string;
    const t = Number(/ t=(\d+);/.exec(sig)?.[1]);
    const x = Number(/ x=(\d+);/.exec(sig)?.[1]);
    expect(t).toBeGreaterThanOrEqual(before);
    expect(x - t).toBe(86_400);
    expect(valid(await verifyWithDkimpy(expiring, dns))).toEqual([true]);
  });

  test('a 1024-bit key signs (and verifies) with a warning at start-up (init)', async () => {
    const plugin = dkim({ domains: { 'weak.example': { selector: 'old', key: rsa1024.privateKeyPem } } });
    const { raw } = await sendThrough(plugin, message('a@weak.example'));
    expect(valid(await verifyWithDkimpy(raw, dns))).toEqual([true]);
    const session = testPlugins(plugin);
    await session.host.runObserve('init', {});
    const warnings = session.logs.filter((r) => r.level === 'warn').map((r) => r.message);
    expect(warnings).toEqual([expect.stringMatching(/domains\["weak\.example"\].*1024 bits is weak/)]);
    // A 2048-bit key gives no warning.
    const quiet = testPlugins(rsaOnly());
    await quiet.host.runObserve('init', {});
    expect(quiet.logs.filter((r) => r.level === 'warn')).toEqual([]);
  });
});

describe('Ed25519-SHA256 (RFC 8463)', () => {
  test('verifies with dkimpy (PyNaCl) and mailauth', async () => {
    const plugin = dkim({ domains: { 'example.com': { selector: 'ed1', key: ed.privateKeyPem } } });
    const { raw } = await sendThrough(plugin, message());
    expect(signaturesOf(raw)[0]).toContain('a=ed25519-sha256;');
    expect(await verifyWithDkimpy(raw, dns)).toMatchObject([
      { valid: true, selector: 'ed1', algorithm: 'ed25519-sha256' },
    ]);
    expect(await verifyWithMailauth(raw, dns)).toMatchObject([
      { result: 'pass', algorithm: 'ed25519-sha256' },
    ]);
  });

  test('dual signing: a domain with an RSA and an Ed25519 key gets both signatures, each valid', async () => {
    const { raw } = await sendThrough(dualSigner(), message());
    expect(signaturesOf(raw)).toHaveLength(2);
    const results = await verifyWithDkimpy(raw, dns);
    expect(results.map((r) => [r.selector, r.valid]).sort()).toEqual([
      ['ed1', true],
      ['rsa1', true],
    ]);
    const mailauth = await verifyWithMailauth(raw, dns);
    expect(mailauth.map((r) => r.result)).toEqual(['pass', 'pass']);
  });
});

describe('what a signature protects', () => {
  test('a changed body fails verification (both algorithms)', async () => {
    const plugin = dualSigner();
    const { raw } = await sendThrough(plugin, message());
    expect(valid(await verifyWithDkimpy(raw, dns))).toEqual([true, true]);
    const changed = tamper(raw, 'this  is', 'this was');
    const results = await verifyWithDkimpy(changed, dns);
    expect(valid(results)).toEqual([false, false]);
    // mailauth reports a body hash mismatch as neutral with a comment, not as fail.
    expect(await verifyWithMailauth(changed, dns)).toMatchObject([
      { result: 'neutral', comment: expect.stringMatching(/body hash/) },
      { result: 'neutral', comment: expect.stringMatching(/body hash/) },
    ]);
  });

  test('a changed signed header fails; an added unsigned header does not', async () => {
    const { raw } = await sendThrough(rsaOnly(), message());
    expect(
      valid(await verifyWithDkimpy(tamper(raw, 'Subject: DKIM test', 'Subject: DKIM t3st'), dns)),
    ).toEqual([false]);
    // Control: the signature is not simply brittle; fields outside h= may be added on the way.
    const withReceived = Buffer.concat([Buffer.from('Received: from somewhere by mx.example.net\r\n'), raw]);
    expect(valid(await verifyWithDkimpy(withReceived, dns))).toEqual([true]);
  });

  test('oversigning: a second From or Subject added after signing fails; without oversigning it passes', async () => {
    const add = (raw: Buffer, field: string): Buffer => Buffer.concat([Buffer.from(`${field}\r\n`), raw]);
    const over = (await sendThrough(rsaOnly(), message())).raw;
    expect(signaturesOf(over)[0]).toMatch(/h=from:from:/);
    expect(valid(await verifyWithDkimpy(over, dns))).toEqual([true]);
    expect(valid(await verifyWithDkimpy(add(over, 'Subject: Urgent: wire money'), dns))).toEqual([false]);
    // dkimpy always adds an extra From itself (Debian bug 644046), so mailauth judges the From case.
    const forgedFrom = add(over, 'From: Mallory <ceo@example.com>');
    expect(valid(await verifyWithDkimpy(forgedFrom, dns))).toEqual([false]);
    expect((await verifyWithMailauth(forgedFrom, dns)).map((r) => r.result)).toEqual(['fail']);

    // Control: without oversigning the verifiers take the original (lowest) field and the additions pass.
    const plain = (await sendThrough(rsaOnly({ oversign: [] }), message())).raw;
    expect(signaturesOf(plain)[0]).not.toMatch(/from:from/);
    expect(valid(await verifyWithDkimpy(add(plain, 'Subject: Urgent: wire money'), dns))).toEqual([true]);
    const plainForged = add(plain, 'From: Mallory <ceo@example.com>');
    expect((await verifyWithMailauth(plainForged, dns)).map((r) => r.result)).toEqual(['pass']);
  });

  test('an absent oversigned field (Cc) cannot be added later', async () => {
    const { raw } = await sendThrough(rsaOnly(), message());
    const withCc = Buffer.concat([Buffer.from('Cc: eve@example.net\r\n'), raw]);
    expect(valid(await verifyWithDkimpy(withCc, dns))).toEqual([false]);
  });
});

describe('choosing keys', () => {
  const twoDomains = (): Plugin =>
    dkim({
      domains: {
        'example.com': { selector: 'rsa1', key: rsa.privateKeyPem },
        'EXAMPLE.org': { selector: 'org1', key: org.privateKeyPem },
      },
      fallback: { domain: 'relay.example', selector: 'relay', key: relay.privateKeyPem },
    });

  test('two domains sign with their own keys, chosen by the From domain', async () => {
    const plugin = twoDomains();
    const com = (await sendThrough(plugin, message('alice@example.com'))).raw;
    const orgMail = (await sendThrough(plugin, message('"B" <bob@Example.ORG>'))).raw;
    expect(await verifyWithDkimpy(com, dns)).toMatchObject([
      { valid: true, domain: 'example.com', selector: 'rsa1' },
    ]);
    expect(await verifyWithDkimpy(orgMail, dns)).toMatchObject([
      { valid: true, domain: 'example.org', selector: 'org1' },
    ]);
  });

  test('a key that DNS does not publish for that domain does not verify', async () => {
    // example.org's key signing as example.com: the plugin is told so, DNS says otherwise.
    const plugin = dkim({ domains: { 'example.com': { selector: 'rsa1', key: org.privateKeyPem } } });
    const { raw } = await sendThrough(plugin, message());
    expect(valid(await verifyWithDkimpy(raw, dns))).toEqual([false]);
  });

  test('an unknown From domain is signed with the fallback (the relay domain)', async () => {
    const { raw } = await sendThrough(twoDomains(), message('someone@customer.example'));
    expect(await verifyWithDkimpy(raw, dns)).toMatchObject([{ valid: true, domain: 'relay.example' }]);
  });

  test('without a fallback, an unknown From domain is left unsigned', async () => {
    const { raw } = await sendThrough(rsaOnly(), message('someone@customer.example'));
    expect(signaturesOf(raw)).toEqual([]);
  });

  test('matchParentDomain signs a subdomain with its parent key; off by default', async () => {
    const from = 'news@mail.example.com';
    expect(signaturesOf((await sendThrough(rsaOnly(), message(from))).raw)).toEqual([]);
    const { raw } = await sendThrough(rsaOnly({ matchParentDomain: true }), message(from));
    expect(await verifyWithDkimpy(raw, dns)).toMatchObject([{ valid: true, domain: 'example.com' }]);
  });

  test('rotation: an inactive selector stays configured but does not sign', async () => {
    const plugin = dkim({
      domains: {
        'example.com': [
          { selector: 'rsa1', key: rsa.privateKeyPem, active: false },
          { selector: 'ed1', key: ed.privateKeyPem },
        ],
      },
    });
    const { raw } = await sendThrough(plugin, message());
    expect(await verifyWithDkimpy(raw, dns)).toMatchObject([{ valid: true, selector: 'ed1' }]);
  });

  test('mail from clients neither authenticated nor trusted is not signed unless signUntrusted', async () => {
    const untrusted = { trusted: false };
    expect(signaturesOf((await sendThrough(rsaOnly(), message(), untrusted)).raw)).toEqual([]);
    const signed = (await sendThrough(rsaOnly({ signUntrusted: true }), message(), untrusted)).raw;
    expect(valid(await verifyWithDkimpy(signed, dns))).toEqual([true]);
  });
});

describe('in the queue stage', () => {
  test('a message already carrying our signature for that d= and s= is not signed twice', async () => {
    const plugin = dualSigner();
    const once = (await sendThrough(rsaOnly(), message())).raw;
    expect(signaturesOf(once)).toHaveLength(1);
    // Sent through again (a second hop of our own, a retry): rsa1 is skipped, ed1 still signs.
    const twice = (await sendThrough(plugin, once)).raw;
    const sigs = signaturesOf(twice);
    expect(sigs).toHaveLength(2);
    expect(sigs.filter((s) => / s=rsa1;/.test(s))).toHaveLength(1);
    expect(valid(await verifyWithDkimpy(twice, dns))).toEqual([true, true]);
    const thrice = (await sendThrough(plugin, twice)).raw;
    expect(signaturesOf(thrice)).toHaveLength(2);
  });

  // Found by fuzz-sign: mailauth reads a line that is not a field as part of the field above it,
  // dkimpy refuses the message, and we read it as a line of its own; a signature over such a
  // block verified nowhere. It is left unsigned, with a warning naming the line.
  test.each([
    ['a line without a colon', 'A line without a colon'],
    ['an empty field name', ': empty name'],
    ['a space in the field name', 'Bad Name: value'],
    ['a continuation with no field before it', ' continuation'],
  ])('a header block with %s is not signed, with a warning', async (_, line) => {
    const lines = message().split(CRLF);
    lines.splice(line.startsWith(' ') ? 0 : 1, 0, line);
    const { raw, logs } = await sendThrough(rsaOnly(), lines.join(CRLF));
    expect(signaturesOf(raw)).toEqual([]);
    expect(logs.filter((r) => r.level === 'warn').map((r) => r.message)).toEqual([
      expect.stringContaining(
        `not signed: the header block has a line that is not a field: ${JSON.stringify(line)}`,
      ),
    ]);
    // The same message with the line made a field of its own is signed, and verifies.
    lines.splice(line.startsWith(' ') ? 0 : 1, 1, 'X-Fixed: value');
    const fixed = (await sendThrough(rsaOnly(), lines.join(CRLF))).raw;
    expect(valid(await verifyWithDkimpy(fixed, dns))).toEqual([true]);
    expect(await verifyWithMailauth(fixed, dns)).toMatchObject([{ result: 'pass' }]);
  });

  test("another signer's signature (other d=) does not stop ours", async () => {
    const upstream = (await sendThrough(rsaOnly(), message('alice@example.com'))).raw;
    const plugin = dkim({ domains: { 'example.com': { selector: 'ed1', key: ed.privateKeyPem } } });
    const { raw } = await sendThrough(plugin, upstream);
    expect(signaturesOf(raw)).toHaveLength(2);
  });

  test('signs after every other queue transform, whatever the config order', async () => {
    const rewriter = definePlugin({
      name: 'subject-tag',
      queue(ctx) {
        ctx.message.headers.set('Subject', '[ext] DKIM test');
      },
    });
    const lateRewriter = definePlugin({
      name: 'late-tag',
      enforce: 'post',
      queue(ctx) {
        ctx.message.headers.append('List-Unsubscribe', '<mailto:unsub@example.com>');
      },
    });
    const { raw } = await sendThrough([rsaOnly(), rewriter, lateRewriter], message());
    expect(raw.toString('latin1')).toContain('Subject: [ext] DKIM test');
    const [signature] = signaturesOf(raw);
    expect(signature).toMatch(/list-unsubscribe/);
    expect(valid(await verifyWithDkimpy(raw, dns))).toEqual([true]);
  });
});
