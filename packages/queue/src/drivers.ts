// The backends' drivers are optional peer dependencies, loaded the first time a backend needs
// them: importing @tern/queue loads neither, so a Redis user never needs better-sqlite3 (a native
// addon to compile) and an embedded user never loads BullMQ. See README "Installing".
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import type * as BullMQ from 'bullmq';
import type * as IORedis from 'ioredis';
import { type QueueDriver, QueueDriverMissingError } from './errors.js';

interface Drivers extends Record<QueueDriver, unknown> {
  'better-sqlite3': typeof BetterSqlite3;
  bullmq: typeof BullMQ;
  ioredis: typeof IORedis;
}

type DriverName = keyof Drivers;

// Resolved from this file, so the driver is found where npm put this package's peers.
const require = createRequire(import.meta.url);
const loaded: Partial<Drivers> = {};

/** The driver module, loaded on first use; throws QueueDriverMissingError when it is not installed. */
export function driver<N extends DriverName>(name: N): Drivers[N] {
  const cached = loaded[name];
  if (cached) return cached;
  let module: Drivers[N];
  try {
    module = require(name) as Drivers[N];
  } catch (error) {
    const missing =
      (error as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' &&
      (error as Error).message.includes(`'${name}'`);
    if (missing) throw new QueueDriverMissingError(name, error);
    throw error;
  }
  loaded[name] = module;
  return module;
}
