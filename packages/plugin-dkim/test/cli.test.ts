// The functions behind `tern dkim keygen` and `tern dkim check`, round trip through a real DNS server.
import { createPublicKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { checkDnsRecord, dnsRecordFor, generateKey, writeKey } from '../src/index.js';

let dns: TestDns;
let dir: string;
beforeAll(async () => {
  dns = await startDnsServer({});
  dir = await mkdtemp(join(tmpdir(), 'tern-dkim-cli-'));
});
afterAll(async () => {
  await dns?.stop();
  await rm(dir, { recursive: true, force: true });
});

const resolver = (): { servers: string[]; timeout: number } => ({ servers: [dns.server], timeout: 2000 });

describe('generateKey', () => {
  test('RSA: 2048 bits by default, with the record to publish', () => {
    const key = generateKey({ domain: 'Example.com.', selector: 'Jan2026' });
    expect(key).toMatchObject({ type: 'rsa', algorithm: 'rsa-sha256', bits: 2048 });
    expect(key.dnsName).toBe('jan2026._domainkey.example.com');
    expect(key.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(key.txtRecord).toBe(`v=DKIM1; k=rsa; p=${key.publicKeyBase64}`);
    // p= is the DER SubjectPublicKeyInfo of the key's public half.
    const spki = createPublicKey({
      key: Buffer.from(key.publicKeyBase64, 'base64'),
      format: 'der',
      type: 'spki',
    });
    expect(spki.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(dnsRecordFor(key.privateKeyPem)).toBe(key.txtRecord);
  });

  test('Ed25519: p= is the bare 32-byte key (RFC 8463)', () => {
    const key = generateKey({ domain: 'example.com', selector: 'ed', type: 'ed25519' });
    expect(Buffer.from(key.publicKeyBase64, 'base64')).toHaveLength(32);
    expect(key.txtRecord).toBe(`v=DKIM1; k=ed25519; p=${key.publicKeyBase64}`);
  });

  test('refuses sizes outside 1024–4096 and --bits for Ed25519', () => {
    expect(() => generateKey({ domain: 'example.com', selector: 's', bits: 512 })).toThrow(/1024 to 4096/);
    expect(() => generateKey({ domain: 'example.com', selector: 's', bits: 8192 })).toThrow(/1024 to 4096/);
    expect(() => generateKey({ domain: 'example.com', selector: 's', type: 'ed25519', bits: 256 })).toThrow(
      /RSA keys only/,
    );
  });
});

describe('writeKey', () => {
  test('writes mode 0600 and will not replace a key unless told', async () => {
    const key = generateKey({ domain: 'example.com', selector: 's', type: 'ed25519' });
    const file = join(dir, 'example.com.s.pem');
    await writeKey(file, key.privateKeyPem);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readFile(file, 'utf8')).toBe(key.privateKeyPem);
    const other = generateKey({ domain: 'example.com', selector: 's', type: 'ed25519' });
    await expect(writeKey(file, other.privateKeyPem)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(file, 'utf8')).toBe(key.privateKeyPem);
    // Overwriting also tightens a file that was readable by others.
    const loose = join(dir, 'loose.pem');
    await writeFile(loose, 'old', { mode: 0o644 });
    await writeKey(loose, other.privateKeyPem, { overwrite: true });
    expect((await stat(loose)).mode & 0o777).toBe(0o600);
    await expect(writeKey(join(dir, 'junk.pem'), 'not a key')).rejects.toThrow();
  });
});

describe('checkDnsRecord', () => {
  test.each([
    'rsa',
    'ed25519',
  ] as const)('%s: keygen → publish → check is ok; another key is not', async (type) => {
    const key = generateKey({ domain: 'example.com', selector: `cli-${type}`, type });
    dns.set(key.dnsName, { TXT: ['v=spf1 -all', key.txtRecord] });
    const ok = await checkDnsRecord({
      domain: 'example.com',
      selector: `cli-${type}`,
      key: key.privateKeyPem,
      resolver: resolver(),
    });
    expect(ok).toEqual({ ok: true, dnsName: key.dnsName, found: key.txtRecord, testing: false });

    const other = generateKey({ domain: 'example.com', selector: `cli-${type}`, type });
    const bad = await checkDnsRecord({
      domain: 'example.com',
      selector: `cli-${type}`,
      key: other.privateKeyPem,
      resolver: resolver(),
    });
    expect(bad.ok).toBe(false);
    if (bad.ok) return;
    expect(bad.found).toBe(key.txtRecord);
    expect(bad.reason).toContain('the published key differs from the configured key');
    expect(bad.reason).toContain(other.txtRecord);
  });

  test('reads the key from a file, and tells t=y (testing)', async () => {
    const key = generateKey({ domain: 'example.org', selector: 'f', type: 'ed25519' });
    const file = join(dir, 'f.pem');
    await writeKey(file, key.privateKeyPem);
    dns.set(key.dnsName, { TXT: [`${key.txtRecord}; t=y`] });
    expect(
      await checkDnsRecord({ domain: 'example.org', selector: 'f', keyFile: file, resolver: resolver() }),
    ).toMatchObject({
      ok: true,
      testing: true,
    });
  });

  test('explains what is wrong: no record, no DKIM record, wrong type, revoked, two records, lookup failure', async () => {
    const key = generateKey({ domain: 'example.net', selector: 'x', type: 'rsa', bits: 1024 });
    const ed = generateKey({ domain: 'example.net', selector: 'x', type: 'ed25519' });
    const check = () =>
      checkDnsRecord({ domain: 'example.net', selector: 'x', key: key.privateKeyPem, resolver: resolver() });
    const reason = async (): Promise<string> => {
      const r = await check();
      return r.ok ? 'ok' : r.reason;
    };
    expect(await reason()).toBe(`no TXT record at x._domainkey.example.net; publish: ${key.txtRecord}`);
    dns.set(key.dnsName, { TXT: ['google-site-verification=abc'] });
    expect(await reason()).toMatch(/hold no DKIM key/);
    dns.set(key.dnsName, { TXT: [ed.txtRecord] });
    expect(await reason()).toBe('the record is for a k=ed25519 key, the configured key is rsa');
    dns.set(key.dnsName, { TXT: ['v=DKIM1; k=rsa; p='] });
    expect(await reason()).toMatch(/revoked/);
    dns.set(key.dnsName, { TXT: [key.txtRecord, key.txtRecord.replace('v=DKIM1; ', '')] });
    expect(await reason()).toMatch(/2 DKIM records/);
    dns.set(key.dnsName, { TXT: [`v=DKIM1; h=sha1; p=${key.publicKeyBase64}`] });
    expect(await reason()).toMatch(/h=sha1 does not allow sha256/);
    dns.set(key.dnsName, { TXT: [key.txtRecord] });
    expect(await reason()).toBe('ok');
    dns.servfail(key.dnsName);
    expect(await reason()).toMatch(/DNS lookup of x\._domainkey\.example\.net failed: ESERVFAIL/);
  });
});
