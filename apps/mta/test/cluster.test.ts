// `processes: 2`: a real `tern start` whose primary forks two workers on a private Redis. Mail sent
// to the shared port reaches a real SMTP sink, both workers take connections, the one admin
// server's /metrics sums both, a worker killed -9 under load loses no acknowledged message and
// comes back, SIGHUP reaches both, SIGTERM lets an open transaction finish. The embedded queue
// refuses more than one process, naming the field and the fix.
// `processes: { intake: 1, delivery: 1 }`: worker 1 takes every message and delivers none, worker 2
// delivers every message and holds no listening socket (nor after it was killed and restarted).
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  run,
  type SmtpSink,
  smtpDialog,
  startRedis,
  startSmtpSink,
  type TestRedis,
  waitFor,
} from '@tern/testkit';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { restartDelayMs } from '../src/cluster.js';
import { startTern, stopAllTern, type TernProcess } from './tern-process.js';

const cli = resolve(import.meta.dirname, '../dist/cli.js');
const token = randomUUID();
let redis: TestRedis;
let sink: SmtpSink;

beforeAll(async () => {
  [redis, sink] = await Promise.all([
    startRedis({ maxmemoryPolicy: 'noeviction' }),
    startSmtpSink({ hostname: 'mx.dest.test' }),
  ]);
});
afterEach(async () => {
  await stopAllTern();
  sink.messages.length = 0;
});
afterAll(async () => {
  await Promise.all([redis?.stop(), sink?.stop()]);
});

function clusterConfig(
  processes: number | 'auto' | { intake: number; delivery: number } = 2,
): Record<string, unknown> {
  return {
    processes,
    localDomains: ['tern.test'],
    trustedNetworks: ['127.0.0.1/32'],
    queue: { backend: 'redis', url: redis.url, prefix: `c${randomUUID().slice(0, 8)}` },
    delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
    admin: { listen: '127.0.0.1:0', token },
  };
}

/** One message over a new connection; true when it was acknowledged with 250 after DATA. */
async function send(port: number, subject: string): Promise<boolean> {
  const smtp = await smtpDialog(port).catch(() => undefined);
  if (!smtp) return false;
  try {
    await smtp.read();
    await smtp.command('EHLO client.test');
    await smtp.command('MAIL FROM:<app@sender.test>');
    await smtp.command('RCPT TO:<rcpt@dest.test>');
    await smtp.command('DATA');
    const reply = await smtp.command(`Subject: ${subject}\r\n\r\nbody of ${subject}\r\n.`);
    smtp.send('QUIT\r\n');
    return reply.startsWith('250 ');
  } catch {
    return false; // the worker died mid-session: not acknowledged, the client keeps the message
  } finally {
    smtp.close();
  }
}

const deliveredSubjects = (): Set<string> =>
  new Set(sink.messages.map((m) => /^Subject: (.*)$/m.exec(m.headers)?.[1]?.trim() ?? ''));

/** The JSON log lines of a tern process. */
function logLines(tern: TernProcess): Record<string, unknown>[] {
  return tern
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

const workerPids = (tern: TernProcess, worker: number): number[] =>
  logLines(tern)
    .filter((l) => l.msg === 'worker started' && l.worker === worker)
    .map((l) => l.pid as number);

/** Messages a worker has queued, from its log lines. */
const queuedBy = (tern: TernProcess, worker: number): number =>
  logLines(tern).filter((l) => l.msg === 'queued' && l.worker === worker).length;

/**
 * Sends at least `least` messages (each acknowledged) until `done()`: the kernel hands each
 * connection on the shared socket to one worker of its choosing, so a few in a row may all go to
 * one; 40 in a row would be a failure.
 */
async function sendUntil(
  tern: TernProcess,
  prefix: string,
  least: number,
  done: () => boolean,
): Promise<number> {
  let sent = 0;
  while (sent < least || !done()) {
    expect(sent).toBeLessThan(40);
    expect(await send(tern.port, `${prefix}-${sent}`)).toBe(true);
    sent++;
  }
  return sent;
}

/** Messages a worker has delivered, from its log lines. */
const deliveredBy = (tern: TernProcess, worker: number): number =>
  logLines(tern).filter((l) => l.msg === 'delivered' && l.worker === worker).length;

/** Whether process `pid` holds the socket listening on 127.0.0.1:`port` (Linux: /proc/net/tcp, its fds). */
function holdsListener(pid: number, port: number): boolean {
  const hex = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set(
    readFileSync('/proc/net/tcp', 'utf8')
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .filter((f) => f[1] === hex && f[3] === '0A') // state 0A: LISTEN
      .map((f) => f[9]),
  );
  expect(inodes.size).toBe(1);
  return readdirSync(`/proc/${pid}/fd`).some((fd) => {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      return inodes.has(/^socket:\[(\d+)\]$/.exec(target)?.[1] ?? '');
    } catch {
      return false; // closed since the listing
    }
  });
}

async function scrape(tern: TernProcess): Promise<string> {
  const url = /dashboard: (http:\/\/[^/\s]+)\//.exec(tern.output())?.[1];
  const response = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  expect(response.status).toBe(200);
  return response.text();
}

/** The value of one series in a scrape (the sum over workers), 0 when absent. */
function series(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

describe('processes: 2 on the Redis queue', () => {
  test('both workers take mail on one port, one /metrics sums them, SIGHUP reaches both', async () => {
    const tern = await startTern(clusterConfig());
    // The primary logs 'tern started' (what startTern waits for) before it writes the banner.
    await waitFor(() => tern.output().includes('started (2 processes)'), 10_000);
    expect(workerPids(tern, 1)).toHaveLength(1);
    expect(workerPids(tern, 2)).toHaveLength(1);
    const sent = await sendUntil(tern, 'm', 10, () => queuedBy(tern, 1) > 0 && queuedBy(tern, 2) > 0);
    await waitFor(() => deliveredSubjects().size === sent, 30_000);
    expect(queuedBy(tern, 1) + queuedBy(tern, 2)).toBe(sent);
    // Counted after the sink's 250, by the worker that delivered.
    await waitFor(
      async () => series(await scrape(tern), 'tern_delivery_recipients_total{result="delivered"}') === sent,
      10_000,
    );
    const text = await scrape(tern);
    expect(series(text, `tern_messages_accepted_total{listener="mx-${tern.port}"}`)).toBe(sent);
    expect(series(text, `tern_smtp_connections_total{listener="mx-${tern.port}"}`)).toBe(sent);
    expect(series(text, 'tern_cluster_workers_running')).toBe(2);
    expect(series(text, 'tern_cluster_workers_reporting')).toBe(2);
    // The shared queue is read once, not once per worker; writable is the least of the workers'.
    expect(series(text, 'tern_queue_store_writable')).toBe(1);
    expect(text.match(/^tern_queue_jobs_total\{state="total"\} /gm)).toHaveLength(1);

    tern.child.kill('SIGHUP');
    await waitFor(
      () => [1, 2].every((w) => logLines(tern).some((l) => l.msg === 'config reloaded' && l.worker === w)),
      20_000,
    );
    // The admin API's reload reaches the other worker too.
    const url = /dashboard: (http:\/\/[^/\s]+)\//.exec(tern.output())?.[1];
    const reloaded = () => logLines(tern).filter((l) => l.msg === 'config reloaded').length;
    const response = await fetch(`${url}/api/reload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.status).toBe(200);
    await waitFor(() => reloaded() === 4, 20_000);
  }, 120_000);

  test('a worker killed -9 under load: no acknowledged message is lost, the worker comes back', async () => {
    const tern = await startTern(clusterConfig());
    const [victim] = workerPids(tern, 2);
    const acknowledged: string[] = [];
    let attempted = 0;
    let killed = false;
    const client = async (c: number): Promise<void> => {
      for (let i = 0; i < 20; i++) {
        const subject = `load-${c}-${i}`;
        attempted++;
        if (await send(tern.port, subject)) acknowledged.push(subject);
        if (!killed && acknowledged.length >= 15) {
          killed = true;
          process.kill(victim as number, 'SIGKILL');
        }
      }
    };
    await Promise.all([0, 1, 2, 3].map(client));
    expect(killed).toBe(true);
    expect(attempted).toBe(80);
    // Most went through: while worker 2 was gone, worker 1 took every new connection.
    expect(acknowledged.length).toBeGreaterThan(40);
    await waitFor(() => workerPids(tern, 2).length === 2, 30_000);
    expect(tern.output()).toMatch(/worker 2 died \(SIGKILL\): restarting in \d+ ms/);
    expect(logLines(tern).some((l) => l.msg === 'worker restarted' && l.worker === 2)).toBe(true);
    // The jobs worker 2 held are taken over when their lock lapses (lockDurationMs, 6 s).
    await waitFor(() => acknowledged.every((s) => deliveredSubjects().has(s)), 60_000);
    // The new worker 2 takes connections again.
    const before = queuedBy(tern, 2);
    await sendUntil(tern, 'after', 1, () => queuedBy(tern, 2) > before);
    const text = await scrape(tern);
    expect(series(text, 'tern_cluster_worker_restarts_total')).toBe(1);
    expect(series(text, 'tern_cluster_workers_reporting')).toBe(2);
  }, 180_000);

  test('SIGTERM: an open transaction on a worker finishes, its message is kept, everything exits 0', async () => {
    const config = clusterConfig();
    const tern = await startTern(config);
    const smtp = await smtpDialog(tern.port);
    await smtp.read();
    await smtp.command('EHLO client.test');
    await smtp.command('MAIL FROM:<app@sender.test>');
    await smtp.command('RCPT TO:<rcpt@dest.test>');
    expect(await smtp.command('DATA')).toMatch(/^354/);
    smtp.send('Subject: in-flight\r\n\r\nfirst half\r\n');
    const exited = once(tern.child, 'exit');
    tern.child.kill('SIGTERM');
    await waitFor(
      () =>
        [1, 2].every((w) =>
          logLines(tern).some((l) => l.worker === w && String(l.msg).startsWith('stopping')),
        ),
      10_000,
    );
    expect(await smtp.command('second half\r\n.')).toMatch(/^250 /);
    smtp.close();
    const [code] = await exited;
    expect(code).toBe(0);
    expect(tern.output()).toContain('"msg":"stopped"');
    // Acknowledged, so durable: the next start on the same queue delivers it.
    await startTern({ ...config, processes: 1 });
    await waitFor(() => deliveredSubjects().has('in-flight'), 30_000);
  }, 120_000);
});

describe('processes: { intake: 1, delivery: 1 } on the Redis queue', () => {
  test('the intake worker takes the mail, the delivery worker delivers it and binds nothing, and comes back after kill -9', async () => {
    const tern = await startTern(clusterConfig({ intake: 1, delivery: 1 }));
    // The primary logs 'tern started' (what startTern waits for) before it writes the banner.
    await waitFor(() => tern.output().includes('started (2 processes: 1 intake, 1 delivery)'), 10_000);
    await waitFor(() => workerPids(tern, 1).length === 1 && workerPids(tern, 2).length === 1, 10_000);
    const [intake] = workerPids(tern, 1);
    const [delivery] = workerPids(tern, 2);
    expect(logLines(tern).find((l) => l.msg === 'worker started' && l.worker === 2)?.role).toBe('delivery');
    // Worker 1 shares the primary's listening socket; worker 2 has none.
    expect(holdsListener(intake as number, tern.port)).toBe(true);
    expect(holdsListener(delivery as number, tern.port)).toBe(false);
    for (let i = 0; i < 6; i++) expect(await send(tern.port, `r-${i}`)).toBe(true);
    await waitFor(() => deliveredSubjects().size === 6 && deliveredBy(tern, 2) === 6, 30_000);
    expect(queuedBy(tern, 1)).toBe(6);
    expect(queuedBy(tern, 2)).toBe(0);
    expect(deliveredBy(tern, 1)).toBe(0);
    const text = await scrape(tern);
    expect(series(text, `tern_messages_accepted_total{listener="mx-${tern.port}"}`)).toBe(6);
    expect(series(text, 'tern_cluster_workers_reporting')).toBe(2);

    // Killed, worker 2 comes back as a delivery worker: mail sent meanwhile waits in the queue.
    process.kill(delivery as number, 'SIGKILL');
    for (let i = 0; i < 4; i++) expect(await send(tern.port, `k-${i}`)).toBe(true);
    await waitFor(() => workerPids(tern, 2).length === 2, 30_000);
    expect(tern.output()).toMatch(/worker 2 \(delivery\) died \(SIGKILL\): restarting in \d+ ms/);
    const restarted = workerPids(tern, 2)[1] as number;
    expect(holdsListener(restarted, tern.port)).toBe(false);
    // The sink has a message before the worker logs its 'delivered' line: wait for both.
    await waitFor(() => deliveredSubjects().size === 10 && deliveredBy(tern, 2) === 10, 30_000);
    expect(deliveredBy(tern, 1)).toBe(0);
    expect(queuedBy(tern, 1)).toBe(10);

    // SIGHUP reloads both; the delivery worker does not take the listeners for new ones. SIGTERM stops both.
    tern.child.kill('SIGHUP');
    await waitFor(
      () => [1, 2].every((w) => logLines(tern).some((l) => l.msg === 'config reloaded' && l.worker === w)),
      20_000,
    );
    expect(tern.output()).not.toContain('new in the config');
    expect(await tern.stop()).toBe(0);
    expect(logLines(tern).filter((l) => l.msg === 'worker stopped' && l.code === 0)).toHaveLength(2);
  }, 120_000);
});

describe('more than one process needs the Redis queue', () => {
  const dir = mkdtempSync(join(import.meta.dirname, '.tmp-cluster-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (processes: unknown): string => {
    const path = join(dir, `p${randomUUID().slice(0, 6)}.config.json`);
    writeFileSync(
      path,
      JSON.stringify({
        listeners: [{ kind: 'mx', host: '127.0.0.1', port: 0 }],
        localDomains: ['a.test'],
        ...(processes === undefined ? {} : { processes }),
      }),
    );
    return path;
  };
  const tern = (args: string[]) => run(process.execPath, [cli, ...args], { timeoutMs: 20_000 });

  test.each([2, 'auto'])('processes: %s on the embedded queue fails check-config and start', async (n) => {
    const config = file(n);
    for (const args of [
      ['check-config', config],
      ['start', '--config', config],
    ]) {
      const result = await tern(args);
      expect(result.status).toBe(78);
      expect(result.stderr).toContain(`config.processes: ${JSON.stringify(n)} needs the Redis queue`);
      expect(result.stderr).toContain('remove processes or set it to 1');
    }
  });

  test('processes: { intake, delivery } on the embedded queue fails check-config and start', async () => {
    const config = file({ intake: 1, delivery: 2 });
    for (const args of [
      ['check-config', config],
      ['start', '--config', config],
    ]) {
      const result = await tern(args);
      expect(result.status).toBe(78);
      expect(result.stderr).toContain(
        'config.processes: { intake: 1, delivery: 2 } needs the Redis queue (queue: { backend',
      );
      expect(result.stderr).toContain('remove processes or set it to 1');
    }
    const flag = await tern(['start', '--config', file(undefined), '--processes', 'intake:2,delivery:1']);
    expect(flag.status).toBe(78);
    expect(flag.stderr).toContain('--processes: { intake: 2, delivery: 1 } needs the Redis queue');
  });

  const roles = '{ intake: n, delivery: m } (each at least 1, together at most 64)';
  test.each([
    [{ intake: 0, delivery: 1 }, `config.processes.intake: a whole number from 1 to 64, or 'auto'`],
    [{ intake: 1 }, 'config.processes: a whole number from 1 to 64'],
    [{ intake: 32, delivery: 33 }, 'config.processes: a whole number from 1 to 64'],
    [{ intake: 1, delivery: 1, admin: 1 }, 'config.processes: unknown key "admin"'],
  ])('processes: %j names the field and what it takes', async (processes, problem) => {
    const result = await tern(['check-config', file(processes)]);
    expect(result.status).toBe(78);
    expect(result.stderr).toContain(problem);
    if (!problem.includes('unknown key')) expect(result.stderr).toContain(roles);
  });

  test('--no-worker with intake and delivery processes is refused', async () => {
    const config = file(undefined);
    const redisConfig = config.replace(/\.config\.json$/, '.redis.config.json');
    writeFileSync(
      redisConfig,
      JSON.stringify({
        ...JSON.parse(readFileSync(config, 'utf8')),
        queue: { backend: 'redis', url: redis.url },
        processes: { intake: 1, delivery: 1 },
      }),
    );
    const result = await tern(['start', '--config', redisConfig, '--no-worker']);
    expect(result.status).toBe(78);
    expect(result.stderr).toContain('config.processes: { intake, delivery } runs delivery processes');
    expect(result.stderr).toContain('drop --no-worker');
  });

  test('--processes 2 on the embedded queue fails before anything starts', async () => {
    const result = await tern(['start', '--config', file(undefined), '--processes', '2']);
    expect(result.status).toBe(78);
    expect(result.stderr).toContain('--processes: 2 needs the Redis queue');
    expect(result.stderr).not.toContain('started');
  });

  test('TERN_PROCESSES is read as --processes (a service manager or a benchmark sets it)', async () => {
    const result = await run(process.execPath, [cli, 'start', '--config', file(undefined)], {
      env: { TERN_PROCESSES: 'intake:1,delivery:1' },
      timeoutMs: 20_000,
    });
    expect(result.status).toBe(78);
    expect(result.stderr).toContain('--processes: { intake: 1, delivery: 1 } needs the Redis queue');
    const bad = await run(process.execPath, [cli, 'start', '--config', file(undefined)], {
      env: { TERN_PROCESSES: 'two' },
      timeoutMs: 20_000,
    });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("expected a whole number from 1 to 64, or 'auto'");
  });

  test.each([
    ['0'],
    ['two'],
    ['65'],
    ['intake:0,delivery:1'],
    ['intake:40,delivery:40'],
    ['delivery:1'],
  ])('--processes %s is refused as usage', async (value) => {
    const result = await tern(['start', '--config', file(undefined), '--processes', value]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("expected a whole number from 1 to 64, or 'auto'");
  });

  test('processes: 0 names the field and what it takes', async () => {
    const result = await tern(['check-config', file(0)]);
    expect(result.status).toBe(78);
    expect(result.stderr).toContain("config.processes: a whole number from 1 to 64, or 'auto'");
  });
});

test('a worker that keeps dying waits longer each time, never more than 30 s', () => {
  expect([1, 2, 3, 4, 5, 6, 7, 100].map(restartDelayMs)).toEqual([
    500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000,
  ]);
});
