// The backends' drivers are optional peer dependencies, loaded the first time a backend needs
// them: importing @tern/queue loads neither, so a Redis user never needs better-sqlite3 (a native
// addon to compile) and an embedded user never loads BullMQ. See README "Installing".
import { createRequire } from 'node:module';
import { TernError } from '@tern/plugin-api';
import type BetterSqlite3 from 'better-sqlite3';
import type * as BullMQ from 'bullmq';
import type * as IORedis from 'ioredis';

interface Drivers {
  'better-sqlite3': typeof BetterSqlite3;
  bullmq: typeof BullMQ;
  ioredis: typeof IORedis;
}

type DriverName = keyof Drivers;

/** Which backend needs which driver, and the version range this package is tested with. */
const NEEDED_BY: Record<DriverName, { backend: string; range: string }> = {
  'better-sqlite3': { backend: "the embedded queue (queue: { type: 'embedded' })", range: '^12.6.2' },
  bullmq: { backend: "the Redis queue (queue: { type: 'redis' })", range: '^5.81.5' },
  ioredis: { backend: "the Redis queue (queue: { type: 'redis' })", range: '^5.11.1' },
};

/** A backend was asked for and its driver is not installed; the message says what to install. */
export class QueueDriverMissingError extends TernError {
  constructor(driver: DriverName, cause: unknown) {
    const { backend, range } = NEEDED_BY[driver];
    super(
      'TERN_ERR_QUEUE_DRIVER_MISSING',
      `${backend} needs the package ${driver}, which is not installed: run \`npm install ${driver}@${range}\` in your project`,
      { cause },
    );
  }
}

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
