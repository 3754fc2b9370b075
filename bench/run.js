// npm run bench: accept rate and end-to-end rate of a real tern process, driven by Postfix's
// smtp-source (an independent load generator) and delivering to Postfix's smtp-sink, for each
// queue backend, with 1 and 20 concurrent client sessions and 2 KiB messages; then Redis with a
// replica behind Sentinel, without and with replica acknowledgement (queue.replicaAck: WAIT).
// BENCH_BACKENDS=embedded,redis,replica-ack picks some.
// Prints messages per second and tern's CPU milliseconds per message. Not a test: nothing fails
// on a slow figure. Needs Debian's postfix package (smtp-source, smtp-sink) and redis-server.
import { join } from 'node:path';
import { cpuMs, requireTools, smtpSource, startSink, startTern, testkit } from './lib.js';

const messages = Number(process.env.BENCH_MESSAGES ?? 3000);
const only = process.env.BENCH_BACKENDS?.split(',') ?? ['embedded', 'redis', 'replica-ack'];
const sessionCounts = [1, 20];

requireTools(['smtp-source', 'smtp-sink', 'redis-server']);

/** A tern process delivering bench.test to the sink; `queue` is the config's (default: embedded in a temp dir). */
function startBenchTern(queue, sinkPort) {
  return startTern({
    hostname: 'bench.tern.test',
    localDomains: ['bench.test'],
    trustedNetworks: [],
    queue: queue ?? ((dir) => ({ backend: 'embedded', path: join(dir, 'queue.db') })),
    delivery: {
      routes: { 'bench.test': { type: 'smtp', host: '127.0.0.1', port: sinkPort, tls: 'none' } },
      concurrency: 50,
    },
    log: { level: 'warn' },
  });
}

/** One measurement: `processes` tern processes (sharing the queue), the load split between them. */
async function runOnce(backend, sessions, queue, processes = 1) {
  const sink = await startSink();
  const terns = [];
  for (let i = 0; i < processes; i++) terns.push(await startBenchTern(queue, sink.port));
  // Warm up: JIT, connection pools, SQLite pages.
  await Promise.all(terns.map((t) => smtpSource(t.port, 2, 100)));
  await testkit.waitFor(() => sink.received >= 100 * processes, 30_000);
  const sinkBase = sink.received;
  const cpuBefore = terns.map((t) => cpuMs(t.pid));
  const started = performance.now();
  const share = Math.ceil(messages / processes);
  await Promise.all(
    terns.map((t) => smtpSource(t.port, Math.max(1, Math.round(sessions / processes)), share)),
  );
  const acceptedMs = performance.now() - started;
  const total = share * processes;
  await testkit.waitFor(() => sink.received - sinkBase >= total, 300_000, 10);
  const deliveredMs = performance.now() - started;
  const cpu = terns.reduce((sum, t, i) => sum + cpuMs(t.pid) - cpuBefore[i], 0);
  for (const t of terns) await t.stop();
  sink.stop();
  return {
    backend: processes > 1 ? `${backend} ×${processes}` : backend,
    sessions,
    accept: (total / acceptedMs) * 1000,
    endToEnd: (total / deliveredMs) * 1000,
    cpuPerMessage: cpu / total,
  };
}

const rows = [];
const durable = { appendonly: true, appendfsync: 'everysec', maxmemoryPolicy: 'noeviction' };
let redis;
let sentinel;
try {
  for (const backend of only) {
    if (backend === 'embedded') {
      for (const sessions of sessionCounts) rows.push(await runOnce(backend, sessions, undefined));
    } else if (backend === 'redis') {
      redis = await testkit.startRedis(durable);
      const queue = { backend: 'redis', url: redis.url };
      for (const sessions of sessionCounts) rows.push(await runOnce(backend, sessions, queue));
      // The Redis queue is shared: a second process on the same queue takes half the load.
      rows.push(await runOnce(backend, 20, queue, 2));
      await redis.stop();
      redis = undefined;
    } else if (backend === 'replica-ack') {
      // A primary and a replica behind three Sentinels: what waiting for the replica costs.
      sentinel = await testkit.startRedisSentinel({ redis: durable });
      const redisConnection = { sentinels: sentinel.sentinels, name: sentinel.name };
      for (const sessions of sessionCounts) {
        rows.push(await runOnce('sentinel, no ack', sessions, { backend: 'redis', redis: redisConnection }));
        rows.push(
          await runOnce('sentinel, replicaAck 1', sessions, {
            backend: 'redis',
            redis: redisConnection,
            replicaAck: { replicas: 1, timeoutMs: 1000 },
          }),
        );
      }
      await sentinel.stop();
      sentinel = undefined;
    }
  }
} finally {
  await redis?.stop();
  await sentinel?.stop();
}

const header = ['backend', 'sessions', 'accept msg/s', 'end-to-end msg/s', 'CPU ms/msg'];
const table = rows.map((r) => [
  r.backend,
  String(r.sessions),
  r.accept.toFixed(0),
  r.endToEnd.toFixed(0),
  r.cpuPerMessage.toFixed(2),
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
const line = (cells) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(' | ')} |`;
console.log(`\n${messages} messages of 2 KiB per run, smtp-source -> tern -> smtp-sink on loopback\n`);
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const row of table) console.log(line(row));
