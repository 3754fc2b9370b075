// Idle sessions kept per next-hop address so several messages share one connection (fewer
// handshakes, and servers such as smtp-server greet each new connection only after a delay).
import type { SmtpSession } from './session.js';

export interface PoolOptions {
  /** Close a session left unused this long (default 5000 ms). */
  readonly idleMs: number;
  /**
   * Transactions per connection before it is closed (default: no limit, as Postfix's
   * smtp_connection_reuse_count_limit; a count cap only adds new connections under load).
   */
  readonly maxMessagesPerConnection: number;
  /**
   * A connection is not reused once it is this old (default 300000 ms: Postfix's
   * smtp_connection_reuse_time_limit): a busy destination's connections still come back to DNS
   * and spread over its addresses again, however many messages they carried.
   */
  readonly maxConnectionAgeMs: number;
  /** Idle sessions kept per address (default 20, set by the deliverer). */
  readonly maxIdlePerKey: number;
}

interface Idle {
  readonly session: SmtpSession;
  /** When it was handed back (Date.now()). */
  readonly since: number;
}

export class ConnectionPool {
  readonly #options: PoolOptions;
  readonly #idle = new Map<string, Idle[]>();
  /**
   * One timer for the whole pool, due when the oldest idle session runs out: a timer per hand-back
   * (one per message on a busy connection) cost a timer object and two timer-list updates each.
   */
  #sweeper: NodeJS.Timeout | undefined;
  #closing = false;

  constructor(options: PoolOptions) {
    this.#options = options;
  }

  /** An idle session for `key`, if any (the caller checks it is still alive with RSET). */
  take(key: string): SmtpSession | undefined {
    const list = this.#idle.get(key);
    // The most recently used first: the oldest are left to run out when fewer are needed.
    const entry = list?.pop();
    if (list && list.length === 0) this.#idle.delete(key);
    return entry?.session;
  }

  /**
   * Hands a session back after a transaction: kept for reuse, or closed when it cannot serve again. Resolves
   * once a closing session is closed, so a throttle slot is not given back while its connection lingers.
   */
  async give(key: string, session: SmtpSession): Promise<void> {
    const list = this.#idle.get(key) ?? [];
    if (
      this.#closing ||
      !session.usable ||
      session.transactions >= this.#options.maxMessagesPerConnection ||
      Date.now() - session.openedAt >= this.#options.maxConnectionAgeMs ||
      list.length >= this.#options.maxIdlePerKey
    ) {
      await session.quit();
      return;
    }
    list.push({ session, since: Date.now() });
    this.#idle.set(key, list);
    this.#sweeper ??= this.#sweepIn(this.#options.idleMs);
  }

  #sweepIn(ms: number): NodeJS.Timeout {
    const timer = setTimeout(() => this.#sweep(), Math.max(1, ms));
    timer.unref();
    return timer;
  }

  /** Quits the sessions idle for idleMs or more, and sets the timer for the next to run out. */
  #sweep(): void {
    this.#sweeper = undefined;
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [key, list] of this.#idle) {
      const kept = list.filter((entry) => {
        if (now - entry.since < this.#options.idleMs) return true;
        void entry.session.quit();
        return false;
      });
      if (kept.length === 0) this.#idle.delete(key);
      else this.#idle.set(key, kept);
      for (const entry of kept) next = Math.min(next, entry.since + this.#options.idleMs);
    }
    if (next !== Number.POSITIVE_INFINITY) this.#sweeper = this.#sweepIn(next - now);
  }

  /** Idle sessions right now (for tests and metrics). */
  get idleCount(): number {
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  /** Quits every idle session; sessions handed back later are closed at once. */
  async close(): Promise<void> {
    this.#closing = true;
    const all = [...this.#idle.values()].flat();
    this.#idle.clear();
    clearTimeout(this.#sweeper);
    this.#sweeper = undefined;
    await Promise.all(all.map((entry) => entry.session.quit()));
  }
}
