// A private redis-server per test suite: its own port and temp dir, so tests never touch a shared Redis.
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './port.js';

/** Options for {@link startRedis}; each maps to the redis-server option of the same name. */
export interface TestRedisOptions {
  appendonly?: boolean;
  appendfsync?: 'always' | 'everysec' | 'no';
  maxmemory?: string;
  maxmemoryPolicy?: string;
  password?: string;
}

/** A running private redis-server. */
export interface TestRedis {
  /** `redis://[:password@]127.0.0.1:PORT`, ready for ioredis. */
  url: string;
  host: string;
  port: number;
  /** The server's working dir (AOF files live here). */
  dir: string;
  /** Shuts the server down and removes its dir. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash: no final fsync. The dir is kept for {@link TestRedis.restart}. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and dir (data survives only with appendonly). */
  restart(): Promise<void>;
}

const NOT_FOUND = "redis-server not found: install Debian's redis-server (apt-get install redis-server)";
const START_TIMEOUT_MS = 10_000;

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** True when a `redis-server` binary can be found (TERN_REDIS_SERVER, PATH, or the Debian location). */
export function redisAvailable(): boolean {
  return findRedisServer() !== undefined;
}

function findRedisServer(): string | undefined {
  const override = process.env.TERN_REDIS_SERVER;
  const candidates = override
    ? [override]
    : [
        ...(process.env.PATH ?? '')
          .split(delimiter)
          .filter(Boolean)
          .map((dir) => join(dir, 'redis-server')),
        '/usr/bin/redis-server',
        '/usr/sbin/redis-server',
        '/usr/local/bin/redis-server',
      ];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/**
 * Spawns a private redis-server on a free port of 127.0.0.1 with its own temp dir and resolves once it
 * answers PING. Never touches any other Redis. Throws when `redis-server` is not installed.
 */
export async function startRedis(opts: TestRedisOptions = {}): Promise<TestRedis> {
  const binary = findRedisServer();
  if (binary === undefined) throw new Error(NOT_FOUND);
  installExitHook();

  const dir = mkdtempSync(join(tmpdir(), 'tern-redis-'));
  const host = '127.0.0.1';
  let port = 0;
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    child = await spawnRedis(binary, port, dir, opts);
  };

  // The port may be taken between freePort() and the bind: try a few fresh ones.
  let lastError: unknown;
  for (let attempt = 0; attempt < 5 && child === undefined; attempt++) {
    port = await freePort();
    try {
      await launch();
    } catch (error) {
      lastError = error;
      if (!String((error as Error).message).includes('Address already in use')) break;
    }
  }
  if (child === undefined) {
    rmSync(dir, { recursive: true, force: true });
    throw lastError;
  }

  const auth = opts.password === undefined ? '' : `:${encodeURIComponent(opts.password)}@`;
  return {
    url: `redis://${auth}${host}:${port}`,
    host,
    port,
    dir,
    async stop(): Promise<void> {
      if (child) await terminate(child, 'SIGTERM');
      child = undefined;
      rmSync(dir, { recursive: true, force: true });
    },
    async kill(): Promise<void> {
      if (child) await terminate(child, 'SIGKILL');
      child = undefined;
    },
    async restart(): Promise<void> {
      if (child) await terminate(child, 'SIGTERM');
      child = undefined;
      await launch();
    },
  };
}

async function spawnRedis(
  binary: string,
  port: number,
  dir: string,
  opts: TestRedisOptions,
): Promise<ChildProcess> {
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    opts.appendonly ? 'yes' : 'no',
    '--daemonize',
    'no',
    '--logfile',
    '',
  ];
  if (opts.appendfsync !== undefined) args.push('--appendfsync', opts.appendfsync);
  if (opts.maxmemory !== undefined) args.push('--maxmemory', opts.maxmemory);
  if (opts.maxmemoryPolicy !== undefined) args.push('--maxmemory-policy', opts.maxmemoryPolicy);
  if (opts.password !== undefined) args.push('--requirepass', opts.password);

  const child = spawn(binary, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  const collect = (chunk: Buffer): void => {
    // Only the tail matters for an error message.
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  child.once('error', (error) => {
    spawnError = error;
  });
  child.once('exit', (code, signal) => {
    exited = { code, signal };
    running.delete(child);
  });

  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (spawnError) throw new Error(`redis-server failed to start: ${spawnError.message}`);
    if (exited) {
      throw new Error(
        `redis-server exited during start-up (code ${exited.code}, signal ${exited.signal}): ${output.trim()}`,
      );
    }
    if (await ping(port, opts.password)) return child;
    await sleep(20);
  }
  await terminate(child, 'SIGKILL');
  throw new Error(
    `redis-server on port ${port} did not answer PING within ${START_TIMEOUT_MS} ms: ${output.trim()}`,
  );
}

/** One RESP round trip: true when the server at `port` answers PONG (after AUTH when a password is set). */
function ping(port: number, password: string | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => {
      const commands = password === undefined ? [['PING']] : [['AUTH', password], ['PING']];
      socket.write(commands.map(encodeCommand).join(''));
    });
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      // -LOADING while the AOF is replayed: not ready yet.
      if (reply.startsWith('-')) done(false);
      else if (reply.includes('+PONG\r\n')) done(true);
    });
  });
}

function encodeCommand(parts: string[]): string {
  return `*${parts.length}\r\n${parts.map((part) => `$${Buffer.byteLength(part)}\r\n${part}\r\n`).join('')}`;
}

function terminate(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const escalate = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(escalate);
      resolve();
    });
    child.kill(signal);
  });
}

// A test run that dies before its afterAll must not leave redis-servers behind.
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}
