// npm run bench:shaping: a limit that waits. A backlog of 10 000 messages to slow.test, limited to
// 50 messages a second, must drain in about 200 s with no message sent to the retry schedule,
// while fast.test (no limit), served at the same time, is not slowed; on each backend, and with
// two tern processes sharing one Redis, whose combined rate must stay within the limit.
// Messages are injected by Postfix's smtp-source and received by two Postfix smtp-sinks.
// Not a test: it prints figures. BENCH_SLOW (10000), BENCH_FAST (1000), BENCH_RATE (50),
// BENCH_RUNS (embedded,redis,redis2).
import { join } from 'node:path';
import { requireTools, smtpSource, startSink, startTern, testkit } from './lib.js';

const SLOW = Number(process.env.BENCH_SLOW ?? 10_000);
const FAST = Number(process.env.BENCH_FAST ?? 1000);
const RATE = Number(process.env.BENCH_RATE ?? 50);
const RUNS = process.env.BENCH_RUNS?.split(',') ?? ['embedded', 'redis', 'redis2'];
const TOKEN = 'bench-token-0123456789';

requireTools(['smtp-source', 'smtp-sink', 'redis-server']);

async function startShapingTern(queue, slowPort, fastPort) {
  const adminPort = await testkit.freePort();
  const tern = await startTern({
    hostname: 'bench.tern.test',
    localDomains: ['slow.test', 'fast.test'],
    trustedNetworks: [],
    queue,
    delivery: {
      routes: {
        'slow.test': { type: 'smtp', host: '127.0.0.1', port: slowPort, tls: 'none' },
        'fast.test': { type: 'smtp', host: '127.0.0.1', port: fastPort, tls: 'none' },
      },
      concurrency: 50,
      limits: { domains: { 'slow.test': { messageRate: { limit: RATE, per: 1000 } } } },
    },
    admin: { listen: `127.0.0.1:${adminPort}`, token: TOKEN },
    log: { level: 'warn' },
  });
  return { ...tern, adminPort };
}

/** A counter of tern's /metrics, summed over its label sets matching `labels`. */
async function metric(tern, name, labels = '') {
  const response = await fetch(`http://127.0.0.1:${tern.adminPort}/metrics`);
  const text = await response.text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) && line.includes(labels)) sum += Number(line.split(' ').at(-1));
    else if (line.startsWith(`${name} `)) sum += Number(line.split(' ').at(-1));
  }
  return sum;
}

/** Seconds for `count` fast.test messages to arrive, injected with 10 sessions through `tern`. */
async function fastRun(tern, sink, count) {
  const base = sink.received;
  const started = performance.now();
  await smtpSource(tern.port, 10, count, 'rcpt@fast.test');
  await testkit.waitFor(() => sink.received - base >= count, 120_000, 10);
  return (performance.now() - started) / 1000;
}

async function run(name, processes, queueFor) {
  const slow = await startSink();
  const fast = await startSink();
  const terns = [];
  for (let i = 0; i < processes; i++) terns.push(await startShapingTern(queueFor(i), slow.port, fast.port));
  try {
    // Alone first: how fast fast.test goes with nothing else queued.
    await fastRun(terns[0], fast, 200);
    const alone = await fastRun(terns[0], fast, FAST);

    const started = performance.now();
    const samples = [];
    const sampler = setInterval(() => samples.push([performance.now() - started, slow.received]), 1000);
    const share = Math.ceil(SLOW / processes);
    const injected = Promise.all(
      terns.map((t) => smtpSource(t.port, Math.max(1, 10 / processes), share, 'rcpt@slow.test')),
    );
    // Once the backlog is queued and draining, fast.test again, through the same process.
    await injected;
    const injectedS = (performance.now() - started) / 1000;
    const during = await fastRun(terns[0], fast, FAST);
    await testkit.waitFor(() => slow.received >= share * processes, 600_000, 50);
    const drainS = (performance.now() - started) / 1000;
    clearInterval(sampler);
    // The highest number of slow.test messages received in any 10 s window.
    let peak = 0;
    for (const [t, n] of samples) {
      const back = samples.findLast(([u]) => u <= t - 10_000);
      if (back) peak = Math.max(peak, n - back[1]);
    }
    let deferred = 0;
    let waits = 0;
    for (const t of terns) {
      deferred += await metric(t, 'tern_delivery_recipients_total', 'result="deferred"');
      waits += await metric(t, 'tern_delivery_limit_waits_total');
    }
    return {
      name,
      drainS,
      rate: (share * processes) / drainS,
      peak10s: peak,
      injectedS,
      deferred,
      waits,
      fastAlone: FAST / alone,
      fastDuring: FAST / during,
    };
  } finally {
    for (const t of terns) await t.stop();
    slow.stop();
    fast.stop();
  }
}

const rows = [];
for (const which of RUNS) {
  if (which === 'embedded') {
    rows.push(
      await run('embedded', 1, () => (dir) => ({ backend: 'embedded', path: join(dir, 'queue.db') })),
    );
    continue;
  }
  const redis = await testkit.startRedis({
    appendonly: true,
    appendfsync: 'everysec',
    maxmemoryPolicy: 'noeviction',
  });
  try {
    const processes = which === 'redis2' ? 2 : 1;
    rows.push(
      await run(processes > 1 ? 'redis, 2 processes' : 'redis', processes, () => ({
        backend: 'redis',
        url: redis.url,
      })),
    );
  } finally {
    await redis.stop();
  }
}

console.log(
  `\n${SLOW} messages to slow.test limited to ${RATE}/s (ideal ${(SLOW / RATE).toFixed(0)} s), ${FAST} to fast.test unlimited\n`,
);
const header = [
  'backend',
  'drain s',
  'msg/s',
  'peak per 10 s',
  'deferred',
  'limit waits',
  'fast alone msg/s',
  'fast during msg/s',
];
const table = rows.map((r) => [
  r.name,
  r.drainS.toFixed(1),
  r.rate.toFixed(1),
  String(r.peak10s),
  String(r.deferred),
  String(r.waits),
  r.fastAlone.toFixed(0),
  r.fastDuring.toFixed(0),
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
const line = (cells) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(' | ')} |`;
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const row of table) console.log(line(row));
