// API keys of HTTP injection: made, listed and removed by `tern apikey` as an operator runs it,
// stored only as scrypt hashes, checked against the file as it is now, scoped to sender domains.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ApiKeyStore, addApiKey, keyMaySend, parseApiKeysFile, removeApiKey } from '../src/http/api-keys.js';
import { tern } from './ops-fixtures/tern.js';

const dir = mkdtempSync(join(tmpdir(), 'tern-apikeys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const FAST = { N: 1024, r: 8, p: 1 };

describe('API keys', () => {
  it('a token works until its key is replaced or removed; the file holds no secret', async () => {
    const file = join(dir, 'keys-1');
    const token = await addApiKey(file, 'shop-app', ['Shop.test', 'news.shop.test'], FAST);
    expect(token).toMatch(/^tern_shop-app_[A-Za-z0-9_-]{43}$/);
    const secret = token.slice('tern_shop-app_'.length); // base64url: the secret may hold '_' itself
    expect(readFileSync(file, 'utf8')).not.toContain(secret);
    expect(readFileSync(file, 'utf8')).toMatch(
      /^shop-app:scrypt\$1024\$8\$1\$\S+:shop\.test,news\.shop\.test\n$/,
    );

    const store = await ApiKeyStore.open(file);
    expect(await store.authenticate(token)).toEqual({
      id: 'shop-app',
      domains: ['shop.test', 'news.shop.test'],
    });
    expect(await store.authenticate(`${token.slice(0, -1)}x`)).toBeUndefined();
    expect(await store.authenticate(`tern_other_${'a'.repeat(43)}`)).toBeUndefined();
    expect(await store.authenticate('nonsense')).toBeUndefined();

    // Replaced: the old token stops at once, the new one works (the file is read again).
    const next = await addApiKey(file, 'shop-app', ['shop.test'], FAST);
    expect(await store.authenticate(token)).toBeUndefined();
    expect(await store.authenticate(next)).toEqual({ id: 'shop-app', domains: ['shop.test'] });
    expect(await removeApiKey(file, 'shop-app')).toBe(true);
    expect(await removeApiKey(file, 'shop-app')).toBe(false);
    expect(await store.authenticate(next)).toBeUndefined();
  });

  it('a key sends only from its sender domains, or from any with *', () => {
    const key = { id: 'k', domains: ['shop.test'] };
    expect(keyMaySend(key, 'news@Shop.test')).toBe(true);
    expect(keyMaySend(key, 'news@other.test')).toBe(false);
    expect(keyMaySend(key, 'news@sub.shop.test')).toBe(false);
    expect(keyMaySend(key, '')).toBe(false);
    expect(keyMaySend({ id: 'k', domains: ['*'] }, 'a@anything.test')).toBe(true);
  });

  it('names the line of a broken file and the field of a bad key', async () => {
    expect(() => parseApiKeysFile('# keys\nok:scrypt$1$1$1$a$b:shop.test\nbroken line\n', 'keys')).toThrow(
      'keys:3: expected id:scrypt$N$r$p$salt$hash:domain,domain (or *)',
    );
    await expect(addApiKey(join(dir, 'keys-2'), 'bad id', ['shop.test'], FAST)).rejects.toThrow(
      'key id "bad id": 1 to 64 letters, digits and dashes',
    );
    await expect(addApiKey(join(dir, 'keys-2'), 'k', ['not a domain'], FAST)).rejects.toThrow(
      'domains: "not a domain": sender domains like example.com, or * for any',
    );
    const broken = join(dir, 'keys-3');
    writeFileSync(broken, 'garbage\n');
    await expect(addApiKey(broken, 'k', ['shop.test'], FAST)).rejects.toThrow(`${broken}:1:`);
    expect(readFileSync(broken, 'utf8')).toBe('garbage\n');
  });

  it('tern apikey add prints the token once; list shows ids and domains; remove says what it did', async () => {
    const file = join(dir, 'keys-cli');
    const added = await tern(['apikey', 'add', 'app1', '--file', file, '--domains', 'shop.test,*']);
    expect(added.status).toBe(0);
    expect(added.stdout).toMatch(/^tern_app1_[A-Za-z0-9_-]{43}\n$/);
    expect(added.stderr).toMatch(/shown only now/);
    expect(await (await ApiKeyStore.open(file)).authenticate(added.stdout.trim())).toMatchObject({
      id: 'app1',
    });
    expect(await tern(['apikey', 'list', '--file', file])).toMatchObject({
      status: 0,
      stdout: 'app1\tshop.test,*\n',
    });
    expect(await tern(['apikey', 'remove', 'app1', '--file', file])).toMatchObject({ status: 0 });
    expect(await tern(['apikey', 'remove', 'app1', '--file', file])).toMatchObject({
      status: 1,
      stderr: `tern apikey remove: ${file} has no key app1\n`,
    });
    expect((await tern(['apikey', 'add', 'app2', '--file', file])).status).toBe(2); // --domains missing
  });
});
