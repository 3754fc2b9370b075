// What every test kit driver shares: the plugins under test in one host (the runner Tern uses), the
// log records they wrote, and their lifecycle hooks.
import { randomBytes } from 'node:crypto';
import type { HookFailure } from '../errors.js';
import type { Plugin } from '../hooks.js';
import { type LogRecord, memoryLogger } from '../logger.js';
import { PluginHost } from '../runner.js';

export interface TestHostOptions {
  /** Per-hook timeout for plugins that set none (default 30 000 ms, as in Tern). */
  readonly defaultTimeoutMs?: number;
}

export class PluginTestHost {
  /** The host running the plugins: the same runner as in Tern (ordering, timeouts, checks). */
  readonly host: PluginHost;
  /** Everything the plugins logged through `ctx.log`, hook failures included. */
  readonly logs: LogRecord[] = [];

  constructor(plugins: Plugin | readonly Plugin[], options: TestHostOptions = {}) {
    this.host = new PluginHost(Array.isArray(plugins) ? plugins : [plugins as Plugin], {
      logger: memoryLogger(this.logs),
      ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
    });
  }

  /** Runs every plugin's `init`, as Tern does at start-up; returns the failures (Tern would not start). */
  init(): Promise<HookFailure[]> {
    return this.host.runLifecycle('init');
  }

  /** Runs every plugin's `shutdown`, as Tern does when it stops; returns the failures (logged). */
  shutdown(): Promise<HookFailure[]> {
    return this.host.runLifecycle('shutdown');
  }

  /** Aborts running hooks (their `ctx.signal` fires) as a shutting-down process does. */
  abort(reason?: unknown): void {
    this.host.abort(reason);
  }

  /** The error records of hook failures: plugin, hook and what went wrong. */
  failures(): LogRecord[] {
    return this.logs.filter((r) => r.level === 'error' && r.fields.hook !== undefined);
  }
}

/** A queue id as Tern's queue makes them: base-36 milliseconds then 48 random bits, upper case. */
export function testQueueId(now: number = Date.now()): string {
  return `${now.toString(36).toUpperCase().padStart(9, '0')}${randomBytes(6).toString('hex').toUpperCase()}`;
}
