import { describe, expect, it } from 'vitest';
import { describeRedis, isClusterConnection, keyBase, redisConnectionSchema } from '../src/index.js';

describe('keyBase', () => {
  it('puts the prefix in a hash tag on a Cluster only, keeping trailing colons outside', () => {
    expect(keyBase('tern', true)).toBe('{tern}');
    expect(keyBase('tern:rl:', true)).toBe('{tern:rl}:');
    expect(keyBase('tern', false)).toBe('tern');
    expect(keyBase('tern:rl:', false)).toBe('tern:rl:');
  });
  it('keeps a prefix that already has a hash tag', () => {
    expect(keyBase('{tern}:rl:', true)).toBe('{tern}:rl:');
    expect(keyBase('app:{q}', true)).toBe('app:{q}');
  });
});

describe('describeRedis', () => {
  it('never shows a password', () => {
    expect(describeRedis('redis://user:secret@10.0.0.1:6380/2')).toBe('redis://10.0.0.1:6380/2');
    expect(
      describeRedis({
        sentinels: [
          { host: 'a', port: 1 },
          { host: 'b', port: 2 },
        ],
        name: 'm',
        password: 'x',
      }),
    ).toBe('redis-sentinel://a:1,b:2/m');
    expect(describeRedis({ cluster: [{ host: 'c', port: 7000 }], password: 'x' })).toBe(
      'redis-cluster://c:7000',
    );
  });
});

describe('redisConnectionSchema', () => {
  it('takes exactly one shape', () => {
    expect(redisConnectionSchema.safeParse({ url: 'redis://a' }).success).toBe(true);
    expect(
      redisConnectionSchema.safeParse({ sentinels: [{ host: 'a', port: 26379 }], name: 'm' }).success,
    ).toBe(true);
    expect(redisConnectionSchema.safeParse({ cluster: [{ host: 'a', port: 7000 }] }).success).toBe(true);
    // Sentinels without the master name, a bad URL, two shapes at once, an empty list.
    expect(redisConnectionSchema.safeParse({ sentinels: [{ host: 'a', port: 26379 }] }).success).toBe(false);
    expect(redisConnectionSchema.safeParse({ url: 'localhost:6379' }).success).toBe(false);
    expect(
      redisConnectionSchema.safeParse({ url: 'redis://a', cluster: [{ host: 'a', port: 1 }] }).success,
    ).toBe(false);
    expect(redisConnectionSchema.safeParse({ cluster: [] }).success).toBe(false);
  });
  it('knows a Cluster description', () => {
    expect(isClusterConnection({ cluster: [{ host: 'a', port: 1 }] })).toBe(true);
    expect(isClusterConnection('redis://a')).toBe(false);
  });
});
