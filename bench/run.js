// npm run bench: accept rate and end-to-end rate of a real tern process, driven by Postfix's
// smtp-source (an independent load generator) and delivering to Postfix's smtp-sink, for each
// queue backend, with 1 and 20 concurrent client sessions and 2 KiB messages; then Redis with a
// replica behind Sentinel, without and with replica acknowledgement (queue.replicaAck: WAIT).
// BENCH_BACKENDS=embedded,redis,replica-ack picks some.
// Prints messages per second and tern's CPU milliseconds per message. Not a test: nothing fails
// on a slow figure. Needs Debian's postfix package (smtp-source, smtp-sink) and redis-server.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const testkit = await import(join(root, 'packages/testkit/dist/index.js'));
const messages = Number(process.env.BENCH_MESSAGES ?? 3000);
const only = process.env.BENCH_BACKENDS?.split(',') ?? ['embedded', 'redis', 'replica-ack'];
const sessionCounts = [1, 20];
const CLK_TCK = 100;

for (const tool of ['smtp-source', 'smtp-sink', 'redis-server']) {
  if (spawnSync('sh', ['-c', `command -v ${tool} || test -x /usr/sbin/${tool}`]).status !== 0) {
    console.error(`bench: ${tool} not found: apt-get install postfix redis-server`);
    process.exit(2);
  }
}

/** utime + stime of a process, in ms. */
function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

function waitPort(port, timeoutMs = 20_000) {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() - started > timeoutMs) reject(new Error(`port ${port} did not open`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** Postfix's smtp-sink, counting delivered messages from its -c counters. */
async function startSink() {
  const port = await testkit.freePort();
  const child = spawn('smtp-sink', ['-u', 'nobody', '-c', `127.0.0.1:${port}`, '1000'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let received = 0;
  child.stdout.on('data', (chunk) => {
    const all = [...chunk.toString().matchAll(/mesg=(\d+)/g)];
    if (all.length > 0) received = Number(all.at(-1)[1]);
  });
  await waitPort(port);
  return {
    port,
    get received() {
      return received;
    },
    stop: () => child.kill('SIGKILL'),
  };
}

/** `queue` is the config's queue section; without it, the embedded store in a temp dir. */
async function startTern(queueConfig, sinkPort) {
  const dir = mkdtempSync(join(tmpdir(), 'tern-bench-'));
  const port = await testkit.freePort();
  const queue = queueConfig ?? { backend: 'embedded', path: join(dir, 'queue.db') };
  writeFileSync(
    join(dir, 'tern.config.json'),
    JSON.stringify({
      hostname: 'bench.tern.test',
      listeners: [{ kind: 'mx', host: '127.0.0.1', port }],
      localDomains: ['bench.test'],
      trustedNetworks: [],
      queue,
      delivery: {
        routes: { 'bench.test': { type: 'smtp', host: '127.0.0.1', port: sinkPort, tls: 'none' } },
        concurrency: 50,
      },
      log: { level: 'warn' },
    }),
  );
  const child = spawn(
    process.execPath,
    [join(root, 'apps/mta/dist/cli.js'), 'start', '--config', join(dir, 'tern.config.json')],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  await waitPort(port);
  return {
    port,
    pid: child.pid,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Postfix's smtp-source, run without blocking this process (it reads smtp-sink's counters meanwhile). */
function smtpSource(port, sessions, count) {
  const args = ['-d', '-s', String(sessions), '-m', String(count), '-l', '2048'];
  const child = spawn(
    'smtp-source',
    [...args, '-f', 'bench@load.test', '-t', 'rcpt@bench.test', `127.0.0.1:${port}`],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (c) => {
    stderr += c;
  });
  return new Promise((resolve, reject) =>
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`smtp-source failed: ${stderr}`)),
    ),
  );
}

/** One measurement: `processes` tern processes (sharing the queue), the load split between them. */
async function runOnce(backend, sessions, queue, processes = 1) {
  const sink = await startSink();
  const terns = [];
  for (let i = 0; i < processes; i++) terns.push(await startTern(queue, sink.port));
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
