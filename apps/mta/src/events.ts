// The MTA's one stream of platform events (queued, delivered, deferred, bounced, held,
// suppressed, complained). Producers emit; consumers (webhooks) subscribe. A listener that throws
// is logged and never stops the others or the producer.
import type { Logger, PlatformEvent } from '@tern/plugin-api';

export type PlatformEventListener = (event: PlatformEvent) => void;

export class PlatformEvents {
  readonly #listeners = new Set<PlatformEventListener>();
  readonly #log: Logger | undefined;

  constructor(log?: Logger) {
    this.#log = log;
  }

  emit(event: PlatformEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (error) {
        this.#log?.error({ type: event.type, err: String(error) }, 'platform event listener failed');
      }
    }
  }

  /** Whether anything listens: producers skip building events nobody hears. */
  get listening(): boolean {
    return this.#listeners.size > 0;
  }

  /** Subscribes; the returned function unsubscribes. */
  on(listener: PlatformEventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
