// The tern CLI's key and user commands, run as a user runs them (a real process).
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FileUserStore } from '@tern/core';
import { run, startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const dir = mkdtempSync(join(tmpdir(), 'tern-cli-'));
let dns: TestDns;

beforeAll(async () => {
  dns = await startDnsServer();
});
afterAll(async () => {
  await dns.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs tern without blocking this process: the test DNS server answers from this event loop. */
const tern = (args: string[], input = '') => run(process.execPath, [cli, ...args], { input });

describe('tern user add', () => {
  test('stores a salted scrypt hash that the users file authenticator accepts', async () => {
    const file = join(dir, 'users.txt');
    const added = await tern(['user', 'add', '--file', file, 'alice'], 'correct horse battery\n');
    expect(added.stderr).toBe('');
    expect(added.status).toBe(0);
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/^alice:scrypt\$/m);
    expect(text).not.toContain('correct horse');
    expect((await tern(['user', 'add', '--file', file, 'bob'], 'short\n')).status).toBe(2);
    const store = await FileUserStore.open(file);
    expect(await store.authenticate('alice', 'correct horse battery')).toBe(true);
    expect(await store.authenticate('alice', 'wrong password')).toBe(false);
  });
});

/** The one zone-file TXT line keygen prints: its owner name, its strings, and their joined value. */
function txtRecord(stdout: string): { name: string; strings: string[]; value: string } {
  const line = /^(\S+)\. IN TXT (.+)$/.exec(stdout.trim());
  if (!line) throw new Error(`not a zone-file TXT line: ${stdout}`);
  const strings = [...(line[2] as string).matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1] as string);
  return { name: line[1] as string, strings, value: strings.join('') };
}

/** tern dkim keygen for example.test. */
const keygen = (selector: string, out: string, type = 'rsa') =>
  tern(['dkim', 'keygen', '--domain', 'example.test', '--selector', selector, '--type', type, '--out', out]);

describe('tern dkim keygen and check', () => {
  test('keygen prints a 2048-bit RSA record as strings of at most 255 characters, as zone files need', async () => {
    const gen = await keygen('long', join(dir, 'long.pem'));
    expect(gen.status, gen.stderr).toBe(0);
    const record = txtRecord(gen.stdout);
    expect(record.strings.length).toBeGreaterThan(1);
    for (const string of record.strings) expect(string.length).toBeLessThanOrEqual(255);
    expect(record.value).toMatch(/^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]{300,}={0,2}$/);
  });

  test.each([
    'rsa',
    'ed25519',
  ])('%s: keygen, publish in DNS, check matches; another key does not', async (type) => {
    const key = join(dir, `${type}.pem`);
    const gen = await keygen(type, key, type);
    expect(gen.status).toBe(0);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    const record = txtRecord(gen.stdout);
    expect(record.name).toBe(`${type}._domainkey.example.test`);
    dns.set(record.name, { TXT: [record.value] });
    const check = await tern([
      'dkim',
      'check',
      '--domain',
      'example.test',
      '--selector',
      type,
      '--key',
      key,
      '--dns',
      dns.server,
    ]);
    expect(check.stdout).toContain('ok, DNS publishes this key');
    expect(check.status).toBe(0);

    const other = join(dir, `${type}-other.pem`);
    await keygen('x', other, type);
    const mismatch = await tern([
      'dkim',
      'check',
      '--domain',
      'example.test',
      '--selector',
      type,
      '--key',
      other,
      '--dns',
      dns.server,
    ]);
    expect(mismatch.status).toBe(1);
    expect(mismatch.stdout).toContain('mismatch');
  });

  test('keygen refuses to overwrite a key and bad arguments exit 2', async () => {
    const key = join(dir, 'once.pem');
    expect(
      (await tern(['dkim', 'keygen', '--domain', 'a.test', '--selector', 's', '--out', key])).status,
    ).toBe(0);
    expect(
      (await tern(['dkim', 'keygen', '--domain', 'a.test', '--selector', 's', '--out', key])).status,
    ).not.toBe(0);
    expect((await tern(['dkim', 'keygen', '--selector', 's'])).status).toBe(2);
  });
});
