// A private redis-server per test suite: its own port and temp dir, so tests never touch a shared Redis.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Daemon, findBinary, startDaemon } from './daemon.js';
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

/** True when a `redis-server` binary can be found (TERN_REDIS_SERVER, PATH, or the Debian location). */
export function redisAvailable(): boolean {
  return findRedisServer() !== undefined;
}

function findRedisServer(): string | undefined {
  return findBinary('redis-server', process.env.TERN_REDIS_SERVER);
}

/**
 * Spawns a private redis-server on a free port of 127.0.0.1 with its own temp dir and resolves once it
 * answers PING. Never touches any other Redis. Throws when `redis-server` is not installed.
 */
export async function startRedis(opts: TestRedisOptions = {}): Promise<TestRedis> {
  const binary = findRedisServer();
  if (binary === undefined) throw new Error(NOT_FOUND);

  const dir = mkdtempSync(join(tmpdir(), 'tern-redis-'));
  const host = '127.0.0.1';
  let port = 0;
  let child: Daemon | undefined;

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
      await child?.stop('SIGTERM');
      child = undefined;
      rmSync(dir, { recursive: true, force: true });
    },
    async kill(): Promise<void> {
      await child?.stop('SIGKILL');
      child = undefined;
    },
    async restart(): Promise<void> {
      await child?.stop('SIGTERM');
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
): Promise<Daemon> {
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

  return startDaemon({
    name: 'redis-server',
    binary,
    args,
    cwd: dir,
    ready: () => ping(port, opts.password),
  });
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
