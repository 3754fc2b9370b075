// Egress sources and pools against a real receiving server that checks who is calling: each
// source connects from its own 127.0.0.x address (Linux routes all of 127/8 on lo) and must say
// the EHLO name that belongs to that address, or the server refuses the message.
import { type SmtpSink, startDnsServer, startSmtpSink, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer, type DelivererOptions, type EgressOptions } from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';

/** The EHLO name each source address must use (as a receiver checking forward-confirmed names would). */
const NAMES: Record<string, string> = { '127.0.0.2': 'out2.tern.test', '127.0.0.3': 'out3.tern.test' };

let dns: TestDns;
let sink: SmtpSink;
/** Source addresses the sink refuses with "421 4.7.0 [TSS04]" (a provider pushing back on one address). */
const pushBack = new Set<string>();
const deliverers: Deliverer[] = [];

beforeAll(async () => {
  sink = await startSmtpSink({
    dataReply: (msg) => {
      if (NAMES[msg.remoteAddress] !== msg.helo) {
        return { code: 550, message: `5.7.1 EHLO ${msg.helo} does not belong to ${msg.remoteAddress}` };
      }
      if (pushBack.has(msg.remoteAddress)) {
        return {
          code: 421,
          message: `4.7.0 [TSS04] Messages from ${msg.remoteAddress} temporarily deferred`,
        };
      }
      return undefined;
    },
  });
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'vip.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
  });
});

afterAll(async () => {
  await Promise.all(deliverers.map((d) => d.close()));
  await Promise.all([sink.stop(), dns.stop()]);
});

const SOURCES: EgressOptions['sources'] = {
  two: { address: '127.0.0.2', ehlo: 'out2.tern.test' },
  three: { address: '127.0.0.3', ehlo: 'out3.tern.test' },
};

function make(egress: EgressOptions, extra: Partial<DelivererOptions> = {}): Deliverer {
  const d = createDeliverer({
    hostname: 'out.tern.test',
    port: sink.port,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
    pool: { maxMessagesPerConnection: 1 },
    egress,
    ...extra,
  });
  deliverers.push(d);
  return d;
}

/** Delivers one message and returns the address and EHLO the server saw. */
async function send(
  d: Deliverer,
  to: string,
  from = 'sender@origin.test',
): Promise<{ address: string; helo: string }> {
  const before = sink.messages.length;
  const report = await d.deliver(makeJob([to], { mailFrom: from }), storedMessage(SIMPLE_MESSAGE));
  expect(report.recipients.map((r) => `${r.result} ${r.reply.code}`)).toEqual(['delivered 250']);
  const msg = sink.messages[before];
  return { address: msg?.remoteAddress ?? '', helo: msg?.helo ?? '' };
}

describe('egress sources and pools', () => {
  it('spreads a pool over its sources by weight, each with its own address and EHLO name', async () => {
    const d = make({ sources: SOURCES, pools: { default: { sources: { two: 1, three: 3 } } } });
    const seen: Record<string, number> = {};
    for (let i = 0; i < 24; i++) {
      const { address, helo } = await send(d, `r${i}@dest.test`);
      expect(helo).toBe(NAMES[address]);
      seen[address] = (seen[address] ?? 0) + 1;
    }
    expect(Object.keys(seen).sort()).toEqual(['127.0.0.2', '127.0.0.3']);
    // Weight 3 against 1: the heavier source carries most of it.
    expect(seen['127.0.0.3']).toBeGreaterThan(seen['127.0.0.2'] as number);
  });

  it('picks the pool by recipient domain (route) and by sender domain', async () => {
    const d = make({
      sources: SOURCES,
      pools: {
        default: { sources: { two: 1, three: 1 } },
        vip: { sources: { two: 1 } },
        bulk: { sources: { three: 1 } },
      },
      select: [
        { pool: 'vip', domains: ['vip.test'] },
        { pool: 'bulk', senderDomains: ['.news.test'] },
      ],
    });
    for (let i = 0; i < 5; i++) {
      expect((await send(d, `v${i}@vip.test`)).address).toBe('127.0.0.2');
      expect((await send(d, `n${i}@dest.test`, 'list@mail.news.test')).address).toBe('127.0.0.3');
    }
  });

  it("picks the pool by the message's tag header", async () => {
    const d = make({
      sources: SOURCES,
      pools: { default: { sources: { two: 1 } }, bulk: { sources: { three: 1 } } },
      select: [{ pool: 'bulk', tags: ['Newsletter'] }],
    });
    const tagged = `X-Tern-Tag: newsletter\r\n${SIMPLE_MESSAGE}`;
    const before = sink.messages.length;
    const report = await d.deliver(makeJob(['t1@dest.test']), storedMessage(tagged));
    expect(report.source).toBe('three');
    expect(sink.messages[before]?.remoteAddress).toBe('127.0.0.3');
    expect((await send(d, 't2@dest.test')).address).toBe('127.0.0.2');
  });

  it('picks the pool by the tags intake kept on the envelope (API tags, X-Tern-Tag after it is removed)', async () => {
    const d = make({
      sources: SOURCES,
      pools: { default: { sources: { two: 1 } }, bulk: { sources: { three: 1 } } },
      select: [{ pool: 'bulk', tags: ['Newsletter'] }],
    });
    const before = sink.messages.length;
    const job = makeJob(['t3@dest.test'], { tags: ['order', 'newsletter'] });
    const report = await d.deliver(job, storedMessage(SIMPLE_MESSAGE));
    expect(report.source).toBe('three');
    expect(sink.messages[before]?.remoteAddress).toBe('127.0.0.3');
    const other = await d.deliver(
      makeJob(['t4@dest.test'], { tags: ['order'] }),
      storedMessage(SIMPLE_MESSAGE),
    );
    expect(other.source).toBe('two');
  });

  it('limits each (source, destination) pair on its own', async () => {
    const d = make(
      { sources: SOURCES, pools: { default: { sources: { two: 1, three: 1 } } } },
      { limits: { perSource: { default: { messageRate: { limit: 1, per: 60_000 } } } } },
    );
    const reports = [];
    for (let i = 0; i < 12; i++) {
      reports.push(await d.deliver(makeJob([`p${i}@dest.test`]), storedMessage(SIMPLE_MESSAGE)));
    }
    // One message a minute from each source: two go out, the rest wait for their source's limit.
    const delivered = reports.filter((r) => r.recipients[0]?.result === 'delivered');
    expect(delivered.map((r) => r.source).sort()).toEqual(['three', 'two']);
    const waiting = reports.filter((r) => r.wait !== undefined);
    expect(waiting).toHaveLength(10);
    expect(new Set(waiting.map((r) => r.wait?.key))).toEqual(
      new Set(['source:two|dest.test', 'source:three|dest.test']),
    );
  });

  it('moves a destination to another pool when a back-off rule says so, and back after the quiet period', async () => {
    const d = make(
      {
        sources: SOURCES,
        pools: { default: { sources: { two: 1 } }, rescue: { sources: { three: 1 } } },
      },
      {
        shaping: {
          defaultRules: false,
          rules: [
            {
              name: 'yahoo-tss04',
              match: { codes: [421], text: '\\[TSS04\\]' },
              action: { kind: 'pool', pool: 'rescue' },
              durationMs: 1000,
            },
          ],
        },
      },
    );
    pushBack.add('127.0.0.2');
    try {
      const first = await d.deliver(makeJob(['m1@dest.test']), storedMessage(SIMPLE_MESSAGE));
      expect(first.recipients[0]).toMatchObject({ result: 'deferred', reply: { code: 421 } });
      expect(first.shaping).toMatchObject([
        { cause: 'triggered', action: 'pool', source: 'two', detail: 'pool rescue' },
      ]);
      const second = await d.deliver(makeJob(['m2@dest.test']), storedMessage(SIMPLE_MESSAGE));
      expect(second.recipients[0]?.result).toBe('delivered');
      expect(second.source).toBe('three');
      expect(second.shaping).toMatchObject([{ cause: 'applied', action: 'pool', rule: 'yahoo-tss04' }]);
    } finally {
      pushBack.delete('127.0.0.2');
    }
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect((await send(d, 'm3@dest.test')).address).toBe('127.0.0.2');
  });

  it('refuses a pool naming an unknown source, and a bad address, naming the field', () => {
    expect(() => make({ sources: SOURCES, pools: { default: { sources: { four: 1 } } } })).toThrow(
      'delivery.egress.pools.default.sources: no source named "four" in delivery.egress.sources',
    );
    expect(() =>
      make({ sources: { bad: { address: '127.0.0.300' } }, pools: { default: { sources: { bad: 1 } } } }),
    ).toThrow('delivery.egress.sources.bad.address: expected an IPv4 or IPv6 address, got "127.0.0.300"');
  });
});

describe('warm-up', () => {
  const today = new Date().toISOString().slice(0, 10);
  const daysAgo = (n: number): string => new Date(Date.now() - n * 86_400_000).toISOString().slice(0, 10);

  it('holds a new source to its daily cap per destination and spills the rest to warmed sources', async () => {
    const d = make({
      sources: {
        two: { ...SOURCES.two, warmup: { since: today, caps: [3, 10], destinations: { 'vip.test': [1] } } },
        three: SOURCES.three as EgressOptions['sources'][string],
      },
      pools: { default: { sources: { two: 1000, three: 1 } }, solo: { sources: { two: 1 } } },
      select: [{ pool: 'solo', domains: ['vip.test'] }],
    });
    const from: Record<string, number> = {};
    for (let i = 0; i < 8; i++) {
      const { address } = await send(d, `w${i}@dest.test`);
      from[address] = (from[address] ?? 0) + 1;
    }
    // Day 1: at most three from the new address, the rest from the warmed one.
    expect(from['127.0.0.2']).toBeLessThanOrEqual(3);
    expect(from['127.0.0.3']).toBeGreaterThanOrEqual(5);
    // A pool with only the warming source: past its cap for vip.test (1 a day), mail waits for tomorrow.
    expect((await send(d, 'v1@vip.test')).address).toBe('127.0.0.2');
    const waiting = await d.deliver(makeJob(['v2@vip.test']), storedMessage(SIMPLE_MESSAGE));
    expect(waiting.wait?.key).toBe('warmup:vip.test');
    // Looked at again within a minute (the queue paces by domain; other pools must not wait a day).
    expect(waiting.wait?.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect(d.warmup()).toEqual([
      {
        source: 'two',
        day: 1,
        warmed: false,
        cap: 3,
        use: expect.arrayContaining([
          { destination: 'dest.test', used: from['127.0.0.2'], cap: 3 },
          { destination: 'vip.test', used: 1, cap: 1 },
        ]),
      },
    ]);
  });

  it('raises the cap day by day and ends warmed', () => {
    const at = (since: string) =>
      make({
        sources: { two: { ...SOURCES.two, warmup: { since, caps: [1, 2, 5] } } },
        pools: { default: { sources: { two: 1 } } },
      }).warmup()[0];
    expect(at(daysAgo(2))).toMatchObject({ day: 3, cap: 5, warmed: false });
    expect(at(daysAgo(10))).toMatchObject({ day: 11, warmed: true });
    expect(() => at('2026-13-01')).toThrow(
      'delivery.egress.sources.two.warmup.since: expected the first day as YYYY-MM-DD',
    );
  });
});
