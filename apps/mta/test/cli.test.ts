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

describe('tern dkim keygen and check', () => {
  test.each([
    'rsa',
    'ed25519',
  ])('%s: keygen, publish in DNS, check matches; another key does not', async (type) => {
    const key = join(dir, `${type}.pem`);
    const gen = await tern([
      'dkim',
      'keygen',
      '--domain',
      'example.test',
      '--selector',
      type,
      '--type',
      type,
      '--out',
      key,
    ]);
    expect(gen.status).toBe(0);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    const record = /^(\S+)\. IN TXT "(.+)"$/.exec(gen.stdout.trim());
    expect(record?.[1]).toBe(`${type}._domainkey.example.test`);
    dns.set(record![1]!, { TXT: [record![2]!] });
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
    await tern([
      'dkim',
      'keygen',
      '--domain',
      'example.test',
      '--selector',
      'x',
      '--type',
      type,
      '--out',
      other,
    ]);
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
