// Where intake hands a message over: a sink that makes it durable (the queue, passed in by
// apps/mta; core does not depend on @tern/queue) and the in-process one tests use.
import { type AcceptedMessage, memorySource, readAll } from '@tern/plugin-api/host';

/** What intake hands over after DATA (plugin-api's AcceptedMessage; the queue takes the same). */
export type IncomingMessage = AcceptedMessage;

/** The client gets 250 only after `enqueue` resolves with the queue id; a rejection or a timeout gives 451 4.3.0. */
export interface MessageSink {
  enqueue(message: IncomingMessage): Promise<string>;
}

export type InMemoryQueueBehaviour = 'accept' | 'fail' | 'hang';

export interface InMemoryQueueOptions {
  /** accept: record and resolve; fail: reject; hang: hold until `release()` (default accept). */
  readonly behaviour?: InMemoryQueueBehaviour;
}

export interface InMemoryQueuedMessage {
  readonly queueId: string;
  readonly message: IncomingMessage;
}

/**
 * An in-process sink for tests and the test kit. It is NOT durable: a 250 from a listener using it
 * promises nothing. It records every message it accepts.
 */
export class InMemoryQueue implements MessageSink {
  readonly messages: InMemoryQueuedMessage[] = [];
  behaviour: InMemoryQueueBehaviour;
  /** Calls to enqueue, whatever their outcome. */
  attempts = 0;
  #next = 1;
  #held: (() => void)[] = [];
  #waiters: (() => void)[] = [];

  constructor(options: InMemoryQueueOptions = {}) {
    this.behaviour = options.behaviour ?? 'accept';
  }

  async enqueue(message: IncomingMessage): Promise<string> {
    this.attempts++;
    if (this.behaviour === 'fail') throw new Error('InMemoryQueue: told to fail');
    // The listener frees its spool once this settles: keep a copy that outlives it.
    const kept: IncomingMessage =
      message.content.chunks() === undefined
        ? { ...message, content: memorySource([await readAll(message.content)]) }
        : message;
    const record = (): string => {
      const queueId = `mem${String(this.#next++).padStart(6, '0')}`;
      this.messages.push({ queueId, message: kept });
      for (const wake of this.#waiters.splice(0)) wake();
      return queueId;
    };
    if (this.behaviour === 'hang') return new Promise((resolve) => this.#held.push(() => resolve(record())));
    return record();
  }

  /** Lets every held (hanging) enqueue complete; returns how many there were. */
  release(): number {
    const held = this.#held.splice(0);
    for (const complete of held) complete();
    return held.length;
  }

  /** The whole message as one buffer (a copy: for assertions on small messages). */
  raw(index = 0): Buffer {
    const entry = this.messages[index];
    if (!entry) throw new Error(`InMemoryQueue: no message at index ${index} (have ${this.messages.length})`);
    return Buffer.concat(entry.message.content.chunks() ?? []);
  }

  /** Resolves once `count` messages are recorded; rejects after `timeoutMs`. */
  async waitFor(count: number, timeoutMs = 5000): Promise<InMemoryQueuedMessage[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`InMemoryQueue: ${this.messages.length} of ${count} messages after ${timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.messages.slice(0, count);
  }
}
