// node bench/connections.js [TREE...]: CPU ms per connection of a tern that only greets (banner,
// EHLO, QUIT; 10 clients at a time), after BENCH_WARMUP=2000 connections, over
// BENCH_CONNECTIONS=3000, BENCH_ROUNDS=3 times. With other trees (a copy of this repository at
// another commit, built), each round measures them in turn with this one: an A/B in the same
// minutes. The part of issue 18 a new connection per message adds over a reused one.
// BENCH_CLOSE=reset: the client resets the connection once it has the 221 (SO_LINGER 0, as
// Postfix's smtp-source does) instead of closing it after the server's FIN.
import { connect } from 'node:net';
import { join } from 'node:path';
import { cpuMs, root } from './lib.js';

const warmup = Number(process.env.BENCH_WARMUP ?? 2000);
const count = Number(process.env.BENCH_CONNECTIONS ?? 3000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const trees = [root, ...process.argv.slice(2)];
const reset = process.env.BENCH_CLOSE === 'reset';

/** One connection: banner, EHLO, QUIT; resolves when the server closed it. */
function greet(port) {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let pending = '';
    let step = 0;
    socket.on('data', (chunk) => {
      pending += chunk;
      if (!pending.endsWith('\r\n')) return;
      const lines = pending.split('\r\n');
      pending = '';
      if (lines.at(-2)?.[3] === '-') return; // more lines of a multi-line reply to come
      if (step === 0) socket.write('EHLO client.bench.test\r\n');
      else if (step === 1) socket.write('QUIT\r\n');
      else if (reset) socket.resetAndDestroy();
      step++;
    });
    socket.on('close', resolve);
    socket.on('error', reject);
  });
}

async function connections(port, n) {
  let started = 0;
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      while (started++ < n) await greet(port);
    }),
  );
}

async function measure(tree) {
  const { startTern } = await import(join(tree, 'bench/lib.js'));
  const tern = await startTern(
    {
      hostname: 'bench.tern.test',
      localDomains: [],
      trustedNetworks: ['127.0.0.0/8'],
      queue: (dir) => ({ backend: 'embedded', path: join(dir, 'queue.db') }),
      delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: 9, tls: 'none' } } },
      log: { level: 'warn' },
    },
    {
      stdout: 'ignore',
      listener: { reverseLookup: false, limits: { maxConnections: 20000, maxConnectionsPerIp: 20000 } },
    },
  );
  await connections(tern.port, warmup);
  const before = cpuMs(tern.pid);
  await connections(tern.port, count);
  const perConnection = (cpuMs(tern.pid) - before) / count;
  await tern.stop();
  return perConnection;
}

const results = new Map(trees.map((tree) => [tree, []]));
for (let round = 0; round < rounds; round++) {
  for (const tree of trees) results.get(tree).push(await measure(tree));
}
for (const [tree, runs] of results) {
  const sorted = [...runs].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  console.log(
    `${tree}: median ${median.toFixed(3)} ms CPU per connection (runs ${runs.map((r) => r.toFixed(3)).join(', ')})`,
  );
}
