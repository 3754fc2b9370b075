// npm run soak: three tern nodes on one Sentinel-managed Redis (a primary, a replica, three
// Sentinels) take a steady stream of messages from swaks (an independent SMTP client, several
// loops at once, each message with its own Message-ID) while the soak, round after round, kills a
// tern node with SIGKILL, kills the Redis primary with SIGKILL (Sentinel promotes the replica),
// then restarts both. At the end it waits for the queue to drain and counts, by Message-ID at the
// receiving server: acknowledged (250 from tern), delivered, lost (acknowledged and never
// delivered), duplicated, and the longest delay from 250 to arrival.
//
// Bounded: SOAK_ROUNDS rounds (default 5) of about SOAK_ROUND_SECONDS each (default 20), then at
// most SOAK_DRAIN_SECONDS (default 120) to deliver what is left. SOAK_REPLICA_ACK=0 turns replica
// acknowledgement off (then a failover may lose what the primary had not passed on yet).
// SOAK_JSON=1 prints the report as one JSON line (the CI test reads it). Exit code 1 when
// something acknowledged was lost with replica acknowledgement on.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const testkit = await import(join(root, 'packages/testkit/dist/index.js'));

const rounds = Number(process.env.SOAK_ROUNDS ?? 5);
const roundSeconds = Number(process.env.SOAK_ROUND_SECONDS ?? 20);
const drainSeconds = Number(process.env.SOAK_DRAIN_SECONDS ?? 120);
const replicaAck = process.env.SOAK_REPLICA_ACK !== '0';
const loops = Number(process.env.SOAK_LOOPS ?? 4);
const json = process.env.SOAK_JSON === '1';
// With replica acknowledgement, a primary left without a replica should refuse writes at once
// (NOREPLICAS) instead of taking them and timing out in WAIT; SOAK_MIN_REPLICAS=0 leaves it out.
const minReplicas = Number(process.env.SOAK_MIN_REPLICAS ?? (replicaAck ? 1 : 0));
const NODES = 3;

const say = (line) => {
  if (!json) process.stderr.write(`soak: ${line}\n`);
};

const dir = mkdtempSync(join(tmpdir(), 'tern-soak-'));
const sink = await testkit.startSmtpSink({ hostname: 'mx.soak.test' });
const redis = await testkit.startRedisSentinel({
  redis: {
    appendonly: true,
    appendfsync: 'everysec',
    maxmemoryPolicy: 'noeviction',
    extraArgs:
      minReplicas > 0 ? ['--min-replicas-to-write', String(minReplicas), '--min-replicas-max-lag', '10'] : [],
  },
});
say(
  `Redis primary :${(await redis.primary()).port}, replica :${(await redis.replica()).port}, replicaAck ${replicaAck ? 'on' : 'off'}, min-replicas-to-write ${minReplicas}`,
);

const config = {
  hostname: 'soak.tern.test',
  localDomains: ['tern.test'],
  trustedNetworks: ['127.0.0.1/32'],
  queue: {
    backend: 'redis',
    redis: { sentinels: redis.sentinels, name: redis.name },
    prefix: 'soak',
    ...(replicaAck ? { replicaAck: { replicas: 1, timeoutMs: 1000 } } : {}),
    retry: { intervals: ['1s', '2s', '5s'], maxAge: '1h' },
  },
  delivery: {
    routes: { 'soak.test': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } },
    concurrency: 20,
  },
  log: { level: 'warn' },
};

/** One tern node: its own port and config file; restartable on the same port after a kill. */
async function ternNode(index) {
  const port = await testkit.freePort();
  const file = join(dir, `tern-${index}.json`);
  writeFileSync(file, JSON.stringify({ ...config, listeners: [{ kind: 'mx', host: '127.0.0.1', port }] }));
  const node = { index, port, child: undefined };
  node.start = async () => {
    let output = '';
    let started = false;
    const child = spawn(process.execPath, [join(root, 'apps/mta/dist/cli.js'), 'start', '--config', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const collect = (c) => {
      output = (output + c).slice(-4000);
      // The banner on stderr (`tern <hostname>: started`), printed whatever the log level.
      started ||= /: started\n/.test(output);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    node.child = child;
    node.output = () => output;
    await testkit.waitFor(() => started || child.exitCode !== null, 30_000);
    if (child.exitCode !== null) throw new Error(`tern node ${index} did not start:\n${output}`);
  };
  node.kill = async () => {
    const child = node.child;
    node.child = undefined;
    if (!child || child.exitCode !== null) return;
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  };
  return node;
}

const nodes = [];
for (let i = 0; i < NODES; i++) nodes.push(await ternNode(i));
await Promise.all(nodes.map((n) => n.start()));
say(`tern nodes on ports ${nodes.map((n) => n.port).join(', ')}`);

// ---- the load: swaks loops, round robin over the nodes, each message its own Message-ID ----
const acknowledged = new Map(); // Message-ID -> time of the 250
let attempted = 0;
let refused = 0;
/** Why sessions got no 250: the reply (or swaks' complaint), digits and ports blanked, counted. */
const refusals = new Map();
let loading = true;
let sequence = 0;
async function loadLoop(loop) {
  while (loading) {
    const n = sequence++;
    const id = `<soak-${n}@load.test>`;
    const node = nodes[n % NODES];
    attempted++;
    const result = await testkit
      .swaks(node.port, [
        '--from',
        'load@load.test',
        '--to',
        `rcpt${loop}@soak.test`,
        '--header',
        `Message-Id: ${id}`,
        '--h-Subject',
        `soak ${n}`,
        '--timeout',
        '20',
      ])
      .catch((error) => ({ output: String(error) }));
    if (/<- {2}250 2\.0\.0 queued as/.test(result.output)) acknowledged.set(id, Date.now());
    else {
      refused++;
      const reason = (
        /<\*\* (.*)/.exec(result.output)?.[1] ??
        /\*\*\* (.*)/.exec(result.output)?.[1] ??
        'no reply'
      )
        .replace(/\d{3,}/g, 'N')
        .slice(0, 80);
      refusals.set(reason, (refusals.get(reason) ?? 0) + 1);
      // A refused or broken session: the client would retry later; so does this loop, after a pause.
      await sleep(100);
    }
  }
}
const load = Array.from({ length: loops }, (_, i) => loadLoop(i));

// ---- the failures ----
const started = Date.now();
try {
  for (let round = 1; round <= rounds; round++) {
    const beginning = Date.now();
    await sleep(roundSeconds * 250);
    const victim = nodes[round % NODES];
    await victim.kill();
    say(`round ${round}: tern node ${victim.index} killed -9`);
    await sleep(roundSeconds * 150);
    const { from, to, ms } = await redis.failover();
    say(`round ${round}: Redis primary :${from.port} killed -9, Sentinel promoted :${to.port} in ${ms} ms`);
    await sleep(roundSeconds * 100);
    await from.restart();
    await victim.start();
    say(`round ${round}: tern node ${victim.index} and Redis :${from.port} restarted`);
    // The old primary is a replica again once it has synchronised: the next failover can happen.
    await testkit.waitFor(async () => (await redis.replica()) === from && (await replicaUp(from)), 60_000);
    const rest = roundSeconds * 1000 - (Date.now() - beginning);
    if (rest > 0) await sleep(rest);
  }
} finally {
  loading = false;
  await Promise.all(load);
}
const loadSeconds = (Date.now() - started) / 1000;
say(
  `load stopped after ${loadSeconds.toFixed(0)} s: ${acknowledged.size} acknowledged, waiting for delivery`,
);

function arrivals() {
  const seen = new Map(); // Message-ID -> arrival times
  for (const message of sink.messages) {
    const id = /^Message-Id:\s*(<[^>]+>)/im.exec(message.headers)?.[1];
    if (id === undefined) continue;
    const times = seen.get(id) ?? [];
    times.push(message.receivedAt);
    seen.set(id, times);
  }
  return seen;
}
const allArrived = () => {
  const seen = arrivals();
  for (const id of acknowledged.keys()) if (!seen.has(id)) return false;
  return true;
};
await testkit.waitFor(allArrived, drainSeconds * 1000, 200).catch(() => {});

const seen = arrivals();
let lost = 0;
let longest = 0;
const lostIds = [];
for (const [id, at] of acknowledged) {
  const times = seen.get(id);
  if (times === undefined) {
    lost++;
    if (lostIds.length < 10) lostIds.push(id);
  } else longest = Math.max(longest, Math.min(...times) - at);
}
const duplicated = [...seen.values()].filter((times) => times.length > 1).length;
const report = {
  replicaAck,
  minReplicasToWrite: minReplicas,
  rounds,
  loadSeconds: Math.round(loadSeconds),
  attempted,
  acknowledged: acknowledged.size,
  refused,
  delivered: [...acknowledged.keys()].filter((id) => seen.has(id)).length,
  deliveredUnacknowledged: [...seen.keys()].filter((id) => !acknowledged.has(id)).length,
  lost,
  duplicated,
  longestDelayMs: longest,
  refusals: Object.fromEntries([...refusals].sort((a, b) => b[1] - a[1])),
  ...(lostIds.length > 0 ? { lostIds } : {}),
};

if (process.env.SOAK_DEBUG === '1') {
  for (const node of nodes) process.stderr.write(`---- node ${node.index}:\n${node.output?.() ?? ''}\n`);
}
for (const node of nodes) await node.kill();
await redis.stop();
await sink.stop();
rmSync(dir, { recursive: true, force: true });

if (json) process.stdout.write(`${JSON.stringify(report)}\n`);
else {
  console.log(`
soak: ${rounds} rounds (kill -9 a tern node, kill -9 the Redis primary, restart both), replicaAck ${replicaAck ? 'on' : 'off'}, min-replicas-to-write ${minReplicas}
  sessions tried        ${attempted} (${refused} refused or broken: the client keeps those)
  acknowledged (250)    ${report.acknowledged}
  delivered             ${report.delivered}
  lost                  ${lost}${lostIds.length ? ` (${lostIds.join(' ')})` : ''}
  duplicated            ${duplicated}
  delivered, not acked  ${report.deliveredUnacknowledged} (a 250 lost with its connection: the client resends, a duplicate)
  longest delay         ${(longest / 1000).toFixed(1)} s
  why sessions got no 250:
${[...refusals].map(([reason, count]) => `    ${String(count).padStart(5)}  ${reason}`).join('\n')}`);
}
process.exit(lost > 0 && replicaAck ? 1 : 0);

/** Whether `server` replicates from a primary with its link up. */
async function replicaUp(server) {
  const { Redis } = await import('ioredis');
  const client = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.info('replication')).includes('master_link_status:up');
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}
