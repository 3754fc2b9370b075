// A fleet of `tern start` processes on Redis beyond one server: a Cluster, a Sentinel-managed
// primary with replica acknowledgement and failover, takeover of a node killed -9 (timed, with
// the default lock settings), no double delivery while nodes live, and a drain for rolling restarts.

import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  type SmtpSink,
  startDnsServer,
  startRedis,
  startRedisCluster,
  startRedisSentinel,
  startSmtpSink,
  swaks,
  type TestDns,
  waitFor,
} from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { queuedId, startTern, stopAllTern } from './tern-process.js';

let dns: TestDns;
let sink: SmtpSink;
const stops: (() => Promise<void>)[] = [];

beforeAll(async () => {
  sink = await startSmtpSink({ hostname: 'mx.dest.test' });
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
  });
});
afterEach(async () => {
  await stopAllTern();
  await Promise.all(stops.splice(0).map((stop) => stop()));
  sink.setDataDelay(0);
  sink.messages.length = 0;
});
afterAll(async () => {
  await Promise.all([dns?.stop(), sink?.stop()]);
});

/** The job engines of the Redis backend; the first is the default (no `engine` key elsewhere). */
const ENGINES = ['tern', 'bullmq'] as const;
type Engine = (typeof ENGINES)[number];

function config(
  queue: Record<string, unknown>,
  port = sink.port,
  engine?: Engine,
): Record<string, unknown> & { prefix: string } {
  const prefix = `f${randomUUID().slice(0, 8)}`;
  return {
    prefix,
    localDomains: ['tern.test'],
    trustedNetworks: ['127.0.0.1/32'],
    queue: {
      backend: 'redis',
      prefix,
      retry: { intervals: ['1s'], maxAge: '1h' },
      ...(engine === undefined ? {} : { engine }),
      ...queue,
    },
    delivery: { dns: { servers: [dns.server] }, port },
  };
}

/** The config tern reads: everything but the test's own `prefix` note. */
function ternConfig(settings: Record<string, unknown>): Record<string, unknown> {
  const { prefix: _prefix, ...rest } = settings;
  return rest;
}

const send = (port: number, to: string, subject: string) =>
  swaks(port, ['--from', 'app@sender.test', '--to', to, '--h-Subject', subject]);

const delivered = (address: string) => sink.messages.filter((m) => m.rcptTo.includes(address)).length;

describe('tern on a Redis Cluster', () => {
  test('accepts and delivers, the queue and its throttles in one hash slot', async () => {
    const cluster = await startRedisCluster();
    stops.push(cluster.stop);
    const settings = config({ redis: { cluster: cluster.nodes } });
    const tern = await startTern({
      ...ternConfig(settings),
      delivery: {
        dns: { servers: [dns.server] },
        port: sink.port,
        limits: { domains: { 'dest.test': { messageRate: { limit: 100, per: 1000 } } } },
      },
    });
    expect(tern.output()).toContain('redis-cluster://');
    for (let i = 0; i < 5; i++)
      expect(queuedId((await send(tern.port, `c${i}@dest.test`, `c${i}`)).output)).toBeDefined();
    await waitFor(() => [0, 1, 2, 3, 4].every((i) => delivered(`c${i}@dest.test`) === 1), 20_000);
  }, 90_000);
});

describe.each(ENGINES)('tern on Sentinel with replica acknowledgement (%s engine)', (engine) => {
  test('451 while the replica cannot confirm, 250 once it can; mail accepted before a failover is delivered after it', async () => {
    const set = await startRedisSentinel();
    stops.push(set.stop);
    const settings = config(
      {
        redis: { sentinels: set.sentinels, name: set.name },
        replicaAck: { replicas: 1, timeoutMs: 1000 },
      },
      sink.port,
      engine,
    );
    // Intake only: nothing is delivered before the failover.
    const intake = await startTern(ternConfig(settings), { args: ['--no-worker'] });
    const replica = await set.replica();
    replica.pause();
    try {
      const refused = await send(intake.port, 'paused@dest.test', 'paused');
      expect(refused.output).toMatch(/<\*\* 451 4\.3\.0/);
      expect(queuedId(refused.output)).toBeUndefined();
    } finally {
      replica.resume();
    }
    for (let i = 0; i < 5; i++)
      expect(queuedId((await send(intake.port, `s${i}@dest.test`, `s${i}`)).output)).toBeDefined();

    const { from } = await set.failover();
    await from.restart();
    // The node follows the new primary by itself; with the old one back as its replica, 250 again.
    await waitFor(
      async () => queuedId((await send(intake.port, 'after@dest.test', 'after')).output) !== undefined,
      30_000,
    );
    await startTern(ternConfig(settings));
    const counts = () => [0, 1, 2, 3, 4].map((i) => delivered(`s${i}@dest.test`));
    await waitFor(() => counts().every((n) => n >= 1), 30_000).catch(async (error: Error) => {
      throw new Error(
        `${error.message}; deliveries of s0..s4: ${counts().join(' ')}; ${await set.describe()}`,
      );
    });
    expect(counts()).toEqual([1, 1, 1, 1, 1]);
    await waitFor(() => delivered('after@dest.test') >= 1, 30_000);
    expect(delivered('paused@dest.test')).toBe(0);
  }, 120_000);
});

describe.each(
  ENGINES,
)('fast takeover and no double delivery (default lock settings, %s engine)', (engine) => {
  test('a node killed -9 mid-delivery: another node delivers its job within the README bound', async () => {
    const redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
    stops.push(redis.stop);
    // The MX holds connections until `open`: the first node's delivery hangs, active.
    let open = false;
    const held: Socket[] = [];
    const mx = createServer((client) => {
      client.on('error', () => {});
      if (!open) {
        held.push(client);
        return;
      }
      const upstream = connect(sink.port, '127.0.0.1');
      upstream.on('error', () => client.destroy());
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => mx.listen(0, '127.0.0.1', r));
    stops.push(async () => {
      for (const socket of held) socket.destroy();
      mx.close();
    });
    const settings = config({ url: redis.url }, (mx.address() as AddressInfo).port, engine);
    const a = await startTern(ternConfig(settings));
    await send(a.port, 'taken@dest.test', 'taken');
    await waitFor(() => held.length >= 1, 10_000);
    const b = await startTern(ternConfig(settings));
    open = true;
    const killedAt = Date.now();
    await a.kill();
    await waitFor(() => delivered('taken@dest.test') === 1, 30_000);
    const takeoverMs = Date.now() - killedAt;
    process.stderr.write(`fleet (${engine} engine): takeover after kill -9 took ${takeoverMs} ms\n`);
    // README: lockDurationMs (6 s) + stalledIntervalMs (1 s) + a pick-up, at most 10 s.
    expect(takeoverMs).toBeLessThan(10_000);
    expect(b.child.exitCode).toBeNull();
  }, 90_000);

  test('two live nodes, deliveries longer than the lock: each job is delivered once', async () => {
    const redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
    stops.push(redis.stop);
    const admin = new Redis(redis.url);
    stops.push(async () => admin.disconnect());
    // Longer than lockDurationMs: only lock renewal keeps the other node off these jobs.
    sink.setDataDelay(8000);
    const settings = config({ url: redis.url }, sink.port, engine);
    const a = await startTern(ternConfig(settings));
    const b = await startTern(ternConfig(settings));
    for (let i = 0; i < 6; i++) await send(i % 2 === 0 ? a.port : b.port, `once${i}@dest.test`, `once${i}`);
    // Every job finished (the index of the domain's unfinished jobs, which both engines keep, is empty): none can run again.
    await waitFor(async () => (await admin.zcard(`${settings.prefix}:ops:dom:dest.test`)) === 0, 60_000);
    for (let i = 0; i < 6; i++) expect(delivered(`once${i}@dest.test`)).toBe(1);
  }, 90_000);
});

describe('drain for rolling restarts (SIGUSR2)', () => {
  test('stops accepting, finishes its active delivery, leaves queued mail to the other node, exits 0', async () => {
    const redis = await startRedis({ maxmemoryPolicy: 'noeviction' });
    stops.push(redis.stop);
    const admin = new Redis(redis.url);
    stops.push(async () => admin.disconnect());
    sink.setDataDelay(3000);
    const settings = config({ url: redis.url });
    const one = {
      ...ternConfig(settings),
      delivery: { ...(settings.delivery as object), concurrency: 1 },
      admin: { listen: '127.0.0.1:0', tokenFile: 'admin.token' },
    };
    const dir = mkdtempSync(join(import.meta.dirname, '.tmp-tern-'));
    writeFileSync(join(dir, 'admin.token'), `${randomUUID()}\n`, { mode: 0o600 });
    const a = await startTern(one, { dir });
    const adminUrl = /dashboard: (http:\/\/[^/\s]+)\//.exec(a.output())?.[1];
    expect(adminUrl).toBeDefined();
    await send(a.port, 'active@dest.test', 'active');
    // Received by the MX, its 250 not yet given: A's one delivery slot is busy.
    await waitFor(() => delivered('active@dest.test') === 1, 10_000);
    await send(a.port, 'queued1@dest.test', 'queued1');
    await send(a.port, 'queued2@dest.test', 'queued2');

    const exited = once(a.child, 'exit');
    a.child.kill('SIGUSR2');
    // While it finishes its delivery, the node tells load balancers it is on its way out.
    await waitFor(async () => {
      const response = await fetch(`${adminUrl}/readyz`).catch(() => undefined);
      if (response?.status !== 503) return false;
      return JSON.stringify(await response.json()).includes('draining');
    }, 10_000);
    // The listener is closed: new connections are refused.
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const socket = connect(a.port, '127.0.0.1');
          socket.once('connect', () => {
            socket.destroy();
            resolve(false);
          });
          socket.once('error', () => resolve(true));
        }),
      10_000,
    );
    const [code] = await exited;
    expect(code).toBe(0);
    expect(a.output()).toContain('draining');
    // A left the queued mail: B delivers it, and A's active delivery is not run again.
    const b = await startTern(one, { dir });
    await waitFor(() => delivered('queued1@dest.test') === 1 && delivered('queued2@dest.test') === 1, 30_000);
    await waitFor(async () => (await admin.zcard(`${settings.prefix}:ops:dom:dest.test`)) === 0, 30_000);
    expect(delivered('active@dest.test')).toBe(1);

    // The same drain through the admin API (bearer token), for orchestrators without signals.
    const bAdmin = /dashboard: (http:\/\/[^/\s]+)\//.exec(b.output())?.[1];
    const bExited = once(b.child, 'exit');
    const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
    const response = await fetch(`${bAdmin}/api/drain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.status).toBe(202);
    const [bCode] = await bExited;
    expect(bCode).toBe(0);
  }, 90_000);
});
