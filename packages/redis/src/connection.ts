// One description of where Redis is (a URL, a primary found through Sentinel, or a Cluster) and
// one function that opens an ioredis client for it. The queue, the limiters and greylisting all
// take this description, so a fleet configures its Redis once.

import { createRequire } from 'node:module';
import calculateSlot from 'cluster-key-slot';
import type { Cluster, Redis, RedisOptions } from 'ioredis';
import { z } from 'zod';

/** A client of any of the three shapes; Cluster and Redis share the command interface. */
export type RedisClient = Redis | Cluster;

// ioredis loads on the first connection, not at import: @tern/queue imports this package, and a
// user of the embedded queue never loads a Redis client.
const require = createRequire(import.meta.url);
function ioredis(): typeof import('ioredis') {
  return require('ioredis') as typeof import('ioredis');
}

export interface RedisNode {
  readonly host: string;
  readonly port: number;
}

interface Credentials {
  /** AUTH username (Redis 6 ACLs). */
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** TLS to the Redis servers (a URL says it with `rediss://` instead). */
  readonly tls?: boolean | undefined;
}

/**
 * Where Redis is. `url`: one server. `sentinels` + `name`: the primary that these Sentinels
 * currently name (followed through failovers). `cluster`: some nodes of a Redis Cluster (the
 * rest are discovered).
 */
export type RedisConnection =
  | { readonly url: string }
  | (Credentials & {
      readonly sentinels: readonly RedisNode[];
      /** The master name the Sentinels monitor. */
      readonly name: string;
      /** AUTH for the Sentinels themselves, when they require it. */
      readonly sentinelPassword?: string | undefined;
      readonly db?: number | undefined;
    })
  | (Credentials & { readonly cluster: readonly RedisNode[] });

const node = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65_535),
});
const credentials = {
  username: z.string().min(1).optional(),
  password: z.string().min(1).optional(),
  tls: z.boolean().optional(),
};
export const redisUrlSchema = z
  .string()
  .regex(/^rediss?:\/\//, 'a Redis URL like redis://127.0.0.1:6379 (rediss:// for TLS)');

/** The config schema of a {@link RedisConnection}: exactly one of `url`, `sentinels` + `name`, `cluster`. */
export const redisConnectionSchema = z.union([
  z.strictObject({ url: redisUrlSchema }),
  z.strictObject({
    sentinels: z.array(node).min(1, 'list at least one Sentinel (three for a quorum that survives one loss)'),
    name: z.string().min(1),
    sentinelPassword: z.string().min(1).optional(),
    db: z.number().int().min(0).optional(),
    ...credentials,
  }),
  z.strictObject({
    cluster: z.array(node).min(1, 'list at least one cluster node'),
    ...credentials,
  }),
]);

/** A URL string is the same as `{ url }`. */
export function connectionOf(connection: RedisConnection | string): RedisConnection {
  return typeof connection === 'string' ? { url: connection } : connection;
}

export function isClusterConnection(
  connection: RedisConnection | string,
): connection is Extract<RedisConnection, { cluster: readonly RedisNode[] }> {
  return typeof connection !== 'string' && 'cluster' in connection;
}

/** An ioredis client (to share) rather than a description of where Redis is. */
export function isRedisClient(value: RedisClient | RedisConnection | string): value is RedisClient {
  return typeof value === 'object' && typeof (value as { evalsha?: unknown }).evalsha === 'function';
}

export function isCluster(client: RedisClient): client is Cluster {
  return (client as Cluster).isCluster === true;
}

/**
 * Opens a client for `connection` with `options` (timeouts, offline queue, retries) applied the
 * same way to every shape: on a Cluster they apply to each node's connection. A replica that
 * answers READONLY (the old primary after a failover), or that ends a blocking command with
 * UNBLOCKED (a primary turned replica), makes the client reconnect and look again.
 */
export function openRedis(connection: RedisConnection | string, options: RedisOptions = {}): RedisClient {
  const { Cluster, Redis } = ioredis();
  const spec = connectionOf(connection);
  const reconnectOnError =
    options.reconnectOnError ?? ((error: Error) => /^(READONLY|UNBLOCKED)\b/.test(error.message));
  if ('url' in spec) return keepConnecting(new Redis(spec.url, { ...options, reconnectOnError }));
  const auth = {
    ...(spec.username === undefined ? {} : { username: spec.username }),
    ...(spec.password === undefined ? {} : { password: spec.password }),
    ...(spec.tls ? { tls: {} } : {}),
  };
  if ('sentinels' in spec) {
    return keepConnecting(
      new Redis({
        ...options,
        ...auth,
        reconnectOnError,
        sentinels: spec.sentinels.map((n) => ({ host: n.host, port: n.port })),
        name: spec.name,
        role: 'master',
        // Subscribes to +switch-master, so a failover is followed at once rather than when the old
        // primary's connection finally breaks.
        failoverDetector: true,
        ...(spec.sentinelPassword === undefined ? {} : { sentinelPassword: spec.sentinelPassword }),
        ...(spec.tls ? { enableTLSForSentinelMode: true } : {}),
        ...(spec.db === undefined ? {} : { db: spec.db }),
      }),
    );
  }
  const { enableOfflineQueue, lazyConnect, retryStrategy, ...perNode } = options;
  return new Cluster(
    spec.cluster.map((n) => ({ host: n.host, port: n.port })),
    {
      ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
      ...(lazyConnect === undefined ? {} : { lazyConnect }),
      ...(retryStrategy === undefined ? {} : { clusterRetryStrategy: retryStrategy }),
      // A failover moves slots: look again soon instead of failing every command for long.
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      redisOptions: { ...perNode, ...auth, reconnectOnError },
    },
  );
}

/** How long a client that ioredis gave up on waits before it connects again. */
const RECONNECT_AFTER_END_MS = 200;

/**
 * ioredis gives up on a client for good (status `end`, every command then fails with "Connection
 * is closed.") when the connection is closed while the connector is still finding the server: on
 * Sentinel, the failover detector's +switch-master closes it while the client is still asking a
 * Sentinel where the primary is, which is exactly what happens during a failover; a READONLY
 * reconnect can race the same way. Only `quit()` and `disconnect()` by its owner end this client:
 * any other end connects it again, and so do its duplicates (BullMQ duplicates the connection it
 * is given for its blocking commands).
 */
function keepConnecting(client: Redis): Redis {
  let closedByOwner = false;
  const { quit, disconnect, duplicate, connect } = client;
  client.quit = function (this: Redis, ...args: Parameters<Redis['quit']>) {
    closedByOwner = true;
    return quit.apply(this, args);
  } as Redis['quit'];
  client.disconnect = function (this: Redis, reconnect = false) {
    if (!reconnect) closedByOwner = true;
    return disconnect.call(this, reconnect);
  };
  client.connect = function (this: Redis, ...args: Parameters<Redis['connect']>) {
    closedByOwner = false;
    return connect.apply(this, args);
  };
  client.duplicate = function (this: Redis, ...args: Parameters<Redis['duplicate']>) {
    return keepConnecting(duplicate.apply(this, args));
  };
  client.on('end', () => {
    if (closedByOwner) return;
    const timer = setTimeout(() => {
      if (closedByOwner || client.status !== 'end') return;
      connect.call(client).catch(() => {
        // Failed again: this ends the client again, and the 'end' handler tries once more.
      });
    }, RECONNECT_AFTER_END_MS);
    timer.unref();
  });
  return client;
}

/** Where the client goes, for logs: no password. */
export function describeRedis(connection: RedisConnection | string): string {
  const spec = connectionOf(connection);
  const nodes = (list: readonly RedisNode[]): string => list.map((n) => `${n.host}:${n.port}`).join(',');
  if ('sentinels' in spec) return `redis-sentinel://${nodes(spec.sentinels)}/${spec.name}`;
  if ('cluster' in spec) return `redis-cluster://${nodes(spec.cluster)}`;
  try {
    const parsed = new URL(spec.url);
    parsed.password = '';
    parsed.username = '';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return 'redis (unparsable URL)';
  }
}

/**
 * The base of every key a component writes: on a Cluster, `prefix` in a hash tag (`{tern}`) so
 * that all of its keys hash to one slot and its multi-key transactions and scripts are allowed;
 * elsewhere the prefix as it is (keys stay as they were before clusters were supported). A prefix
 * that already has a hash tag is kept.
 */
export function keyBase(prefix: string, cluster: boolean): string {
  if (!cluster || /\{[^}]+\}/.test(prefix)) return prefix;
  const trailing = /[:]+$/.exec(prefix)?.[0] ?? '';
  return `{${prefix.slice(0, prefix.length - trailing.length)}}${trailing}`;
}

/** The primary that holds `key` (the client itself unless it is a Cluster). */
export function primaryFor(client: RedisClient, key: string): Redis {
  if (!isCluster(client)) return client;
  const owner = client.slots[calculateSlot(key)]?.[0];
  const found = client.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner);
  if (found === undefined) throw new Error(`no Redis Cluster primary known for the slot of ${key}`);
  return found;
}

/** Every primary: the client itself, or each primary of a Cluster (scripts, CONFIG checks). */
export function primaries(client: RedisClient): Redis[] {
  return isCluster(client) ? client.nodes('master') : [client];
}

/**
 * WAIT on the primary that holds `key`: resolves with how many replicas confirmed every write made
 * so far on that connection, after at most `timeoutMs`.
 */
export async function waitForReplicas(
  client: RedisClient,
  key: string,
  replicas: number,
  timeoutMs: number,
): Promise<number> {
  return (await primaryFor(client, key).call('WAIT', replicas, timeoutMs)) as number;
}
