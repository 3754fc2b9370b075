// Shared parts of this package's tests: limiters on a private Redis, closed after each test.
import { randomUUID } from 'node:crypto';
import { type LogRecord, memoryLogger } from '@tern/plugin-api/testing';
import { Redis } from 'ioredis';
import { createLimiter, type FailMode, type Limiter, type LimiterOptions } from '../src/index.js';

export const toClose: { close(): Promise<unknown> }[] = [];

export async function closeAll(): Promise<void> {
  await Promise.all(toClose.splice(0).map((c) => c.close()));
}

/** A limiter with its own ioredis connection to `url` (one "node" of a cluster). */
export function redisLimiter(
  url: string,
  options: Partial<Omit<LimiterOptions, 'redis'>> & { records?: LogRecord[]; failMode?: FailMode } = {},
): Limiter {
  const { records = [], ...rest } = options;
  const limiter = createLimiter({ failMode: 'closed', logger: memoryLogger(records), ...rest, redis: url });
  toClose.push(limiter);
  return limiter;
}

/** A connection for looking at Redis directly (keys, TTLs, command statistics). */
export function adminConnection(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  toClose.push({ close: () => redis.quit().catch(() => redis.disconnect()) });
  return redis;
}

/** A key prefix of its own per test, so tests never see each other's counters. */
export function uniquePrefix(): string {
  return `t:${randomUUID().slice(0, 8)}:`;
}

/** How many times Redis ran `command` since the last CONFIG RESETSTAT. */
export async function commandCalls(admin: Redis, command: string): Promise<number> {
  const stats = await admin.info('commandstats');
  const match = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(stats);
  return match ? Number(match[1]) : 0;
}
