// The embedded store's errors, apart from the store itself: they are public, and the store's own
// declarations name better-sqlite3's types, which a Redis user does not have installed.
import { TernError } from '@tern/plugin-api';

/** Who holds a store, as written next to it for the error a second process gets. */
export interface StoreOwner {
  readonly pid: number;
  readonly host: string;
  readonly startedAt: string;
  readonly command: string;
}

/** A second process tried to open a store that a running process holds. */
export class EmbeddedStoreLockedError extends TernError {
  readonly path: string;
  readonly owner: StoreOwner | undefined;
  constructor(path: string, owner: StoreOwner | undefined, cause: unknown) {
    const who = owner
      ? `process ${owner.pid} on ${owner.host} (${owner.command}, since ${owner.startedAt})`
      : 'another process';
    super(
      'TERN_ERR_QUEUE_STORE_LOCKED',
      `embedded queue ${path} is in use by ${who}: only one process may use an embedded queue; ` +
        'stop that process, or give this one its own queue path, or use the Redis backend to share a queue',
      { cause },
    );
    this.path = path;
    this.owner = owner;
  }
}

/** The store file exists but is not one this version can use. */
export class EmbeddedStoreSchemaError extends TernError {
  constructor(path: string, problem: string) {
    super('TERN_ERR_QUEUE_STORE_SCHEMA', `embedded queue ${path}: ${problem}`);
  }
}

/** SQLite could not open or set up the file (not a database, unreadable, disk full...). */
export class EmbeddedStoreOpenError extends TernError {
  constructor(path: string, cause: unknown) {
    super('TERN_ERR_QUEUE_STORE_OPEN', `embedded queue ${path}: ${(cause as Error)?.message ?? cause}`, {
      cause,
    });
  }
}
