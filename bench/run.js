// npm run bench: a real tern process, driven by Postfix's smtp-source (an independent load
// generator) and delivering to Postfix's smtp-sink, 2 KiB messages, for each queue backend and
// each mode of issue 18:
//   reuse20  20 sessions, each reusing its connection (smtp-source -d)
//   new20    20 sessions, a new connection per message
//   reuse1   1 session reusing its connection (latency bound)
//   dkim20   20 sessions reused, DKIM RSA-2048 signing on
// For every run it prints the rates (noisy on a shared machine) and the counts that are not:
// tern's CPU ms per message (utime+stime), disk bytes written per message (/proc/PID/io
// write_bytes of tern, and of redis-server apart), and for Redis the commands per message
// (INFO commandstats of the bench's own redis-server, commands run inside Lua scripts included;
// the BullMQ worker's polling counts too: it is part of the cost), and the connections tern opened
// to the sink per 1000 messages (smtp-sink's session counter plus those open at the end, by ss).
//
// BENCH_BACKENDS=embedded,redis (default; also replica-ack: a primary + replica behind Sentinel,
// with and without queue.replicaAck), BENCH_MODES=reuse20,new20,reuse1,dkim20 (default all),
// BENCH_REDIS_ENGINE=tern|bullmq: queue.redis.engine (default: the queue's default).
// BENCH_MESSAGES=3000 per run, BENCH_WARMUP=100 messages first (not measured).
// BENCH_PROCESSES=1,2: each Redis run once per count of worker processes (tern's `processes`: one
// primary forking them, sharing the port and the queue; CPU and disk are the sum over the primary
// and its workers). BENCH_PROFILE=1: tern runs under `node --cpu-prof` and each run prints its top
// self-time functions (BENCH_PROFILE_TOP=20 of them); BENCH_COMMANDS=1 prints each
// Redis run's commands per message by name. BENCH_DKIM='{"signingThreads":0}': options for dkim20.
// Not a test: nothing fails on a slow figure. Needs Debian's postfix (smtp-source, smtp-sink)
// and redis-server.
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  commandDelta,
  cpuMs,
  mainThreadCpuMs,
  profileTop,
  redisCommandStats,
  requireTools,
  root,
  smtpSource,
  startSink,
  startTern,
  testkit,
  writeBytes,
} from './lib.js';

const messages = Number(process.env.BENCH_MESSAGES ?? 3000);
// Messages sent (per process) before measuring. V8 is still compiling hot code after the default
// 100: 20-27 % of tern's CPU in a profiled 2000-message run was JIT work, so CPU per message is
// overstated unless this is in the thousands (BENCH_WARMUP=3000 for steady-state counts).
const warmup = Number(process.env.BENCH_WARMUP ?? 100);
if (!Number.isInteger(warmup) || warmup < 1)
  throw new Error('BENCH_WARMUP: a whole number of messages, at least 1');
const only = process.env.BENCH_BACKENDS?.split(',') ?? ['embedded', 'redis'];
const profile = process.env.BENCH_PROFILE === '1';
const profileTopN = Number(process.env.BENCH_PROFILE_TOP ?? 20);
const showCommands = process.env.BENCH_COMMANDS === '1';
const processCounts = (process.env.BENCH_PROCESSES ?? '1').split(',').map(Number);
for (const n of processCounts) {
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_PROCESSES: not a process count: ${n}`);
}
const MODES = {
  reuse20: { sessions: 20, reuse: true },
  new20: { sessions: 20, reuse: false },
  reuse1: { sessions: 1, reuse: true },
  dkim20: { sessions: 20, reuse: true, dkim: true },
};
const modes = process.env.BENCH_MODES?.split(',') ?? Object.keys(MODES);
for (const mode of modes) if (!(mode in MODES)) throw new Error(`BENCH_MODES: unknown mode ${mode}`);

requireTools(['smtp-source', 'smtp-sink', 'redis-server', 'redis-cli']);

let dkimKeyFile;
/** One RSA-2048 key for the dkim20 mode, made once per bench run. */
function dkimKey() {
  if (dkimKeyFile === undefined) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    dkimKeyFile = join(mkdtempSync(join(tmpdir(), 'tern-bench-dkim-')), 'bench-dkim.pem');
    writeFileSync(dkimKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  }
  return dkimKeyFile;
}

/** A tern process relaying everything from 127.0.0.1 to the sink, as the peer harness configures it. */
async function startBenchTern(queue, sinkPort, mode, processes) {
  const options = {
    listener: {
      reverseLookup: false,
      limits: { maxConnections: 20000, maxConnectionsPerIp: 20000 },
    },
    nodeArgs: [],
  };
  if (mode.dkim) {
    const key = dkimKey();
    const fallback = JSON.stringify({ domain: 'example.com', selector: 'bench', keyFile: key });
    options.imports = `import { dkim } from ${JSON.stringify(join(root, 'packages/plugin-dkim/dist/index.js'))};`;
    // BENCH_DKIM='{"signingThreads":0}': more dkim() options, to compare where signatures are made.
    const extra = process.env.BENCH_DKIM ?? '{}';
    options.plugins = `[dkim({ ...${extra}, fallback: ${fallback} })]`;
  }
  if (profile) options.nodeArgs.push('--cpu-prof', '--cpu-prof-dir=PROFILE_DIR');
  const config = {
    hostname: 'bench.tern.test',
    localDomains: [],
    trustedNetworks: ['127.0.0.0/8'],
    queue: queue ?? ((dir) => ({ backend: 'embedded', path: join(dir, 'queue.db') })),
    delivery: {
      routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sinkPort, tls: 'none' } },
      concurrency: 50,
    },
    log: { level: 'warn' },
    ...(processes > 1 ? { processes } : {}),
  };
  if (!profile) return startTern(config, options);
  // The profile goes to a directory of its own, named before the process starts.
  const dir = mkdtempSync(join(tmpdir(), 'tern-bench-prof-'));
  options.nodeArgs = options.nodeArgs.map((a) => a.replace('PROFILE_DIR', dir));
  const tern = await startTern(config, options);
  return { ...tern, profileDir: dir };
}

/**
 * The pids of a tern and of the workers it forked (`processes` > 1), once every worker has a
 * listener (the port answers as soon as the first does).
 */
async function ternPids(tern, processes) {
  const children = () =>
    readFileSync(`/proc/${tern.pid}/task/${tern.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  if (processes > 1) await testkit.waitFor(() => children().length >= processes, 60_000);
  return [tern.pid, ...children().map(Number)];
}

/** One measurement: one tern with `processes` workers (sharing its port and the queue). */
async function runOnce(backend, modeName, queue, { processes = 1, redisPort } = {}) {
  const mode = MODES[modeName];
  const sink = await startSink();
  const tern = await startBenchTern(queue, sink.port, mode, processes);
  const pids = await ternPids(tern, processes);
  const redisPid = redisPort === undefined ? undefined : redisServerPid(redisPort);
  // Warm up: JIT, connection pools, SQLite pages (every worker: connections spread over them).
  await smtpSource(tern.port, 2 * processes, warmup * processes, 'b@example.net');
  await testkit.waitFor(() => sink.received >= warmup * processes, 30_000 + warmup * 100);
  const sinkBase = sink.received;
  const connectionsBefore = sink.connections;
  const cpuBefore = pids.map(cpuMs);
  const mainBefore = pids.map(mainThreadCpuMs);
  const diskBefore = pids.map(writeBytes);
  const redisDiskBefore = redisPid === undefined ? 0 : writeBytes(redisPid);
  const commandsBefore = redisPort === undefined ? undefined : redisCommandStats(redisPort);
  const started = performance.now();
  await smtpSource(tern.port, mode.sessions, messages, 'b@example.net', { reuse: mode.reuse });
  const acceptedMs = performance.now() - started;
  const total = messages;
  await testkit.waitFor(() => sink.received - sinkBase >= total, 300_000, 10);
  const deliveredMs = performance.now() - started;
  const connections = sink.connections - connectionsBefore;
  const cpu = pids.reduce((sum, pid, i) => sum + cpuMs(pid) - cpuBefore[i], 0);
  const mainCpu = pids.reduce((sum, pid, i) => sum + mainThreadCpuMs(pid) - mainBefore[i], 0);
  const disk = pids.reduce((sum, pid, i) => sum + writeBytes(pid) - diskBefore[i], 0);
  const redisDisk = redisPid === undefined ? Number.NaN : writeBytes(redisPid) - redisDiskBefore;
  const commands =
    commandsBefore === undefined ? undefined : commandDelta(commandsBefore, redisCommandStats(redisPort));
  await tern.stop();
  sink.stop();
  const row = {
    backend: processes > 1 ? `${backend} ×${processes}` : backend,
    mode: modeName,
    accept: (total / acceptedMs) * 1000,
    endToEnd: (total / deliveredMs) * 1000,
    cpuPerMessage: cpu / total,
    mainCpuPerMessage: mainCpu / total,
    diskPerMessage: disk / total,
    redisDiskPerMessage: redisDisk / total,
    commandsPerMessage:
      commands === undefined ? Number.NaN : commands.reduce((sum, [, n]) => sum + n, 0) / total,
    connectionsPer1000: (connections / total) * 1000,
  };
  const label = `${row.backend} ${modeName}`;
  if (showCommands && commands !== undefined) {
    console.log(`\nRedis commands per message, ${label}:`);
    for (const [name, n] of commands) console.log(`  ${(n / total).toFixed(2).padStart(7)}  ${name}`);
  }
  if (profile) {
    // A cluster writes one profile per process (the primary's too).
    for (const file of readdirSync(tern.profileDir).filter((f) => f.endsWith('.cpuprofile'))) {
      const { busyMs, top } = profileTop(join(tern.profileDir, file), profileTopN);
      console.log(
        `\nprofile ${label} (${join(tern.profileDir, file)}), ${busyMs.toFixed(0)} ms not idle, whole run:`,
      );
      for (const f of top)
        console.log(`  ${f.pct.toFixed(1).padStart(5)} %  ${f.ms.toFixed(0).padStart(6)} ms  ${f.name}`);
    }
  }
  console.error(`bench: ${label} done`);
  return row;
}

/** The pid of the redis-server on `port`, for its write_bytes. */
function redisServerPid(port) {
  const info = spawnSync('redis-cli', ['-p', String(port), 'INFO', 'server'], { encoding: 'utf8' }).stdout;
  const pid = /^process_id:(\d+)/m.exec(info)?.[1];
  return pid === undefined ? undefined : Number(pid);
}

const rows = [];
const durable = { appendonly: true, appendfsync: 'everysec', maxmemoryPolicy: 'noeviction' };
let redis;
let sentinel;
try {
  for (const backend of only) {
    if (backend === 'embedded') {
      for (const mode of modes) rows.push(await runOnce(backend, mode, undefined));
    } else if (backend === 'redis') {
      redis = await testkit.startRedis(durable);
      const engine = process.env.BENCH_REDIS_ENGINE;
      const queue = { backend: 'redis', url: redis.url, ...(engine ? { engine } : {}) };
      const redisPort = Number(new URL(redis.url).port);
      for (const mode of modes) {
        for (const processes of processCounts)
          rows.push(await runOnce(backend, mode, queue, { processes, redisPort }));
      }
      await redis.stop();
      redis = undefined;
    } else if (backend === 'replica-ack') {
      // A primary and a replica behind three Sentinels: what waiting for the replica costs.
      sentinel = await testkit.startRedisSentinel({ redis: durable });
      const redisConnection = { sentinels: sentinel.sentinels, name: sentinel.name };
      for (const mode of ['reuse20', 'reuse1']) {
        rows.push(await runOnce('sentinel, no ack', mode, { backend: 'redis', redis: redisConnection }));
        rows.push(
          await runOnce('sentinel, replicaAck 1', mode, {
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

const fixed = (value, digits) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
const header = [
  'backend',
  'mode',
  'accept msg/s',
  'end-to-end msg/s',
  'CPU ms/msg',
  'main thread ms/msg',
  'disk B/msg',
  'redis disk B/msg',
  'redis cmds/msg',
  'sink conns/1000 msg',
];
const table = rows.map((r) => [
  r.backend,
  r.mode,
  fixed(r.accept, 0),
  fixed(r.endToEnd, 0),
  fixed(r.cpuPerMessage, 2),
  fixed(r.mainCpuPerMessage, 2),
  fixed(r.diskPerMessage, 0),
  fixed(r.redisDiskPerMessage, 0),
  fixed(r.commandsPerMessage, 1),
  fixed(r.connectionsPer1000, 1),
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
const line = (cells) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(' | ')} |`;
console.log(
  `\n${messages} messages of 2 KiB (about 2.3 KB on the wire) per run, smtp-source -> tern -> smtp-sink on loopback` +
    `${profile ? ', under --cpu-prof (slower)' : ''}\n`,
);
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const row of table) console.log(line(row));
