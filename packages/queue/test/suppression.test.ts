// The suppression list on both backends: the same behaviour through SuppressionStore, plus what
// only one has (Redis: shared by every node; embedded: a version 3 store gains the table).
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import {
  messageTagScopes,
  type Suppression,
  type SuppressionStore,
  suppressionEntry,
  suppressionScope,
  suppressionScopes,
} from '../src/suppression.js';
import { testMessage } from './redis-fixtures/deliveries.js';
import { storeFixtures } from './store-fixtures.js';

const { embedded, onRedis, storePath, closed } = storeFixtures();

const now = Date.now();
const entry = (fields: Partial<Suppression> & { address: string }): Suppression =>
  suppressionEntry({ scope: 'shop.test', ...fields }, { source: 'manual', now });

describe.each([
  ['embedded', async () => embedded().suppressions],
  ['redis', async () => (await onRedis()).suppressions],
])('suppression list: %s', (_name, open: () => Promise<SuppressionStore>) => {
  it('finds an entry for the sender domain or for every sender, case-insensitively', async () => {
    const list = await open();
    await list.add([
      entry({
        address: 'Gone@X.test',
        source: 'bounce',
        category: 'bad-mailbox',
        reason: '550 5.1.1 No such user',
      }),
      entry({ scope: '*', address: 'angry@x.test', source: 'complaint', reason: 'abuse report' }),
    ]);
    const scopes = suppressionScopes('news@Shop.test');
    expect(scopes).toEqual(['shop.test', '*']);
    expect(await list.find('gone@x.test', scopes)).toMatchObject({
      scope: 'shop.test',
      address: 'gone@x.test',
      source: 'bounce',
      category: 'bad-mailbox',
      createdAt: now,
    });
    expect(await list.find('ANGRY@x.test', scopes)).toMatchObject({ scope: '*', source: 'complaint' });
    // Another sender domain is not suppressed for gone@, but is for angry@ (every sender).
    expect(await list.find('gone@x.test', suppressionScopes('a@other.test'))).toBeUndefined();
    expect(await list.find('angry@x.test', suppressionScopes('a@other.test'))).toMatchObject({ scope: '*' });
    expect(await list.count()).toBe(2);
  });

  it('keeps tag scopes apart from the sender domain: a newsletter list stops newsletters only', async () => {
    const list = await open();
    await list.add([
      entry({ scope: 'tag:newsletter', address: 'unsub@x.test', source: 'complaint' }),
      entry({ scope: 'tag:promo', address: 'promo@x.test' }),
    ]);
    const newsletter = suppressionScopes(
      'news@shop.test',
      messageTagScopes(['Newsletter'], new Set(['newsletter'])),
    );
    expect(newsletter).toEqual(['tag:newsletter', 'shop.test', '*']);
    expect(await list.find('unsub@x.test', newsletter)).toMatchObject({
      scope: 'tag:newsletter',
      source: 'complaint',
    });
    // The same recipient, mail without the tag (a password reset): not suppressed.
    expect(await list.find('unsub@x.test', suppressionScopes('news@shop.test'))).toBeUndefined();
    expect(await list.find('promo@x.test', newsletter)).toBeUndefined();
    expect((await list.list({ scope: 'tag:newsletter' })).entries.map((e) => e.address)).toEqual([
      'unsub@x.test',
    ]);
    expect(await list.remove('tag:newsletter', 'unsub@x.test')).toBe(true);
    expect(await list.find('unsub@x.test', newsletter)).toBeUndefined();
  });

  it('updates an entry in place, keeping when it was first suppressed', async () => {
    const list = await open();
    await list.add([entry({ address: 'a@x.test', reason: 'first', createdAt: now - 60_000 })]);
    await list.add([entry({ address: 'a@x.test', reason: 'second', source: 'bounce', createdAt: now })]);
    expect(await list.find('a@x.test', ['shop.test'])).toMatchObject({
      reason: 'second',
      source: 'bounce',
      createdAt: now - 60_000,
    });
    expect(await list.count()).toBe(1);
  });

  it('ignores expired entries and removes entries', async () => {
    const list = await open();
    await list.add([
      entry({ address: 'brief@x.test', expiresAt: now + 1000 }),
      entry({ address: 'kept@x.test', expiresAt: now + 3_600_000 }),
    ]);
    expect(await list.find('brief@x.test', ['shop.test'], now + 500)).toBeDefined();
    expect(await list.find('brief@x.test', ['shop.test'], now + 1000)).toBeUndefined();
    expect(await list.find('kept@x.test', ['shop.test'], now + 1000)).toMatchObject({
      expiresAt: now + 3_600_000,
    });
    expect(await list.remove('shop.test', 'KEPT@x.test')).toBe(true);
    expect(await list.remove('shop.test', 'kept@x.test')).toBe(false);
    expect(await list.find('kept@x.test', ['shop.test'])).toBeUndefined();
  });

  it('lists by scope and search, in pages that together hold every entry once', async () => {
    const list = await open();
    const many = Array.from({ length: 450 }, (_, i) =>
      entry({ address: `user${i}@x.test`, createdAt: now - i, scope: i % 3 === 0 ? '*' : 'shop.test' }),
    );
    await list.add(many);
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await list.list({ limit: 100, ...(cursor === undefined ? {} : { cursor }) });
      seen.push(...page.entries.map((e) => `${e.scope} ${e.address}`));
      cursor = page.next;
      pages++;
    } while (cursor !== undefined && pages < 50);
    expect(seen.sort()).toEqual(many.map((e) => `${e.scope} ${e.address}`).sort());
    expect(pages).toBeGreaterThan(1);

    const everySender = await list.list({ scope: '*', limit: 1000 });
    expect(everySender.entries).toHaveLength(150);
    expect(everySender.next).toBeUndefined();
    const found = await list.list({ search: 'USER44', limit: 1000 });
    expect(found.entries.map((e) => e.address).sort()).toEqual(
      ['user44@x.test', ...Array.from({ length: 10 }, (_, i) => `user44${i}@x.test`)].sort(),
    );
    // Wildcards in a search are text, not patterns.
    expect((await list.list({ search: 'user_', limit: 1000 })).entries).toEqual([]);
    expect((await list.list({ search: 'user*', limit: 1000 })).entries).toEqual([]);
  });
});

describe('suppression list: backend specifics', () => {
  it('redis: every node sharing the prefix sees the same list', async () => {
    const a = await onRedis();
    const b = await onRedis(a.prefix);
    await a.suppressions.add([entry({ address: 'shared@x.test' })]);
    expect(await b.suppressions.find('shared@x.test', ['shop.test'])).toMatchObject({
      address: 'shared@x.test',
    });
    expect(await b.suppressions.remove('shop.test', 'shared@x.test')).toBe(true);
    expect(await a.suppressions.find('shared@x.test', ['shop.test'])).toBeUndefined();
  });

  it('embedded: a version 3 store gains the table and keeps its mail and its list across restarts', async () => {
    const path = storePath();
    const q = embedded(path);
    const id = await q.enqueue(testMessage('alice@src.test', ['bob@x.test'], 'Before'));
    await q.close();
    closed();
    const raw = new Database(path);
    raw.exec('DROP TABLE suppressions; DROP TABLE idempotency_keys; PRAGMA user_version = 3;');
    raw.close();

    const upgraded = embedded(path);
    expect((await upgraded.details(id))?.envelope?.mailFrom).toBe('alice@src.test');
    await upgraded.suppressions.add([entry({ address: 'after@x.test' })]);
    await upgraded.close();
    closed();
    const again = embedded(path);
    expect(await again.suppressions.find('after@x.test', ['shop.test'])).toMatchObject({
      address: 'after@x.test',
    });
  });
});

describe('tag scopes', () => {
  it('only configured tags have a scope, lower-cased, once each, in the message order', () => {
    const scoping = new Set(['newsletter', 'promo']);
    expect(messageTagScopes(['orders', 'Promo', 'newsletter', 'PROMO'], scoping)).toEqual([
      'tag:promo',
      'tag:newsletter',
    ]);
    expect(messageTagScopes(['orders'], scoping)).toEqual([]);
    expect(messageTagScopes(undefined, scoping)).toEqual([]);
    expect(messageTagScopes(['newsletter'], new Set())).toEqual([]);
  });

  it.each([
    'tag:',
    'tag:-lead',
    'tag:two words',
    `tag:${'x'.repeat(65)}`,
    'tag:a/b',
    'tags:x',
  ])('refuses %j as a scope', (scope) => {
    expect(() => suppressionScope(scope)).toThrow(/is not a sender domain .*a tag like tag:newsletter/);
  });

  it('takes tag scopes in the X-Tern-Tag syntax, lower-cased', () => {
    expect(suppressionScope(' tag:News_letter.v2-x ')).toBe('tag:news_letter.v2-x');
    expect(suppressionScope(`tag:${'x'.repeat(64)}`)).toBe(`tag:${'x'.repeat(64)}`);
  });
});

describe('suppressionEntry', () => {
  it.each([
    [{ address: 'nope' }, 'address: "nope" is not an email address'],
    [{ address: 'a@x.test', scope: 'not a domain' }, 'scope: "not a domain" is not a sender domain'],
    [{ address: 'a@x.test', source: 'guess' }, 'source: one of bounce, complaint, manual, import'],
    [{ address: 'a@x.test', category: 'hard' }, 'category: "hard" is not a bounce category'],
    [{ address: 'a@x.test', expiresAt: 'soon' }, 'expiresAt: "soon" is not a time'],
    [{ address: 'a@x.test', expiresAt: 1 }, 'expiresAt: the entry would have expired already'],
    [{ address: 'a@x.test', colour: 'red' }, 'colour: unknown field'],
  ])('refuses %j naming the field', (input, message) => {
    expect(() => suppressionEntry(input, { source: 'manual', now })).toThrow(message);
  });

  it('fills in the scope, source, reason and time', () => {
    expect(suppressionEntry({ address: ' A@X.test ' }, { source: 'import', now })).toEqual({
      scope: '*',
      address: 'a@x.test',
      source: 'import',
      reason: 'import',
      createdAt: now,
    });
  });
});
