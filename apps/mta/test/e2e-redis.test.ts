// End to end on the Redis backend with real processes: swaks injects into a `tern start`
// process, which resolves MX records from a test DNS server and delivers to a real receiving
// SMTP server; kills are SIGKILL.
import { randomUUID } from 'node:crypto';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import {
  type SmtpSink,
  startDnsServer,
  startRedis,
  startSmtpSink,
  swaks,
  type TestDns,
  type TestRedis,
  waitFor,
} from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { queuedId, startTern, stopAllTern } from './tern-process.js';

let redis: TestRedis;
let dns: TestDns;
let sink: SmtpSink;

beforeAll(async () => {
  redis = await startRedis({ appendonly: true, appendfsync: 'always', maxmemoryPolicy: 'noeviction' });
  sink = await startSmtpSink({ hostname: 'mx.dest.test' });
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
    'sender.test': { MX: [{ exchange: 'mx.sender.test', priority: 10 }] },
    'mx.sender.test': { A: ['127.0.0.1'] },
    'slow.test': { MX: [{ exchange: 'mx.slow.test', priority: 10 }] },
    'mx.slow.test': { A: ['127.0.0.1'] },
  });
});
afterEach(async () => {
  await stopAllTern();
  sink.setRcptReply(undefined);
  sink.messages.length = 0;
});
afterAll(async () => {
  await Promise.all([redis?.stop(), dns?.stop(), sink?.stop()]);
});

/** The job engines of the Redis backend; the first is the default (given by no `engine` key). */
const ENGINES = ['tern', 'bullmq'] as const;
type Engine = (typeof ENGINES)[number];

/** A config on the shared Redis under a prefix of its own, delivering through the test DNS to the sink. */
function config(engine: Engine, prefix = `t${randomUUID().slice(0, 8)}`): Record<string, unknown> {
  return {
    localDomains: ['tern.test'],
    trustedNetworks: ['127.0.0.1/32'],
    queue: {
      backend: 'redis',
      url: redis.url,
      prefix,
      ...(engine === ENGINES[0] ? {} : { engine }),
      stalledIntervalMs: 1000,
      lockDurationMs: 2000,
      retry: { intervals: ['1s'], maxAge: '1h' },
    },
    delivery: { dns: { servers: [dns.server] }, port: sink.port },
  };
}

const send = (port: number, from: string, to: string, body = 'hello') =>
  swaks(port, ['--from', from, '--to', to, '--body', body, '--h-Subject', 'e2e']);

const to = (address: string) => sink.messages.filter((m) => m.rcptTo.includes(address));

describe.each(ENGINES)('Redis backend, real processes (%s engine)', (engine) => {
  /** The default engine runs every case, the other the essential ones (delivery, kill -9, takeover). */
  const onDefault = (name: string, fn: () => Promise<void>): void => {
    if (engine === ENGINES[0]) test(name, fn);
  };

  test('swaks -> tern -> MX from DNS -> receiving server', async () => {
    const tern = await startTern(config(engine));
    expect(tern.output()).toContain('"backend":"redis"');
    const sent = await send(tern.port, 'app@sender.test', 'one@dest.test', 'first message');
    expect(queuedId(sent.output)).toBeDefined();
    await waitFor(() => to('one@dest.test').length === 1, 15_000);
    const [message] = to('one@dest.test');
    expect(message?.mailFrom).toBe('app@sender.test');
    expect(message?.body.toString()).toContain('first message');
    expect(message?.headers).toMatch(/^Received: from .*\r?\n?\s*by tern\.test \(Tern\)/m);
  });

  test('kill -9 after the 250, before delivery: the restarted process delivers it', async () => {
    const settings = config(engine);
    const intake = await startTern(settings, { args: ['--no-worker'] });
    const sent = await send(intake.port, 'app@sender.test', 'survivor@dest.test', 'kill -9 me');
    expect(queuedId(sent.output)).toBeDefined();
    await intake.kill();
    expect(to('survivor@dest.test')).toHaveLength(0);
    await startTern(settings);
    await waitFor(() => to('survivor@dest.test').length === 1, 15_000);
  });

  onDefault('4xx then 250: delivered after a retry on the (shortened) schedule', async () => {
    let refusals = 0;
    sink.setRcptReply((address) =>
      address === 'later@dest.test' && refusals++ === 0
        ? { code: 451, message: '4.7.1 greylisted, come back' }
        : undefined,
    );
    const tern = await startTern(config(engine));
    const started = Date.now();
    await send(tern.port, 'app@sender.test', 'later@dest.test');
    await waitFor(() => to('later@dest.test').length === 1, 20_000);
    expect(refusals).toBeGreaterThanOrEqual(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  onDefault(
    '550 bounces: an RFC 3464 report from <> arrives at the sender MX; a split delivers one and bounces one',
    async () => {
      sink.setRcptReply((address) =>
        address === 'nobody@dest.test' ? { code: 550, message: '5.1.1 no such user here' } : undefined,
      );
      const prefix = `t${randomUUID().slice(0, 8)}`;
      const tern = await startTern(config(engine, prefix));
      await swaks(tern.port, [
        '--from',
        'writer@sender.test',
        '--to',
        'nobody@dest.test,someone@dest.test',
        '--h-Subject',
        'split',
      ]);
      await waitFor(
        () => to('writer@sender.test').length === 1 && to('someone@dest.test').length === 1,
        20_000,
      );
      expect(to('someone@dest.test')).toHaveLength(1);
      expect(to('nobody@dest.test')).toHaveLength(0);
      const [bounce] = to('writer@sender.test');
      expect(bounce?.mailFrom).toBe('');
      const text = bounce!.raw.toString();
      expect(bounce?.headers).toMatch(
        /Content-Type: multipart\/report;[\s\S]*report-type="?delivery-status/i,
      );
      expect(text).toMatch(/Content-Type: message\/delivery-status/i);
      expect(text).toMatch(/Reporting-MTA: dns; ?tern\.test/i);
      expect(text).toMatch(/Final-Recipient: rfc822; ?nobody@dest\.test/i);
      expect(text).toMatch(/Action: failed/i);
      expect(text).toMatch(/Status: 5\.1\.1/);
      expect(text).toMatch(/Diagnostic-Code: smtp; ?550 5\.1\.1 no such user here/i);
      expect(text).toMatch(/Remote-MTA: dns; ?mx\.dest\.test/i);
      expect(text).toContain('Subject: split');
      expect(text).not.toMatch(/Final-Recipient: rfc822; ?someone@dest\.test/i);
      // Never a bounce of the bounce, nor a second one: once every job of both domains has
      // finished (each engine keeps a per-domain index of unfinished jobs), nothing can send more.
      const admin = new Redis(redis.url);
      try {
        const unfinished = async (domain: string) => admin.zcard(`${prefix}:ops:dom:${domain}`);
        await waitFor(
          async () => (await unfinished('dest.test')) + (await unfinished('sender.test')) === 0,
          20_000,
        );
      } finally {
        admin.disconnect();
      }
      expect(to('writer@sender.test')).toHaveLength(1);
    },
  );

  onDefault('a per-destination rate limit holds across processes sharing the Redis queue', async () => {
    const settings = {
      ...config(engine),
      delivery: {
        dns: { servers: [dns.server] },
        port: sink.port,
        limits: { domains: { 'slow.test': { messageRate: { limit: 2, per: 60_000 } } }, waitMs: 100 },
      },
    };
    const a = await startTern(settings);
    const b = await startTern(settings);
    const sent = await Promise.all([
      send(a.port, 'bulk@sender.test', 'one@slow.test'),
      send(a.port, 'bulk@sender.test', 'two@slow.test'),
      send(b.port, 'bulk@sender.test', 'three@slow.test'),
      send(b.port, 'bulk@sender.test', 'four@slow.test'),
    ]);
    expect(sent.filter((r) => queuedId(r.output)).length).toBe(4);
    await waitFor(() => sink.messages.filter((m) => m.rcptTo[0]?.endsWith('@slow.test')).length >= 2, 10_000);
    // Per process, each node would have sent its own two; shared, the cluster sends two in all.
    await new Promise((r) => setTimeout(r, 2500));
    expect(sink.messages.filter((m) => m.rcptTo[0]?.endsWith('@slow.test'))).toHaveLength(2);
  });

  test('a node killed -9 while its deliveries hang: another node takes its jobs over and delivers them', async () => {
    // The MX answers nothing until `open`: the first node's attempts hang mid-connection, active.
    let open = false;
    const held: Socket[] = [];
    const mx = createServer((client) => {
      if (!open) {
        held.push(client);
        client.on('error', () => {});
        return;
      }
      const upstream = connect(sink.port, '127.0.0.1');
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => mx.listen(0, '127.0.0.1', r));
    const settings = {
      ...config(engine),
      delivery: { dns: { servers: [dns.server] }, port: (mx.address() as AddressInfo).port },
    };
    try {
      const a = await startTern(settings);
      for (let i = 0; i < 3; i++) await send(a.port, 'bulk@sender.test', `taken${i}@dest.test`);
      await waitFor(() => held.length >= 1, 10_000);
      const b = await startTern(settings);
      await a.kill();
      open = true;
      await waitFor(() => [0, 1, 2].every((i) => to(`taken${i}@dest.test`).length > 0), 30_000);
      expect(b.child.exitCode).toBeNull();
    } finally {
      for (const socket of held) socket.destroy();
      mx.close();
    }
  });

  test('two processes share one queue; one survives the other being killed -9 mid-load', async () => {
    const settings = config(engine);
    const a = await startTern(settings);
    const b = await startTern(settings);
    const count = 20;
    const sends = [];
    for (let i = 0; i < count; i++)
      sends.push(send(a.port, 'bulk@sender.test', `bulk${i}@dest.test`, `message ${i}`));
    const results = await Promise.all(sends);
    expect(results.filter((r) => queuedId(r.output)).length).toBe(count);
    await a.kill();
    await waitFor(
      () => Array.from({ length: count }, (_, i) => to(`bulk${i}@dest.test`).length > 0).every(Boolean),
      30_000,
    );
    expect(b.child.exitCode).toBeNull();
  });
});
