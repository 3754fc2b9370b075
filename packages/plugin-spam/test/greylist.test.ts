// Greylisting against a private redis-server: the 451 sequence, consistency across plugin
// instances with their own connections and across a separate node process, atomicity, keys and
// TTLs, allow-lists, the in-process fallback and failing open when Redis is down.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Verdict } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { freePort, startDnsServer, startRedis, type TestDns, type TestRedis } from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type SpamOptions, type SpamPlugin, spamFilter } from '../src/index.js';
import { listName } from './helpers.js';

const CHILD = fileURLToPath(new URL('./child/greylist-session.mjs', import.meta.url));

let redis: TestRedis;
let inspect: Redis;
let dns: TestDns;
const plugins: SpamPlugin[] = [];

beforeAll(async () => {
  redis = await startRedis();
  inspect = new Redis(redis.url);
  dns = await startDnsServer({ [listName('198.51.100.7', 'wl.test')]: { A: ['127.0.10.3'] } });
});

afterEach(async () => {
  for (const plugin of plugins.splice(0)) {
    await testPlugins(plugin).host.runObserve('shutdown', {});
  }
  await inspect.flushall();
});

afterAll(async () => {
  inspect.disconnect();
  await redis.stop();
  await dns.stop();
});

function greylister(
  greylist: Partial<NonNullable<SpamOptions['greylist']>> = {},
  extra: Partial<SpamOptions> = {},
) {
  const plugin = spamFilter({
    dns: { servers: [dns.server] },
    spf: { enabled: false },
    dkim: { enabled: false },
    dmarc: { enabled: false },
    greylist: { redis: redis.url, delaySeconds: 2, ...greylist },
    ...extra,
  });
  plugins.push(plugin);
  return plugin;
}

async function attempt(
  plugin: SpamPlugin,
  opts: { ip?: string; from?: string; to?: string } = {},
): Promise<Verdict> {
  const session = testPlugins(plugin, { remoteAddress: opts.ip ?? '192.0.2.1' });
  await session.connect();
  await session.helo('mail.example.test');
  await session.mailFrom(opts.from ?? 'alice@example.test');
  return await session.rcptTo(opts.to ?? 'bob@example.test');
}

/** A separate node process running the plugin (test/child/greylist-session.mjs), driven line by line. */
async function startChild(delaySeconds: number) {
  const child = spawn(
    process.execPath,
    ['--conditions=tern-source', CHILD, redis.url, String(delaySeconds)],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`child exited (${child.exitCode})`);
    return JSON.parse(value) as Record<string, unknown>;
  };
  const hello = (await next()) as { ready: boolean; pid: number; api: string };
  return {
    ...hello,
    async attempt(ip = '192.0.2.1', from = 'alice@example.test', to = 'bob@example.test'): Promise<Verdict> {
      child.stdin.write(`${JSON.stringify({ ip, from, to })}\n`);
      return ((await next()) as { verdict: Verdict }).verdict;
    },
    async stop(): Promise<void> {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end();
      await exited;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const greylisted = (seconds: number): Verdict => ({
  kind: 'tempfail',
  reply: {
    code: 451,
    enhanced: '4.7.1',
    text: `Greylisted, please try again in ${seconds} second${seconds === 1 ? '' : 's'}`,
  },
});

describe('greylisting in Redis', () => {
  it('defers the first attempt and an early retry, passes after the delay, then remembers', async () => {
    const plugin = greylister();
    expect(await attempt(plugin)).toEqual(greylisted(2));
    const early = await attempt(plugin);
    expect(early.kind).toBe('tempfail');
    expect('reply' in early && early.reply?.text).toMatch(/^Greylisted, please try again in [12] seconds?$/);
    await sleep(2100);
    expect((await attempt(plugin)).kind).toBe('continue');
    expect((await attempt(plugin)).kind).toBe('continue');
  });

  it('keeps one triplet per /24, sender and recipient, with the retry window then the lifetime as TTL', async () => {
    const plugin = greylister({ delaySeconds: 1, retryWindowSeconds: 600, lifetimeSeconds: 86_400 });
    await attempt(plugin, { ip: '192.0.2.1' });
    const key = 'tern:greylist:192.0.2.0/24|alice@example.test|bob@example.test';
    expect(await inspect.keys('tern:greylist:*')).toEqual([key]);
    expect(await inspect.pttl(key)).toBeGreaterThan(590_000);
    expect(await inspect.pttl(key)).toBeLessThanOrEqual(600_000);
    await sleep(1100);
    // Another host of the same /24 retries: the same triplet, and it passes.
    expect((await attempt(plugin, { ip: '192.0.2.200' })).kind).toBe('continue');
    expect(await inspect.pttl(key)).toBeGreaterThan(86_000_000);
    expect(await inspect.hget(key, 'attempts')).toBe('2');
    // A different recipient is a different triplet.
    expect((await attempt(plugin, { to: 'carol@example.test' })).kind).toBe('tempfail');
  });

  it('groups IPv6 clients by /64 and folds BATV tags and digits in the sender', async () => {
    const plugin = greylister({ delaySeconds: 1 });
    await attempt(plugin, { ip: '2001:db8:1:2::25', from: 'prvs=1234abcd=bounce-123@lists.example.test' });
    expect(await inspect.keys('tern:greylist:*')).toEqual([
      'tern:greylist:2001:db8:1:2::/64|bounce-#@lists.example.test|bob@example.test',
    ]);
    await sleep(1100);
    const retry = await attempt(plugin, {
      ip: '2001:db8:1:2:ffff::9',
      from: 'prvs=9876fedc=bounce-456@lists.example.test',
    });
    expect(retry.kind).toBe('continue');
  });

  it('is consistent across two plugin instances with their own Redis connections', async () => {
    const a = greylister();
    const b = greylister();
    expect(await attempt(a)).toEqual(greylisted(2));
    expect((await attempt(b)).kind).toBe('tempfail');
    const clients = (await inspect.client('LIST')) as string;
    // Our inspection connection plus one per plugin instance.
    expect(clients.trim().split('\n').length).toBeGreaterThanOrEqual(3);
    await sleep(2100);
    expect((await attempt(b)).kind).toBe('continue');
    expect((await attempt(a)).kind).toBe('continue');
  });

  it("takes the queue's connection description ({ url }, { sentinels, name }, { cluster }) as well as a URL", async () => {
    const described = greylister({ redis: { url: redis.url } });
    const plain = greylister();
    expect((await attempt(described, { to: 'carol@example.test' })).kind).toBe('tempfail');
    // One store: the other instance, on a URL, sees the triplet the first one wrote.
    const keys = await inspect.keys('tern:greylist:*');
    expect(keys).toHaveLength(1);
    await attempt(plain, { to: 'carol@example.test' });
    expect(await inspect.hget(keys[0] as string, 'attempts')).toBe('2');
    expect(() => greylister({ redis: { sentinels: [{ host: '127.0.0.1', port: 1 }] } as never })).toThrow(
      /redis/,
    );
  });

  it('is consistent with a separate node process', async () => {
    const child = await startChild(2);
    try {
      expect(child.pid).not.toBe(process.pid);
      // The child runs the TypeScript sources, not a possibly stale build.
      expect(child.api).toMatch(/plugin-api\/src\/index\.ts$/);
      const plugin = greylister();
      expect(await attempt(plugin)).toEqual(greylisted(2));
      expect((await child.attempt()).kind).toBe('tempfail');
      await sleep(2100);
      expect((await child.attempt()).kind).toBe('continue');
      expect((await attempt(plugin)).kind).toBe('continue');
      // And the other way round: the child sees a triplet first.
      expect(await child.attempt('192.0.2.1', 'dave@example.test')).toEqual(greylisted(2));
      expect((await attempt(plugin, { from: 'dave@example.test' })).kind).toBe('tempfail');
    } finally {
      await child.stop();
    }
  }, 60_000);

  it('counts a burst of simultaneous first attempts as one new triplet', async () => {
    const a = greylister();
    const b = greylister();
    const verdicts = await Promise.all(Array.from({ length: 20 }, (_, i) => attempt(i % 2 ? a : b)));
    expect(verdicts.every((v) => v.kind === 'tempfail')).toBe(true);
    expect(
      await inspect.hget('tern:greylist:192.0.2.0/24|alice@example.test|bob@example.test', 'attempts'),
    ).toBe('20');
  });

  it('skips allowed networks, allowed sender domains and DNSWL-listed clients', async () => {
    const allowNetworks = greylister({ allowNetworks: ['192.0.2.0/28', '2001:db8:aa::/48'] });
    expect((await attempt(allowNetworks, { ip: '192.0.2.14' })).kind).toBe('continue');
    expect((await attempt(allowNetworks, { ip: '2001:db8:aa:1::1' })).kind).toBe('continue');
    expect((await attempt(allowNetworks, { ip: '192.0.2.16' })).kind).toBe('tempfail');

    const allowSenders = greylister({ allowSenderDomains: ['partner.test'] });
    expect((await attempt(allowSenders, { from: 'x@mail.partner.test' })).kind).toBe('continue');
    expect((await attempt(allowSenders, { from: 'x@notpartner.test' })).kind).toBe('tempfail');

    const dnswl = greylister({}, { dnswl: { zones: [{ zone: 'wl.test' }] } });
    expect((await attempt(dnswl, { ip: '198.51.100.7' })).kind).toBe('continue');
    const noSkip = greylister({ skipIfDnswl: false }, { dnswl: { zones: [{ zone: 'wl.test' }] } });
    expect((await attempt(noSkip, { ip: '198.51.100.7', to: 'zed@example.test' })).kind).toBe('tempfail');
  });

  it('does not greylist authenticated sessions', async () => {
    const plugin = greylister();
    const session = testPlugins([{ name: 'auth', auth: () => ({ kind: 'accept' as const }) }, plugin]);
    await session.connect();
    await session.helo('laptop.example.test');
    await session.auth('alice', 'pw');
    await session.mailFrom('alice@example.test');
    expect((await session.rcptTo('bob@example.test')).kind).toBe('continue');
  });
});

describe('greylisting without Redis', () => {
  it('falls back to this process and says so at init', async () => {
    const plugin = spamFilter({
      spf: { enabled: false },
      dkim: { enabled: false },
      dmarc: { enabled: false },
      greylist: { delaySeconds: 1 },
    });
    const init = testPlugins(plugin);
    await init.host.runObserve('init', {});
    expect(init.logs.some((l) => l.level === 'warn' && /this process/.test(l.message ?? ''))).toBe(true);
    expect(await attempt(plugin)).toEqual(greylisted(1));
    expect((await attempt(plugin)).kind).toBe('tempfail');
    await sleep(1100);
    expect((await attempt(plugin)).kind).toBe('continue');
    expect((await attempt(plugin)).kind).toBe('continue');
  });

  it('fails open, with a warning, when Redis is unreachable', async () => {
    const plugin = greylister({ redis: `redis://127.0.0.1:${await freePort()}` });
    const session = testPlugins(plugin);
    await session.connect();
    await session.helo('mail.example.test');
    await session.mailFrom('alice@example.test');
    expect((await session.rcptTo('bob@example.test')).kind).toBe('continue');
    expect(
      session.logs.some((l) => l.level === 'warn' && /greylisting store failed/.test(l.message ?? '')),
    ).toBe(true);
  });
});
