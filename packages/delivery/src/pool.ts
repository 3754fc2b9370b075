// Idle sessions kept per next-hop address so several messages share one connection (fewer
// handshakes, and servers such as smtp-server greet each new connection only after a delay).
import type { SmtpSession } from './session.js';

export interface PoolOptions {
  /** Close a session left unused this long (default 5000 ms). */
  readonly idleMs: number;
  /** Transactions per connection before it is closed (default 100). */
  readonly maxMessagesPerConnection: number;
  /** Idle sessions kept per address (default 20, set by the deliverer). */
  readonly maxIdlePerKey: number;
}

interface Idle {
  readonly session: SmtpSession;
  readonly timer: NodeJS.Timeout;
}

export class ConnectionPool {
  readonly #options: PoolOptions;
  readonly #idle = new Map<string, Idle[]>();
  #closing = false;

  constructor(options: PoolOptions) {
    this.#options = options;
  }

  /** An idle session for `key`, if any (the caller checks it is still alive with RSET). */
  take(key: string): SmtpSession | undefined {
    const list = this.#idle.get(key);
    const entry = list?.pop();
    if (list && list.length === 0) this.#idle.delete(key);
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    return entry.session;
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
      list.length >= this.#options.maxIdlePerKey
    ) {
      await session.quit();
      return;
    }
    const timer = setTimeout(() => {
      const current = this.#idle.get(key);
      if (!current) return;
      const index = current.findIndex((e) => e.session === session);
      if (index !== -1) current.splice(index, 1);
      if (current.length === 0) this.#idle.delete(key);
      void session.quit();
    }, this.#options.idleMs);
    timer.unref();
    list.push({ session, timer });
    this.#idle.set(key, list);
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
    for (const entry of all) clearTimeout(entry.timer);
    await Promise.all(all.map((entry) => entry.session.quit()));
  }
}
