// Shared by the benchmarks: real tern processes, Postfix's smtp-source and smtp-sink, CPU time.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const testkit = await import(join(root, 'packages/testkit/dist/index.js'));
const CLK_TCK = 100;

/** Stops with a hint when a tool the benchmark runs is missing. */
export function requireTools(tools) {
  for (const tool of tools) {
    if (spawnSync('sh', ['-c', `command -v ${tool} || test -x /usr/sbin/${tool}`]).status !== 0) {
      console.error(`bench: ${tool} not found: apt-get install postfix redis-server`);
      process.exit(2);
    }
  }
}

/**
 * A tern process with `config` (a listener on a free port is added); `port` is its MX listener.
 * `listener` adds listener options; `imports` lines go on top of the generated config module and
 * `plugins` is its plugins array as source text (so a plugin factory can be called); `nodeArgs`
 * go to node (e.g. --cpu-prof). `dir` is the process's temp directory (kept until stop).
 */
export async function startTern(
  config,
  { stdout = 'ignore', listener = {}, imports = '', plugins, nodeArgs = [], env = {} } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), 'tern-bench-'));
  const port = await testkit.freePort();
  const queue = typeof config.queue === 'function' ? config.queue(dir) : config.queue;
  const body = JSON.stringify({
    ...config,
    queue,
    listeners: [{ kind: 'mx', host: '127.0.0.1', port, ...listener }],
  });
  const file = join(dir, 'tern.config.mjs');
  const setPlugins = plugins === undefined ? '' : `config.plugins = ${plugins};\n`;
  writeFileSync(file, `${imports}\nconst config = ${body};\n${setPlugins}export default config;\n`);
  const child = spawn(
    process.execPath,
    [...nodeArgs, join(root, 'apps/mta/dist/cli.js'), 'start', '--config', file],
    {
      stdio: ['ignore', stdout, 'inherit'],
      env: { ...process.env, NODE_ENV: 'production', ...env },
    },
  );
  await waitPort(port);
  return {
    port,
    pid: child.pid,
    child,
    dir,
    stop: async ({ keep = false } = {}) => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Bytes a process (and nothing else) made the kernel write to storage so far: /proc/PID/io write_bytes. */
export function writeBytes(pid) {
  try {
    const line = readFileSync(`/proc/${pid}/io`, 'utf8').match(/^write_bytes: (\d+)$/m);
    return line ? Number(line[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Total calls per command of a Redis server (INFO commandstats), counting commands run inside Lua too. */
export function redisCommandStats(port) {
  const out = spawnSync('redis-cli', ['-p', String(port), 'INFO', 'commandstats'], {
    encoding: 'utf8',
  }).stdout;
  const calls = new Map();
  for (const m of out.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(m[1], Number(m[2]));
  return calls;
}

/** Command calls between two redisCommandStats snapshots, largest first. */
export function commandDelta(before, after) {
  const delta = [];
  for (const [name, calls] of after) {
    const d = calls - (before.get(name) ?? 0);
    if (d > 0) delta.push([name, d]);
  }
  return delta.sort((a, b) => b[1] - a[1]);
}

/**
 * The top self-time functions of a V8 CPU profile (node --cpu-prof): each sample's time goes to
 * the function on top of the stack. Returns { totalMs, busyMs, top: [{ name, ms, pct }] }.
 */
export function profileTop(file, n = 20) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((node) => [node.id, node]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i] ?? 0;
    const frame = byId.get(prof.samples[i]).callFrame;
    const url = frame.url
      .replace(/^file:\/\//, '')
      .replace(/^.*\/node_modules\//, '')
      .replace(/^.*\/(packages|apps)\//, '$1/');
    const key =
      `${frame.functionName || '(anonymous)'} ${url ? `${url}:${frame.lineNumber + 1}` : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
  const idle = self.get('(idle)') ?? 0;
  const busy = total - idle;
  const top = [...self]
    .filter(([k]) => k !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, us]) => ({ name, ms: us / 1000, pct: (100 * us) / busy }));
  return { totalMs: total / 1000, busyMs: busy / 1000, top };
}

const BENCH_BODY = Buffer.from(`${'x'.repeat(76)}\r\n`.repeat(27)); // 2106 bytes

/**
 * Message `i` of the queue benchmarks (queue-io.js, queue-ab.js): 2 250 bytes, one recipient;
 * `memorySource` is the tree's own (@tern/plugin-api/host).
 */
export function benchMessage(memorySource, i) {
  const head = Buffer.from(
    `From: <bench@load.test>\r\nTo: <b@example.net>\r\nSubject: bench ${i}\r\n` +
      `Message-ID: <${i}.${Date.now()}@load.test>\r\nDate: ${new Date().toUTCString()}\r\n\r\n`,
  );
  return {
    envelope: { mailFrom: 'bench@load.test', recipients: [{ address: 'b@example.net' }] },
    content: memorySource([head, BENCH_BODY]),
    receivedAt: Date.now(),
    source: { listener: 'bench', remoteAddress: '127.0.0.1', helo: 'load.test', sessionId: `s${i}` },
    messageId: `${i}.${Date.now()}@load.test`,
  };
}

/** A stand-in `deliver` for the queue benchmarks: reads the body, delivers every recipient, counts. */
export function instantDeliver(onDelivered) {
  return async (job, open) => {
    for await (const _ of await open());
    onDelivered();
    return {
      recipients: job.recipients.map((r) => ({
        address: r.address,
        result: 'delivered',
        reply: { code: 250, enhanced: '2.0.0', text: 'OK queued as 1234' },
      })),
      remoteMta: 'sink[127.0.0.1]:2600',
    };
  };
}

/** utime + stime of a process, in ms. */
export function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/** utime + stime of a process's main thread (its event loop), in ms: what bounds one process's rate. */
export function mainThreadCpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

export function waitPort(port, timeoutMs = 20_000) {
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
export async function startSink() {
  const port = await testkit.freePort();
  const child = spawn('smtp-sink', ['-u', 'nobody', '-c', `127.0.0.1:${port}`, '1000'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let received = 0;
  let ended = 0;
  child.stdout.on('data', (chunk) => {
    const all = [...chunk.toString().matchAll(/sess=(\d+) quit=\d+ mesg=(\d+)/g)];
    if (all.length > 0) {
      ended = Number(all.at(-1)[1]);
      received = Number(all.at(-1)[2]);
    }
  });
  await waitPort(port);
  return {
    port,
    get received() {
      return received;
    },
    /** Connections the sink has taken so far: sessions ended (its counter) plus those open now (ss). */
    get connections() {
      const open = spawnSync('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`], {
        encoding: 'utf8',
      }).stdout;
      return ended + open.split('\n').filter(Boolean).length;
    },
    stop: () => child.kill('SIGKILL'),
  };
}

/** Postfix's smtp-source, run without blocking this process (it reads smtp-sink's counters meanwhile). */
export function smtpSource(port, sessions, count, to = 'rcpt@bench.test', { reuse = true } = {}) {
  const args = [...(reuse ? ['-d'] : []), '-s', String(sessions), '-m', String(count), '-l', '2048'];
  const child = spawn('smtp-source', [...args, '-f', 'bench@load.test', '-t', to, `127.0.0.1:${port}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
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
