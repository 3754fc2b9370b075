// Reading a stored body back out of Redis slice by slice (the worker's side of a delivery).
import type { RedisClient } from '@tern/redis';
import { startRedis, type TestRedis } from '@tern/testkit';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bodyStream } from '../src/redis/body-stream.js';

let redis: TestRedis;
let client: Redis;

beforeAll(async () => {
  redis = await startRedis();
  client = new Redis(redis.url);
});

afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});

async function read(key: string, sliceBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of bodyStream(client as unknown as RedisClient, key, sliceBytes)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('redis body stream', () => {
  it('reads a body whatever its size against the slice: shorter, a multiple, longer', async () => {
    for (const body of ['abc', 'abcdefgh', 'abcdefghij']) {
      await client.set('body', Buffer.from(body));
      expect((await read('body', 4)).toString()).toBe(body);
    }
  });

  it('reads an empty body as empty, and fails for a body that is gone', async () => {
    await client.set('empty', '');
    expect((await read('empty', 4)).length).toBe(0);
    await expect(read('missing', 4)).rejects.toThrow(/is gone/);
  });
});
