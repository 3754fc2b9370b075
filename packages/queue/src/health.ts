// Shared by every backend: whether the store takes writes, said once per change (a log line, a
// listener for metrics and readiness), and the probe that finds out when it can write again.
import type { Logger } from '@tern/plugin-api';
import type { QueueHealth } from './contract.js';

/** First wait before probing a store that could not write; doubles up to the monitor's ceiling. */
const FIRST_PROBE_MS = 100;

export interface HealthMonitorOptions {
  /** How the store is named in log lines: `embedded queue /var/lib/tern/queue.db`. */
  readonly name: string;
  readonly logger: Logger;
  /**
   * Tries a real write (and whatever else the backend must redo once it can write); throws while
   * the store still cannot write. Called only while the store is unwritable.
   */
  readonly probe: () => void | Promise<void>;
  /** Longest wait between two probes (ms). */
  readonly maxProbeIntervalMs: number;
  /** What an operator should do about an error, appended to the log line (`free space on …`). */
  readonly hint?: (error: unknown) => string | undefined;
}

/**
 * A store's writability. Any failed write turns it unwritable at once; only a successful probe
 * (a write, plus what the backend checks beyond it) turns it writable again, so a store that
 * takes small writes but refuses large ones does not flap between the two.
 */
export class HealthMonitor {
  readonly #options: HealthMonitorOptions;
  readonly #listeners = new Set<(health: QueueHealth) => void>();
  #state: QueueHealth = { writable: true, since: Date.now() };
  #timer: NodeJS.Timeout | undefined;
  #wait = FIRST_PROBE_MS;
  #probing = false;
  #closed = false;

  constructor(options: HealthMonitorOptions) {
    this.#options = options;
  }

  get writable(): boolean {
    return this.#state.writable;
  }

  get(): QueueHealth {
    return this.#state;
  }

  onChange(listener: (health: QueueHealth) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A write failed because of the store: unwritable from now (said once), probed until it can write. */
  failed(error: unknown): void {
    const at = Date.now();
    const lastError = describeError(error);
    if (!this.#state.writable) {
      this.#state = { ...this.#state, lastError, lastErrorAt: at };
      return;
    }
    this.#state = { writable: false, since: at, lastError, lastErrorAt: at };
    const hint = this.#options.hint?.(error);
    this.#options.logger.error(
      { err: error },
      `${this.#options.name} cannot write: ${lastError}; new mail is refused with 451 and ` +
        `deliveries wait until it can${hint ? ` (${hint})` : ''}`,
    );
    this.#emit();
    this.#wait = FIRST_PROBE_MS;
    this.#schedule();
  }

  /** Probes now instead of at the next back-off step (a sign of life: Redis reconnected). */
  probeSoon(): void {
    if (this.#state.writable || this.#closed) return;
    this.#wait = FIRST_PROBE_MS;
    this.#schedule();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#listeners.clear();
  }

  #schedule(): void {
    if (this.#closed || this.#probing) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#probe(), this.#wait);
    this.#timer.unref();
  }

  async #probe(): Promise<void> {
    if (this.#state.writable || this.#closed) return;
    this.#probing = true;
    try {
      await this.#options.probe();
    } catch (error) {
      this.#probing = false;
      this.failed(error);
      this.#wait = Math.min(this.#wait * 2, this.#options.maxProbeIntervalMs);
      this.#schedule();
      return;
    }
    this.#probing = false;
    if (this.#closed) return;
    const down = Date.now() - this.#state.since;
    this.#state = { ...this.#state, writable: true, since: Date.now() };
    this.#options.logger.warn(
      { unwritableMs: down },
      `${this.#options.name} can write again after ${Math.round(down / 1000)} s; mail is accepted and delivered`,
    );
    this.#emit();
  }

  #emit(): void {
    const state = this.#state;
    for (const listener of this.#listeners) {
      try {
        listener(state);
      } catch {
        // A listener's bug must not stop the others or the store.
      }
    }
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' && !error.message.includes(code)
      ? `${error.message} (${code})`
      : error.message;
  }
  return String(error);
}
