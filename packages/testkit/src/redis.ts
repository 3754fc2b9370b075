// A private redis-server per test suite: its own port and temp dir, so tests never touch a shared Redis.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Daemon, findBinary, startDaemon } from './daemon.js';
import { freePort } from './port.js';
import { waitFor } from './wait.js';

/** Options for {@link startRedis}; each maps to the redis-server option of the same name. */
export interface TestRedisOptions {
  appendonly?: boolean;
  appendfsync?: 'always' | 'everysec' | 'no';
  maxmemory?: string;
  maxmemoryPolicy?: string;
  password?: string;
  /** More redis-server arguments, e.g. `['--replicaof', '127.0.0.1', '6380']` or cluster settings. */
  extraArgs?: readonly string[];
  /** Listen on this port instead of a free one (a replica set restarted in place). */
  port?: number;
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
  /** SIGSTOP: the server stays connected but answers nothing (a hung host) until {@link TestRedis.resume}. */
  pause(): void;
  /** SIGCONT after {@link TestRedis.pause}. */
  resume(): void;
  /** True while the process runs (false after kill or stop). */
  readonly running: boolean;
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
    port = opts.port ?? (await freePort());
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
    pause(): void {
      if (child?.child.pid !== undefined) process.kill(child.child.pid, 'SIGSTOP');
    },
    resume(): void {
      if (child?.child.pid !== undefined) process.kill(child.child.pid, 'SIGCONT');
    },
    get running(): boolean {
      return child !== undefined;
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
  if (opts.password !== undefined) args.push('--requirepass', opts.password, '--masterauth', opts.password);
  if (opts.extraArgs !== undefined) args.push(...opts.extraArgs);

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

/** A primary, its replica and three Sentinels watching them, all private and on free ports. */
export interface TestRedisSentinel {
  /** The master name the Sentinels monitor. */
  readonly name: string;
  /** Sentinel addresses, for `{ sentinels, name }` connections. */
  readonly sentinels: { host: string; port: number }[];
  /** The two data servers; which one is primary changes with failovers. */
  readonly servers: readonly TestRedis[];
  /** The server the Sentinels name as primary now. */
  primary(): Promise<TestRedis>;
  /** The server that is not the primary now. */
  replica(): Promise<TestRedis>;
  /**
   * Kills the primary with SIGKILL and resolves once a Sentinel names the other server as primary
   * (and that server says it is one). The killed server stays down until `restart()`.
   */
  failover(timeoutMs?: number): Promise<{ from: TestRedis; to: TestRedis; ms: number }>;
  /**
   * Who is primary in each Sentinel's eyes (with its config epoch and failover state) and each
   * data server's own role and link: for a test's failure message when a failover went otherwise.
   */
  describe(): Promise<string>;
  stop(): Promise<void>;
}

/** Options for {@link startRedisSentinel}. */
export interface TestRedisSentinelOptions {
  /** Data-server settings (AOF, fsync...); the replica gets the same. */
  readonly redis?: Omit<TestRedisOptions, 'port' | 'password'>;
  /** Sentinel's down-after-milliseconds (default 1000): how long a silent primary stays trusted. */
  readonly downAfterMs?: number;
}

/**
 * Starts a primary, a replica of it and three Sentinels (quorum 2), on loopback free ports, and
 * resolves once the Sentinels see both servers. Failovers take about `downAfterMs` plus a second.
 */
export async function startRedisSentinel(options: TestRedisSentinelOptions = {}): Promise<TestRedisSentinel> {
  const binary = findRedisServer();
  if (binary === undefined) throw new Error(NOT_FOUND);
  const name = 'ternmaster';
  const started: TestRedis[] = [];
  const sentinelDaemons: { daemon: Daemon; dir: string }[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.allSettled(sentinelDaemons.map((s) => s.daemon.stop('SIGKILL')));
    for (const s of sentinelDaemons) rmSync(s.dir, { recursive: true, force: true });
    await Promise.allSettled(started.map((s) => s.stop()));
  };
  try {
    const primary = await startRedis(options.redis);
    started.push(primary);
    const replica = await startRedis({
      ...options.redis,
      extraArgs: [...(options.redis?.extraArgs ?? []), '--replicaof', primary.host, String(primary.port)],
    });
    started.push(replica);
    await until(
      async () => (await info(replica.port, 'replication')).includes('master_link_status:up'),
      10_000,
    );
    const sentinels: { host: string; port: number }[] = [];
    for (let i = 0; i < 3; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'tern-sentinel-'));
      const port = await freePort();
      const conf = join(dir, 'sentinel.conf');
      writeFileSync(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${name} 127.0.0.1 ${primary.port} 2`,
          `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 1000}`,
          `sentinel failover-timeout ${name} 5000`,
          `sentinel parallel-syncs ${name} 1`,
          '',
        ].join('\n'),
      );
      const daemon = await startDaemon({
        name: 'redis-sentinel',
        binary,
        args: [conf, '--sentinel'],
        cwd: dir,
        ready: () => ping(port, undefined),
      });
      sentinelDaemons.push({ daemon, dir });
      sentinels.push({ host: '127.0.0.1', port });
    }
    // Each Sentinel has found the replica and the other Sentinels: a failover can be agreed on.
    await until(async () => {
      for (const s of sentinels) {
        const reply = await command(s.port, ['SENTINEL', 'MASTER', name]);
        if (!/num-slaves\r\n\$1\r\n1\r\n/.test(reply) || !/num-other-sentinels\r\n\$1\r\n2\r\n/.test(reply))
          return false;
      }
      return true;
    }, 20_000);

    const primaryPort = async (): Promise<number> => {
      for (const s of sentinels) {
        const reply = await command(s.port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name]).catch(() => '');
        const port = /\r\n(\d+)\r\n$/.exec(reply)?.[1];
        if (port !== undefined) return Number(port);
      }
      throw new Error('no Sentinel names a primary');
    };
    const byPort = (port: number): TestRedis => {
      const server = started.find((s) => s.port === port);
      if (server === undefined) throw new Error(`the Sentinels name an unknown primary on port ${port}`);
      return server;
    };
    const set: TestRedisSentinel = {
      name,
      sentinels,
      servers: started,
      primary: async () => byPort(await primaryPort()),
      replica: async () => {
        const port = await primaryPort();
        return started.find((s) => s.port !== port) as TestRedis;
      },
      async failover(timeoutMs = 30_000) {
        const from = await set.primary();
        const begun = Date.now();
        await from.kill();
        await until(async () => {
          const port = await primaryPort().catch(() => from.port);
          if (port === from.port) return false;
          return (await info(port, 'replication')).includes('role:master');
        }, timeoutMs);
        return { from, to: await set.primary(), ms: Date.now() - begun };
      },
      async describe() {
        const field = (reply: string, key: string): string =>
          new RegExp(`\\$\\d+\\r\\n${key}\\r\\n\\$\\d+\\r\\n([^\\r]*)`).exec(reply)?.[1] ?? '?';
        const views = await Promise.all(
          sentinels.map(async (s) => {
            const reply = await command(s.port, ['SENTINEL', 'MASTER', name]).catch((e: Error) => e.message);
            return `sentinel ${s.port}: primary ${field(reply, 'port')} epoch ${field(reply, 'config-epoch')} flags ${field(reply, 'flags')} replicas ${field(reply, 'num-slaves')}`;
          }),
        );
        const roles = await Promise.all(
          started.map(async (server) => {
            if (!server.running) return `server ${server.port}: down`;
            const replication = await info(server.port, 'replication').catch((e: Error) => e.message);
            const line = (key: string) => new RegExp(`${key}:([^\\r]*)`).exec(replication)?.[1] ?? '-';
            return `server ${server.port}: role ${line('role')} link ${line('master_link_status')} replicas ${line('connected_slaves')} offset ${line('master_repl_offset')}`;
          }),
        );
        return [...views, ...roles].join('; ');
      },
      stop: stopAll,
    };
    return set;
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** Three cluster-enabled redis-servers that share all 16384 slots, each a primary. */
export interface TestRedisCluster {
  readonly nodes: { host: string; port: number }[];
  readonly servers: readonly TestRedis[];
  stop(): Promise<void>;
}

/** Starts a three-primary Redis Cluster on loopback free ports and resolves once it says `cluster_state:ok`. */
export async function startRedisCluster(
  options: Omit<TestRedisOptions, 'extraArgs' | 'port' | 'password'> = {},
): Promise<TestRedisCluster> {
  const servers: TestRedis[] = [];
  const busPorts: number[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const busPort = await freePort();
      busPorts.push(busPort);
      servers.push(
        await startRedis({
          ...options,
          extraArgs: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            'nodes.conf',
            '--cluster-node-timeout',
            '2000',
            // The bus on a free port of its own, not port + 10000 (which may be taken or too high).
            '--cluster-port',
            String(busPort),
          ],
        }),
      );
    }
    // Slots split in three, then every node meets the first.
    const per = Math.ceil(16_384 / servers.length);
    for (const [i, server] of servers.entries()) {
      const slots: string[] = [];
      for (let slot = i * per; slot < Math.min(16_384, (i + 1) * per); slot++) slots.push(String(slot));
      await command(server.port, ['CLUSTER', 'ADDSLOTS', ...slots]);
    }
    for (const server of servers.slice(1)) {
      const first = servers[0] as TestRedis;
      await command(server.port, ['CLUSTER', 'MEET', first.host, String(first.port), String(busPorts[0])]);
    }
    await until(async () => {
      for (const server of servers) {
        if (!(await command(server.port, ['CLUSTER', 'INFO'])).includes('cluster_state:ok')) return false;
      }
      return true;
    }, 20_000);
    return {
      nodes: servers.map((s) => ({ host: s.host, port: s.port })),
      servers,
      stop: async () => {
        await Promise.allSettled(servers.map((s) => s.stop()));
      },
    };
  } catch (error) {
    await Promise.allSettled(servers.map((s) => s.stop()));
    throw error;
  }
}

/** Polls `check` (a failing check counts as not yet) until it holds: the kit's one wait loop. */
function until(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  return waitFor(() => check().catch(() => false), timeoutMs, 50);
}

function info(port: number, section: string): Promise<string> {
  return command(port, ['INFO', section]);
}

/** One command over a fresh socket; resolves with the raw RESP reply once it stops arriving. */
function command(port: number, parts: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    socket.setTimeout(3000, () => {
      socket.destroy();
      reject(new Error(`redis on ${port}: no answer to ${parts[0]}`));
    });
    socket.once('error', reject);
    socket.once('connect', () => socket.write(encodeCommand(parts)));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (complete(reply)) {
        socket.destroy();
        resolve(reply);
      }
    });
    socket.once('close', () => resolve(reply));
  });
}

/** Whether a RESP reply (read as latin1: one char per byte) has arrived whole. */
function complete(reply: string): boolean {
  return respEnd(reply, 0) === reply.length;
}

/** Where the RESP element starting at `at` ends, or -1 while it is incomplete. */
function respEnd(reply: string, at: number): number {
  const lineEnd = reply.indexOf('\r\n', at);
  if (lineEnd === -1) return -1;
  const type = reply[at];
  const n = Number(reply.slice(at + 1, lineEnd));
  if (type === '$') {
    if (n < 0) return lineEnd + 2;
    const end = lineEnd + 2 + n + 2;
    return reply.length >= end ? end : -1;
  }
  if (type === '*') {
    let pos = lineEnd + 2;
    for (let i = 0; i < n && pos !== -1; i++) pos = respEnd(reply, pos);
    return pos;
  }
  return lineEnd + 2;
}
