import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { redisAvailable, startRedis, type TestRedis } from '../src/index.js';

const started: TestRedis[] = [];
const clients: Redis[] = [];

async function start(opts?: Parameters<typeof startRedis>[0]): Promise<TestRedis> {
  const redis = await startRedis(opts);
  started.push(redis);
  return redis;
}

function client(url: string): Redis {
  // No retries: a test should see a dead server as an error, not as a hang.
  const redis = new Redis(url, { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
  redis.on('error', () => {});
  clients.push(redis);
  return redis;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

afterEach(async () => {
  for (const redis of clients.splice(0)) redis.disconnect();
  await Promise.all(started.splice(0).map((redis) => redis.stop()));
});

describe('startRedis', () => {
  it('finds the redis-server binary', () => {
    expect(redisAvailable()).toBe(true);
  });

  it('starts a private server that answers PING, SET and GET', async () => {
    const redis = await start();
    expect(redis.host).toBe('127.0.0.1');
    expect(redis.port).not.toBe(6379);
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    const db = client(redis.url);
    expect(await db.ping()).toBe('PONG');
    await db.set('greeting', 'hello');
    expect(await db.get('greeting')).toBe('hello');
    expect(await db.config('GET', 'dir')).toEqual(['dir', redis.dir]);
    expect(await db.config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
    expect(await db.config('GET', 'save')).toEqual(['save', '']);
  });

  it('keeps data across kill() and restart() with appendonly, on the same port and dir', async () => {
    const redis = await start({ appendonly: true, appendfsync: 'always' });
    const { port, dir } = redis;
    const before = client(redis.url);
    await before.set('queued', 'message-1');
    before.disconnect();

    await redis.kill();
    expect(await accepts(port)).toBe(false);
    expect(existsSync(dir)).toBe(true);

    await redis.restart();
    expect(redis.port).toBe(port);
    expect(redis.dir).toBe(dir);
    const after = client(redis.url);
    expect(await after.get('queued')).toBe('message-1');
  });

  it('loses data on restart() without appendonly', async () => {
    const redis = await start();
    const before = client(redis.url);
    await before.set('volatile', 'x');
    before.disconnect();
    await redis.kill();
    await redis.restart();
    expect(await client(redis.url).get('volatile')).toBeNull();
  });

  it('applies password and memory settings', async () => {
    const redis = await start({ password: 's3cret@:/ x', maxmemory: '10mb', maxmemoryPolicy: 'noeviction' });
    expect(redis.url).toBe(`redis://:${encodeURIComponent('s3cret@:/ x')}@127.0.0.1:${redis.port}`);
    const db = client(redis.url);
    expect(await db.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
    expect(await db.config('GET', 'maxmemory')).toEqual(['maxmemory', String(10 * 1024 * 1024)]);
    const anonymous = client(`redis://127.0.0.1:${redis.port}`);
    await expect(anonymous.get('x')).rejects.toThrow(/NOAUTH/);
  });

  it('stop() shuts the server down and removes its dir', async () => {
    const redis = await startRedis();
    expect(existsSync(redis.dir)).toBe(true);
    await redis.stop();
    expect(existsSync(redis.dir)).toBe(false);
    expect(await accepts(redis.port)).toBe(false);
  });

  it('runs two servers side by side without sharing data', async () => {
    const [a, b] = await Promise.all([start(), start()]);
    expect(a?.port).not.toBe(b?.port);
    await client(a!.url).set('k', 'a');
    expect(await client(b!.url).get('k')).toBeNull();
  });

  it('names the fix when redis-server is missing', async () => {
    const saved = process.env.TERN_REDIS_SERVER;
    process.env.TERN_REDIS_SERVER = '/nonexistent/redis-server';
    try {
      expect(redisAvailable()).toBe(false);
      await expect(startRedis()).rejects.toThrow(
        "redis-server not found: install Debian's redis-server (apt-get install redis-server)",
      );
    } finally {
      if (saved === undefined) delete process.env.TERN_REDIS_SERVER;
      else process.env.TERN_REDIS_SERVER = saved;
    }
  });
});
