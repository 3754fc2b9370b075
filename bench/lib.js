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

/** A tern process with `config` (a listener on a free port is added); `port` is its MX listener. */
export async function startTern(config, { stdout = 'ignore' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tern-bench-'));
  const port = await testkit.freePort();
  const queue = typeof config.queue === 'function' ? config.queue(dir) : config.queue;
  writeFileSync(
    join(dir, 'tern.config.json'),
    JSON.stringify({ ...config, queue, listeners: [{ kind: 'mx', host: '127.0.0.1', port }] }),
  );
  const child = spawn(
    process.execPath,
    [join(root, 'apps/mta/dist/cli.js'), 'start', '--config', join(dir, 'tern.config.json')],
    { stdio: ['ignore', stdout, 'inherit'] },
  );
  await waitPort(port);
  return {
    port,
    pid: child.pid,
    child,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** utime + stime of a process, in ms. */
export function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
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

/** Postfix's smtp-source, run without blocking this process (it reads smtp-sink's counters meanwhile). */
export function smtpSource(port, sessions, count, to = 'rcpt@bench.test') {
  const args = ['-d', '-s', String(sessions), '-m', String(count), '-l', '2048'];
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
