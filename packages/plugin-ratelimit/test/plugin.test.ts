// The rateLimit plugin driven through the plugin test kit, over a limiter on a private Redis.
import { formatWait, type Plugin, PluginOptionError, reject } from '@tern/plugin-api';
import { type LogRecord, testPlugins } from '@tern/plugin-api/testing';
import { startRedis, type TestRedis, waitFor } from '@tern/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { type Limiter, type RateLimitOptions, rateLimit } from '../src/index.js';
import { adminConnection, closeAll, commandCalls, redisLimiter, uniquePrefix } from './helpers.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterEach(closeAll);
afterAll(async () => {
  await redis?.stop();
});

/** A fresh limiter (own counters) and the plugin over it. */
function setup(
  options: Omit<RateLimitOptions, 'limiter'>,
  records: LogRecord[] = [],
): { plugin: Plugin; limiter: Limiter } {
  const limiter = redisLimiter(redis.url, { prefix: uniquePrefix(), records });
  return { plugin: rateLimit({ ...options, limiter }), limiter };
}

/** Accepts AUTH with password "secret"; runs after the rate limiter's pre-ordered auth hook. */
const authenticator: Plugin = {
  name: 'authenticator',
  auth: (ctx) =>
    ctx.password === 'secret'
      ? { kind: 'accept' }
      : reject(535, '5.7.8', 'Authentication credentials invalid'),
};

const MESSAGE = 'Subject: hi\r\n\r\nhello\r\n';

/** One whole transaction; returns the verdict kinds of MAIL, RCPT and end of DATA. */
async function send(
  session: ReturnType<typeof testPlugins>,
  from: string,
  to: string[],
  body = MESSAGE,
): Promise<string[]> {
  const kinds = [(await session.mailFrom(from)).kind];
  for (const rcpt of to) kinds.push((await session.rcptTo(rcpt)).kind);
  kinds.push((await session.data(body)).verdict.kind);
  return kinds;
}

describe('connection limits', () => {
  test('the (N+1)th open connection gets 421 4.7.0; closing one, even mid-transaction, frees a slot', async () => {
    const { plugin } = setup({ rules: [{ key: 'ip', count: 'connections', limit: 2 }] });
    const from = { remoteAddress: '198.51.100.7' };
    const first = testPlugins(plugin, from);
    const second = testPlugins(plugin, from);
    expect((await first.connect()).kind).toBe('continue');
    expect((await second.connect()).kind).toBe('continue');
    const third = testPlugins(plugin, from);
    expect(await third.connect()).toEqual({
      kind: 'disconnect',
      reply: {
        code: 421,
        enhanced: '4.7.0',
        text: 'Too many connections from 198.51.100.7, try again later',
      },
    });
    await third.close();
    // Another address has its own count.
    expect((await testPlugins(plugin, { remoteAddress: '198.51.100.8' }).connect()).kind).toBe('continue');

    // An abrupt end: the client vanishes after RCPT, no QUIT. Core fires close on resets too.
    await second.mailFrom('a@example.test');
    await second.rcptTo('b@example.test');
    await second.close();
    const fourth = testPlugins(plugin, from);
    expect((await fourth.connect()).kind).toBe('continue');
    expect((await testPlugins(plugin, from).connect()).kind).toBe('disconnect');
    await first.close();
    expect((await testPlugins(plugin, from).connect()).kind).toBe('continue');
  });

  test('connection rate: N new connections per window, then 421 with a retry hint', async () => {
    const { plugin } = setup({ rules: [{ key: 'ip', count: 'connections', limit: 3, per: '1m' }] });
    for (let i = 0; i < 3; i++) {
      const session = testPlugins(plugin);
      expect((await session.connect()).kind).toBe('continue');
      await session.close();
    }
    const verdict = await testPlugins(plugin).connect();
    expect(verdict).toMatchObject({ kind: 'disconnect', reply: { code: 421, enhanced: '4.7.0' } });
    // GCRA: one new connection every 20 s.
    expect(verdict.kind === 'disconnect' && verdict.reply.text).toMatch(
      /^Too many connections from 192\.0\.2\.1, try again in (19|20) s$/,
    );
  });

  test('IPv4 /24 grouping: one count for the network, another network is separate', async () => {
    const { plugin } = setup({ rules: [{ key: 'subnet', count: 'connections', limit: 1 }] });
    expect((await testPlugins(plugin, { remoteAddress: '203.0.113.10' }).connect()).kind).toBe('continue');
    expect(await testPlugins(plugin, { remoteAddress: '203.0.113.250' }).connect()).toMatchObject({
      kind: 'disconnect',
      reply: { text: 'Too many connections from 203.0.113.0/24, try again later' },
    });
    expect((await testPlugins(plugin, { remoteAddress: '::ffff:203.0.113.99' }).connect()).kind).toBe(
      'disconnect',
    );
    expect((await testPlugins(plugin, { remoteAddress: '203.0.114.10' }).connect()).kind).toBe('continue');
  });

  test('IPv6 /64 grouping: addresses in one /64 are one client, the next /64 is another', async () => {
    const { plugin } = setup({ rules: [{ key: 'ip', count: 'connections', limit: 1 }] });
    expect((await testPlugins(plugin, { remoteAddress: '2001:db8:1:2::1' }).connect()).kind).toBe('continue');
    expect(
      await testPlugins(plugin, { remoteAddress: '2001:db8:1:2:ffff:ffff:ffff:9' }).connect(),
    ).toMatchObject({
      kind: 'disconnect',
      reply: { text: 'Too many connections from 2001:db8:1:2::/64, try again later' },
    });
    expect((await testPlugins(plugin, { remoteAddress: '2001:db8:1:3::1' }).connect()).kind).toBe('continue');
  });

  test('one IPv4 address is its own key under `ip`', async () => {
    const { plugin } = setup({ rules: [{ key: 'ip', count: 'connections', limit: 1 }] });
    expect((await testPlugins(plugin, { remoteAddress: '203.0.113.10' }).connect()).kind).toBe('continue');
    expect((await testPlugins(plugin, { remoteAddress: '203.0.113.11' }).connect()).kind).toBe('continue');
    expect((await testPlugins(plugin, { remoteAddress: '203.0.113.10' }).connect()).kind).toBe('disconnect');
  });
});

describe('messages, recipients, bytes', () => {
  test('per-user hard quota: the over-quota user gets 550 5.7.1, another user still sends', async () => {
    const { plugin } = setup({
      rules: [{ key: 'user', count: 'messages', limit: 2, per: '1d', action: 'reject' }],
    });
    const submission = { listener: { name: 'submission', kind: 'submission' as const } };
    const alice = testPlugins([plugin, authenticator], submission);
    await alice.connect();
    expect((await alice.auth('alice', 'secret')).kind).toBe('accept');
    expect(await send(alice, 'alice@example.test', ['x@example.net'])).toEqual([
      'continue',
      'continue',
      'continue',
    ]);
    expect(await send(alice, 'alice@example.test', ['x@example.net'])).toEqual([
      'continue',
      'continue',
      'continue',
    ]);
    expect(await alice.mailFrom('alice@example.test')).toEqual({
      kind: 'reject',
      reply: { code: 550, enhanced: '5.7.1', text: 'Message quota exceeded for user alice (2 per 1d)' },
    });

    const bob = testPlugins([plugin, authenticator], submission);
    await bob.connect();
    await bob.auth('bob', 'secret');
    expect(await send(bob, 'bob@example.test', ['x@example.net'])).toEqual([
      'continue',
      'continue',
      'continue',
    ]);

    // The user key ignores case: ALICE is alice.
    const again = testPlugins([plugin, authenticator], submission);
    await again.auth('ALICE', 'secret');
    expect((await again.mailFrom('alice@example.test')).kind).toBe('reject');
  });

  test('the message is counted at end of DATA: two sessions past MAIL FROM, only one fits', async () => {
    const { plugin } = setup({ rules: [{ key: 'user', count: 'messages', limit: 1, per: '1h' }] });
    const sessions = [testPlugins([plugin, authenticator]), testPlugins([plugin, authenticator])];
    for (const s of sessions) {
      await s.auth('carol', 'secret');
      expect((await s.mailFrom('carol@example.test')).kind).toBe('continue');
      expect((await s.rcptTo('x@example.net')).kind).toBe('continue');
    }
    expect((await sessions[0]!.data(MESSAGE)).verdict.kind).toBe('continue');
    const refused = (await sessions[1]!.data(MESSAGE)).verdict;
    expect(refused).toMatchObject({ kind: 'tempfail', reply: { code: 451, enhanced: '4.7.1' } });
    expect(refused.kind === 'tempfail' && refused.reply.text).toMatch(
      /^Message rate limit exceeded for user carol, try again in (59|60) min$/,
    );
  });

  test('recipients: the (N+1)th RCPT gets 452 4.5.3 with the wait the algorithm gives', async () => {
    const { plugin } = setup({ rules: [{ key: 'ip', count: 'recipients', limit: 2, per: '1h' }] });
    const session = testPlugins(plugin);
    await session.mailFrom('a@example.test');
    expect((await session.rcptTo('one@example.net')).kind).toBe('continue');
    expect((await session.rcptTo('two@example.net')).kind).toBe('continue');
    const verdict = await session.rcptTo('three@example.net');
    // 2 per hour: one recipient every 30 min.
    expect(verdict).toEqual({
      kind: 'tempfail',
      reply: {
        code: 452,
        enhanced: '4.5.3',
        text: `Too many recipients for 192.0.2.1, try again in ${formatWait(1_800_000)}`,
      },
    });
    expect(session.session.remoteAddress).toBe('192.0.2.1');
  });

  test('recipient domain: messages per destination domain, refused early at RCPT TO', async () => {
    const { plugin } = setup({ rules: [{ key: 'recipientDomain', count: 'messages', limit: 1, per: '1h' }] });
    const session = testPlugins(plugin);
    expect(await send(session, 'a@example.test', ['x@big.example', 'y@other.example'])).toEqual([
      'continue',
      'continue',
      'continue',
      'continue',
    ]);
    await session.mailFrom('a@example.test');
    expect(await session.rcptTo('z@BIG.example')).toMatchObject({
      kind: 'tempfail',
      reply: {
        code: 451,
        enhanced: '4.7.1',
        text: expect.stringMatching(/^Message rate limit exceeded for domain big\.example/),
      },
    });
    expect((await session.rcptTo('z@third.example')).kind).toBe('continue');
  });

  test('bytes: the message size at end of DATA; SIZE= is checked early; larger than the budget is 552', async () => {
    const { plugin } = setup({ rules: [{ key: 'sender', count: 'bytes', limit: 1000, per: '1h' }] });
    const session = testPlugins(plugin);
    const body = `Subject: big\r\n\r\n${'x'.repeat(580)}\r\n`;
    expect(Buffer.byteLength(body)).toBe(598);
    expect(await send(session, 'sender@example.test', ['x@example.net'], body)).toEqual([
      'continue',
      'continue',
      'continue',
    ]);
    // 402 bytes left: a SIZE=500 declaration is refused at MAIL FROM already.
    expect((await session.mailFrom('sender@example.test', { SIZE: '500' })).kind).toBe('tempfail');
    expect((await session.mailFrom('sender@example.test', { SIZE: '400' })).kind).toBe('continue');
    await session.rcptTo('x@example.net');
    expect((await session.data(body)).verdict).toMatchObject({
      kind: 'tempfail',
      reply: { code: 451, enhanced: '4.7.1' },
    });
    // Another sender has its own budget, but no budget fits 5000 bytes.
    expect(await session.mailFrom('other@example.test', { SIZE: '5000' })).toMatchObject({
      kind: 'reject',
      reply: { code: 552, enhanced: '5.3.4' },
    });
  });

  test('the null sender is not counted under sender keys', async () => {
    const { plugin } = setup({ rules: [{ key: 'senderDomain', count: 'messages', limit: 1, per: '1h' }] });
    const session = testPlugins(plugin);
    for (let i = 0; i < 3; i++)
      expect(await send(session, '', ['x@example.test'])).toEqual(['continue', 'continue', 'continue']);
    expect(await send(session, 'a@Sender.example', ['x@example.test'])).toEqual([
      'continue',
      'continue',
      'continue',
    ]);
    expect((await session.mailFrom('b@sender.example')).kind).toBe('tempfail');
  });

  test('one limiter round trip per stage, however many rules apply', async () => {
    const admin = adminConnection(redis.url);
    const { plugin } = setup({
      rules: [
        { key: 'ip', count: 'messages', limit: 100, per: '1h' },
        { key: 'subnet', count: 'messages', limit: 1000, per: '1h' },
        { key: 'sender', count: 'messages', limit: 100, per: '1d' },
        { key: 'ip', count: 'bytes', limit: 10_000_000, per: '1h' },
        { key: 'ip', count: 'recipients', limit: 100, per: '1h' },
        { key: 'recipientDomain', count: 'recipients', limit: 100, per: '1m' },
      ],
    });
    const session = testPlugins(plugin);
    await session.connect();
    await admin.config('RESETSTAT');
    await session.mailFrom('a@example.test');
    expect(await commandCalls(admin, 'evalsha')).toBe(1);
    await session.rcptTo('x@example.net');
    expect(await commandCalls(admin, 'evalsha')).toBe(2);
    await session.data(MESSAGE);
    expect(await commandCalls(admin, 'evalsha')).toBe(3);
  });
});

describe('scope and exemptions', () => {
  test('a rule enabled for the submission listener does not apply on the MX listener', async () => {
    const { plugin } = setup({
      rules: [{ key: 'ip', count: 'messages', limit: 1, per: '1h', listeners: ['submission'] }],
    });
    const mx = testPlugins(plugin, { listener: { name: 'mx', kind: 'mx' } });
    for (let i = 0; i < 3; i++)
      expect(await send(mx, 'a@example.test', ['x@example.test'])).toContain('continue');
    expect((await mx.mailFrom('a@example.test')).kind).toBe('continue');

    const submission = testPlugins(plugin, {
      listener: { name: 'submission', kind: 'submission', port: 587 },
    });
    expect(await send(submission, 'a@example.test', ['x@example.net'])).toEqual([
      'continue',
      'continue',
      'continue',
    ]);
    expect((await submission.mailFrom('a@example.test')).kind).toBe('tempfail');
  });

  test('exempt networks skip every rule; exempt users skip message rules', async () => {
    const { plugin } = setup({
      rules: [
        { key: 'ip', count: 'connections', limit: 1 },
        { key: 'listener', count: 'messages', limit: 1, per: '1h' },
      ],
      exempt: { networks: ['10.0.0.0/8', '2001:db8:ffff::/48'], users: ['Monitor'] },
    });
    for (let i = 0; i < 3; i++) {
      const inside = testPlugins(plugin, { remoteAddress: '10.1.2.3' });
      expect((await inside.connect()).kind).toBe('continue');
      expect(await send(inside, 'a@example.test', ['x@example.net'])).toEqual([
        'continue',
        'continue',
        'continue',
      ]);
    }
    expect((await testPlugins(plugin, { remoteAddress: '2001:db8:ffff:1::1' }).connect()).kind).toBe(
      'continue',
    );
    expect((await testPlugins(plugin, { remoteAddress: '2001:db8:ffff:1::1' }).connect()).kind).toBe(
      'continue',
    );

    const monitor = testPlugins([plugin, authenticator], { remoteAddress: '192.0.2.50' });
    expect((await monitor.connect()).kind).toBe('continue');
    await monitor.auth('monitor', 'secret');
    for (let i = 0; i < 3; i++)
      expect(await send(monitor, 'm@example.test', ['x@example.net'])).toEqual([
        'continue',
        'continue',
        'continue',
      ]);

    const user = testPlugins(plugin, { remoteAddress: '192.0.2.51' });
    expect(await send(user, 'u@example.test', ['x@example.net'])).toEqual([
      'continue',
      'continue',
      'continue',
    ]);
    expect(await user.mailFrom('u@example.test')).toMatchObject({
      kind: 'tempfail',
      reply: { text: expect.stringMatching(/^Message rate limit exceeded for this service, try again in/) },
    });
  });

  test('a rule reply can be replaced, placeholders filled', async () => {
    const { plugin } = setup({
      rules: [
        {
          key: 'ip',
          count: 'messages',
          limit: 1,
          per: '10m',
          reply: {
            code: 450,
            enhanced: '4.7.1',
            text: 'Slow down {subject}: {limit} per {per}, back in {retry}',
          },
        },
      ],
    });
    const session = testPlugins(plugin);
    await send(session, 'a@example.test', ['x@example.net']);
    expect(await session.mailFrom('a@example.test')).toMatchObject({
      kind: 'tempfail',
      reply: {
        code: 450,
        enhanced: '4.7.1',
        text: expect.stringMatching(/^Slow down 192\.0\.2\.1: 1 per 10m, back in (9|10) min$/),
      },
    });
  });
});

describe('authentication failures', () => {
  test('counted per address across sessions; the (N+1)th AUTH is cut off with 421 4.7.0; success is not counted', async () => {
    const { plugin } = setup({ rules: [{ key: 'ip', count: 'authFailures', limit: 2, per: '10m' }] });
    const plugins = [plugin, authenticator];
    const from = { remoteAddress: '198.51.100.20' };

    // A good login is not a failure.
    const good = testPlugins(plugins, from);
    expect((await good.auth('dave', 'secret')).kind).toBe('accept');
    await good.mailFrom('dave@example.test');
    await good.close();

    const guesser = testPlugins(plugins, from);
    expect(await guesser.auth('dave', 'guess1')).toMatchObject({ kind: 'reject', reply: { code: 535 } });
    expect(await guesser.auth('dave', 'guess2')).toMatchObject({ kind: 'reject', reply: { code: 535 } });
    const cut = await guesser.auth('dave', 'guess3');
    expect(cut).toMatchObject({ kind: 'disconnect', reply: { code: 421, enhanced: '4.7.0' } });
    // 2 per 10 min: one more attempt every 5 min.
    expect(cut.kind === 'disconnect' && cut.reply.text).toMatch(
      /^Too many authentication failures from 198\.51\.100\.20, try again in 5 min$/,
    );
    await guesser.close();

    // A new connection from the same address, even with the right password, is refused.
    expect((await testPlugins(plugins, from).auth('dave', 'secret')).kind).toBe('disconnect');
    expect((await testPlugins(plugins, { remoteAddress: '198.51.100.21' }).auth('dave', 'secret')).kind).toBe(
      'accept',
    );
  });

  test('a failure followed by a dropped connection is counted when the session closes', async () => {
    const { plugin } = setup({ rules: [{ key: 'user', count: 'authFailures', limit: 1, per: '1h' }] });
    const plugins = [plugin, authenticator];
    const first = testPlugins(plugins, { remoteAddress: '198.51.100.30' });
    expect((await first.auth('erin', 'wrong')).kind).toBe('reject');
    await first.close();
    // Keyed by the user name tried: another address trying erin is refused, another name is not.
    expect((await testPlugins(plugins, { remoteAddress: '198.51.100.31' }).auth('Erin', 'secret')).kind).toBe(
      'disconnect',
    );
    expect(
      (await testPlugins(plugins, { remoteAddress: '198.51.100.31' }).auth('frank', 'secret')).kind,
    ).toBe('accept');
  });
});

describe('options are checked when the factory is called', () => {
  const bad: [string, unknown, string][] = [
    ['rules', {}, 'rules'],
    [
      'a window',
      { rules: [{ key: 'user', count: 'messages', limit: 10, per: '1 fortnight' }] },
      'rules[0].per',
    ],
    ['a missing window', { rules: [{ key: 'user', count: 'messages', limit: 10 }] }, 'rules[0].per'],
    ['a limit', { rules: [{ key: 'ip', count: 'connections', limit: 0 }] }, 'rules[0].limit'],
    ['a key', { rules: [{ key: 'helo', count: 'messages', limit: 1, per: '1h' }] }, 'rules[0].key'],
    [
      'a key unknown at connect',
      { rules: [{ key: 'user', count: 'connections', limit: 1 }] },
      'rules[0].key',
    ],
    ['a count', { rules: [{ key: 'ip', count: 'pigeons', limit: 1, per: '1h' }] }, 'rules[0].count'],
    [
      'an unknown field',
      { rules: [{ key: 'ip', count: 'messages', limit: 1, per: '1h', burst: 3 }] },
      'rules[0].burst',
    ],
    [
      'a reply that does not fit its action',
      {
        rules: [
          { key: 'ip', count: 'messages', limit: 1, per: '1h', action: 'reject', reply: { code: 451 } },
        ],
      },
      'rules[0].reply',
    ],
    [
      'a connection rule that would not disconnect',
      { rules: [{ key: 'ip', count: 'connections', limit: 1, action: 'tempfail' }] },
      'rules[0].action',
    ],
    [
      'empty listeners',
      { rules: [{ key: 'ip', count: 'messages', limit: 1, per: '1h', listeners: [] }] },
      'rules[0].listeners',
    ],
    [
      'two rules on one counter',
      {
        rules: [
          { key: 'ip', count: 'messages', limit: 1, per: '1h' },
          { key: 'ip', count: 'messages', limit: 5, per: '60m' },
        ],
      },
      'rules[1].name',
    ],
    ['a network', { rules: [], exempt: { networks: ['10.0.0.0/33'] } }, 'exempt.networks[0]'],
    ['redis without a fail mode', { rules: [], redis: 'redis://127.0.0.1:1' }, 'failMode'],
    ['a redis that is not one', { rules: [], redis: 'http://x', failMode: 'open' }, 'redis'],
  ];
  test.each(bad)('%s', (_, options, field) => {
    let error: unknown;
    try {
      rateLimit(options as RateLimitOptions);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(PluginOptionError);
    expect((error as PluginOptionError).field).toBe(field);
    expect((error as PluginOptionError).message).toContain(`option ${field}:`);
  });

  test('two rules on one counter are fine once named apart', () => {
    expect(() =>
      rateLimit({
        rules: [
          { key: 'ip', count: 'messages', limit: 1, per: '1h' },
          { key: 'ip', count: 'messages', limit: 5, per: '60m', name: 'ip-hourly-b' },
        ],
      }),
    ).not.toThrow();
  });
});

test('without a limiter or Redis the plugin limits in process', async () => {
  const plugin = rateLimit({ rules: [{ key: 'ip', count: 'connections', limit: 1 }] });
  const first = testPlugins(plugin);
  expect((await first.connect()).kind).toBe('continue');
  expect((await testPlugins(plugin).connect()).kind).toBe('disconnect');
  await first.close();
  expect((await testPlugins(plugin).connect()).kind).toBe('continue');
});

test('given `redis`, the plugin opens its own limiter and closes it at shutdown', async () => {
  const admin = adminConnection(redis.url);
  const clients = async (): Promise<number> =>
    String(await admin.client('LIST'))
      .trim()
      .split('\n').length;
  const before = await clients();
  const plugin = rateLimit({
    redis: redis.url,
    failMode: 'closed',
    prefix: uniquePrefix(),
    rules: [{ key: 'ip', count: 'connections', limit: 1 }],
  });
  const first = testPlugins(plugin);
  await first.host.runObserve('init', {});
  expect((await first.connect()).kind).toBe('continue');
  expect((await testPlugins(plugin).connect()).kind).toBe('disconnect');
  expect(await clients()).toBe(before + 1);
  await first.close();
  await first.host.runObserve('shutdown', {});
  await waitFor(async () => (await clients()) === before);
});

test("the plugin's own limiter logs an outage through the host's logger", async () => {
  const plugin = rateLimit({
    redis: 'redis://127.0.0.1:1',
    failMode: 'closed',
    rules: [{ key: 'ip', count: 'connections', limit: 1 }],
  });
  const session = testPlugins(plugin);
  await session.host.runObserve('init', {});
  expect(await session.connect()).toMatchObject({
    kind: 'disconnect',
    reply: { code: 421, enhanced: '4.3.0' },
  });
  expect(await testPlugins(plugin).connect()).toMatchObject({
    kind: 'disconnect',
    reply: { code: 421, enhanced: '4.3.0' },
  });
  const outage = session.logs.filter((r) => r.message?.includes('store unreachable'));
  expect(outage).toHaveLength(1);
  expect(outage[0]).toMatchObject({ level: 'error', fields: { plugin: 'ratelimit', failMode: 'closed' } });
  await session.host.runObserve('shutdown', {});
});
