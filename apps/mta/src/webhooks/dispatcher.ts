// Delivery webhooks: platform events that match an endpoint's subscription are written to the
// endpoint's outbox in the queue's store, then posted from there in the order written, in batches
// (`{"events":[...]}`), signed (X-Tern-Signature). A 2xx answer removes the batch; anything else
// (another status, a timeout, a network error) keeps it, and the endpoint waits out an exponential
// back-off with jitter before the next post. Events older than the endpoint's maxAge are dropped
// and counted. On Redis every node runs a dispatcher; a lease per endpoint lets one post at a time.
// A message's `queued` and `held` events are written by its enqueue, in the same atomic write as
// the message (see `outboxWrites`): no node can deliver it and write an outcome before them.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger, PlatformEvent, PlatformEventType } from '@tern/plugin-api';
import { PLATFORM_EVENT_TYPES } from '@tern/plugin-api';
import type { OutboxEvent, OutboxWrite, WebhookEndpointState, WebhookOutbox } from '@tern/queue';
import { Counter, Gauge, type Registry } from 'prom-client';
import { type ResolvedConfig, webhookSecret } from '../config.js';
import { WEBHOOK_DEFAULTS } from './schema.js';
import { SIGNATURE_HEADER, signWebhook } from './signature.js';

/** One endpoint as the dispatcher uses it (the config's, with defaults and its secret read). */
export interface WebhookEndpoint {
  readonly name: string;
  readonly url: string;
  readonly events: ReadonlySet<PlatformEventType>;
  readonly senderDomains?: ReadonlySet<string>;
  readonly tags?: ReadonlySet<string>;
  readonly apiKeys?: ReadonlySet<string>;
  readonly secret: string;
  readonly timeoutMs: number;
  readonly batchSize: number;
  readonly maxPending: number;
  readonly initialIntervalMs: number;
  readonly maxIntervalMs: number;
  readonly maxAgeMs: number;
}

/** The config's endpoints, resolved (secret files read: loadConfig has checked them). */
export function webhookEndpoints(config: ResolvedConfig): WebhookEndpoint[] {
  const d = WEBHOOK_DEFAULTS;
  const lower = (list: readonly string[] | undefined): ReadonlySet<string> | undefined =>
    list === undefined ? undefined : new Set(list.map((s) => s.toLowerCase()));
  return (config.webhooks?.endpoints ?? []).map((e, i) => {
    const senderDomains = lower(e.filters?.senderDomains);
    const apiKeys = e.filters?.apiKeys;
    const tags = e.filters?.tags;
    return {
      name: e.name,
      url: e.url,
      events: new Set(e.events ?? PLATFORM_EVENT_TYPES),
      ...(senderDomains ? { senderDomains } : {}),
      ...(tags ? { tags: new Set(tags) } : {}),
      ...(apiKeys ? { apiKeys: new Set(apiKeys) } : {}),
      secret: webhookSecret(config, i),
      timeoutMs: e.timeout ?? d.timeoutMs,
      batchSize: e.batchSize ?? d.batchSize,
      maxPending: e.maxPending ?? d.maxPending,
      initialIntervalMs: e.retry?.initialInterval ?? d.initialIntervalMs,
      maxIntervalMs: e.retry?.maxInterval ?? d.maxIntervalMs,
      maxAgeMs: e.retry?.maxAge ?? d.maxAgeMs,
    };
  });
}

/** Whether `event` is one `endpoint` subscribed to: its type, and every filter the endpoint has. */
export function subscribes(endpoint: WebhookEndpoint, event: PlatformEvent): boolean {
  if (!endpoint.events.has(event.type)) return false;
  if (endpoint.senderDomains && !endpoint.senderDomains.has(event.senderDomain ?? '')) return false;
  if (endpoint.apiKeys && !endpoint.apiKeys.has(event.apiKey ?? '')) return false;
  const tags = endpoint.tags;
  if (tags && !(event.tags ?? []).some((t) => tags.has(t))) return false;
  return true;
}

/** An event as posted: an id for receivers to drop duplicates (delivery is at-least-once), ISO time. */
export function wireEvent(event: PlatformEvent, id: string = randomUUID()): string {
  return JSON.stringify({ id, ...event, at: new Date(event.at).toISOString() });
}

/** The wait before post number `attempts + 1` after `attempts` failures in a row: doubling, ±20 %. */
export function backoffMs(
  endpoint: WebhookEndpoint,
  attempts: number,
  random: number = Math.random(),
): number {
  const base = Math.min(endpoint.maxIntervalMs, endpoint.initialIntervalMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(base * (0.8 + 0.4 * random));
}

/** The URL as shown to operators: no user, password or query (they may hold tokens). */
export function shownUrl(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

export type PostOutcome = 'success' | 'http_error' | 'timeout' | 'error';
export interface PostResult {
  readonly outcome: PostOutcome;
  readonly status?: number;
  /** Failures: what happened, for the endpoint's last error. */
  readonly error?: string;
  readonly ms: number;
}

export interface EndpointStatus extends WebhookEndpointState {
  readonly name: string;
  readonly url: string;
  readonly events: readonly PlatformEventType[];
}

/** Bytes of a response body read (for the error shown); the rest is never read. */
const RESPONSE_READ_BYTES = 512;
/** Events waiting in memory for the store, over every endpoint; past this they are dropped and counted. */
const MAX_BUFFERED = 10_000;
/** Event types a message's enqueue writes to the outbox itself (see `outboxWrites`). */
const WRITTEN_WITH_MESSAGE: readonly PlatformEventType[] = ['queued', 'held'];

/** Prometheus series, labelled by endpoint name (from the config) and a fixed outcome. */
class WebhookMetrics {
  readonly events: Counter<'endpoint' | 'outcome'>;
  readonly posts: Counter<'endpoint' | 'outcome'>;

  constructor(registry: Registry, pending: () => Promise<Record<string, number>>) {
    const registers = [registry];
    this.events = new Counter({
      name: 'tern_webhook_events_total',
      help: 'Webhook events by endpoint and outcome: posted (a 2xx answer), expired (kept maxAge, dropped), dropped (the outbox was full)',
      labelNames: ['endpoint', 'outcome'],
      registers,
    });
    this.posts = new Counter({
      name: 'tern_webhook_posts_total',
      help: 'Webhook posts by endpoint and outcome: success, http_error, timeout, error',
      labelNames: ['endpoint', 'outcome'],
      registers,
    });
    new Gauge({
      name: 'tern_webhook_pending',
      help: 'Webhook events waiting in the outbox, by endpoint',
      labelNames: ['endpoint'],
      registers,
      async collect() {
        this.reset();
        for (const [endpoint, n] of Object.entries(await pending())) this.set({ endpoint }, n);
      },
    });
  }
}

export interface WebhookDispatcherOptions {
  readonly endpoints: readonly WebhookEndpoint[];
  readonly outbox: WebhookOutbox;
  readonly logger: Logger;
  /** Registers the webhook metrics here. */
  readonly registry?: Registry;
  readonly pollIntervalMs?: number;
}

export class UnknownWebhookEndpoint extends Error {}

export class WebhookDispatcher {
  readonly #endpoints: ReadonlyMap<string, WebhookEndpoint>;
  readonly #outbox: WebhookOutbox;
  readonly #log: Logger;
  readonly #metrics: WebhookMetrics | undefined;
  readonly #pollMs: number;
  /** This process, as a lease owner. */
  readonly #owner = `${process.pid}:${randomBytes(4).toString('hex')}`;
  /** Events accepted but not yet in the store, per endpoint. */
  readonly #buffered = new Map<string, string[]>();
  #bufferedCount = 0;
  #flushing: Promise<void> | undefined;
  readonly #runs = new Map<string, Promise<void>>();
  /** Endpoints to run again once their current run ends (events arrived meanwhile). */
  readonly #again = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  /** No more posts (stopping); events are still written to the outbox. */
  #stopped = false;
  /** Aborts posts in flight when stopping: their batch stays in the outbox for the next start. */
  readonly #stopping = new AbortController();
  #closed = false;
  /** Events their message's enqueue wrote to the outbox: `accept` leaves them. */
  readonly #written = new WeakSet<PlatformEvent>();
  /**
   * Some endpoint takes a type of event that is written with the message (queued, held): only
   * then does intake build them before the enqueue.
   */
  readonly writesWithMessage: boolean;

  constructor(options: WebhookDispatcherOptions) {
    this.#endpoints = new Map(options.endpoints.map((e) => [e.name, e]));
    this.writesWithMessage = options.endpoints.some((e) => WRITTEN_WITH_MESSAGE.some((t) => e.events.has(t)));
    this.#outbox = options.outbox;
    this.#log = options.logger.child({ component: 'webhooks' });
    this.#pollMs = options.pollIntervalMs ?? WEBHOOK_DEFAULTS.pollIntervalMs;
    this.#metrics = options.registry
      ? new WebhookMetrics(options.registry, async () => {
          const pending: Record<string, number> = {};
          for (const name of this.#endpoints.keys()) pending[name] = (await this.#outbox.state(name)).pending;
          return pending;
        })
      : undefined;
  }

  /** For PlatformEvents.on: buffers the event for every endpoint that subscribes to it. */
  readonly accept = (event: PlatformEvent): void => {
    if (this.#closed || this.#written.has(event)) return;
    let payload: string | undefined;
    for (const endpoint of this.#endpoints.values()) {
      if (!subscribes(endpoint, event)) continue;
      if (this.#bufferedCount >= MAX_BUFFERED) {
        this.#metrics?.events.inc({ endpoint: endpoint.name, outcome: 'dropped' });
        this.#log.warn(
          { endpoint: endpoint.name, type: event.type, queueId: event.queueId },
          'webhook event dropped: too many waiting to be written to the outbox',
        );
        continue;
      }
      payload ??= wireEvent(event);
      const list = this.#buffered.get(endpoint.name) ?? [];
      list.push(payload);
      this.#buffered.set(endpoint.name, list);
      this.#bufferedCount++;
    }
    if (payload !== undefined) setImmediate(() => void this.#flush());
  };

  /**
   * The outbox writes of a message's `queued` and `held` events, built before its enqueue, which
   * makes them durable with the message: one write per endpoint that subscribes to any of them,
   * capped at its maxPending. Nothing is left of them when the enqueue fails.
   */
  outboxWrites(events: readonly PlatformEvent[]): OutboxWrite[] {
    const payloads = new Map<PlatformEvent, string>();
    const writes: OutboxWrite[] = [];
    for (const endpoint of this.#endpoints.values()) {
      const list: string[] = [];
      for (const event of events) {
        if (!subscribes(endpoint, event)) continue;
        const payload = payloads.get(event) ?? wireEvent(event);
        payloads.set(event, payload);
        list.push(payload);
      }
      if (list.length > 0) writes.push({ endpoint: endpoint.name, payloads: list, cap: endpoint.maxPending });
    }
    return writes;
  }

  /**
   * The enqueue that took `writes` (made from `events`) resolved: the events are in the outbox, so
   * `accept` leaves them; what a full outbox refused is counted, and the endpoints run. A backend
   * that did not write them (no `kept`) leaves them to `accept`, as any other event.
   */
  written(events: readonly PlatformEvent[], writes: readonly OutboxWrite[]): void {
    if (writes.some((w) => w.kept === undefined)) return;
    for (const event of events) this.#written.add(event);
    for (const write of writes) {
      this.#dropped(write.endpoint, write.payloads.length - (write.kept ?? 0));
      this.#kick(write.endpoint);
    }
  }

  /** Starts looking for due events every poll interval. */
  start(): void {
    if (this.#endpoints.size === 0) return;
    this.#timer = setInterval(() => {
      void this.#flush().then(() => {
        for (const name of this.#endpoints.keys()) this.#kick(name);
      });
    }, this.#pollMs);
    this.#timer.unref();
    for (const name of this.#endpoints.keys()) this.#kick(name);
  }

  /**
   * Stops posting and waits for posts in flight; events are still taken and written (the last
   * delivery attempts of a stopping worker emit some). Call before the queue closes.
   */
  async stopPosting(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#stopping.abort();
    await Promise.allSettled([...this.#runs.values()]);
  }

  /** Stops posting, writes what is buffered to the store, and takes no more events. */
  async close(): Promise<void> {
    await this.stopPosting();
    await this.#flush();
    this.#closed = true;
    if (this.#bufferedCount > 0) {
      this.#log.warn(
        { events: this.#bufferedCount },
        'webhook events lost at shutdown: the store was closed',
      );
    }
  }

  /** Every endpoint with its outbox state. */
  async status(): Promise<EndpointStatus[]> {
    return Promise.all(
      [...this.#endpoints.values()].map(async (e) => ({
        name: e.name,
        url: shownUrl(e.url),
        events: PLATFORM_EVENT_TYPES.filter((t) => e.events.has(t)),
        ...(await this.#outbox.state(e.name)),
      })),
    );
  }

  /** Posts one signed test event to `name` now (not through the outbox) and says how it went. */
  async test(name: string): Promise<PostResult & { endpoint: string }> {
    const endpoint = this.#endpoints.get(name);
    if (!endpoint) throw new UnknownWebhookEndpoint(name);
    const event = JSON.stringify({
      id: randomUUID(),
      type: 'test',
      at: new Date().toISOString(),
      text: 'a test event sent by tern webhook test',
    });
    const result = await this.#post(endpoint, [event]);
    this.#log.info({ endpoint: name, outcome: result.outcome, status: result.status }, 'webhook test sent');
    return { endpoint: name, ...result };
  }

  /** Names of the configured endpoints. */
  get names(): string[] {
    return [...this.#endpoints.keys()];
  }

  #flush(): Promise<void> {
    // One flush at a time keeps the store's order the order events were accepted.
    this.#flushing ??= this.#writeBuffered().finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  async #writeBuffered(): Promise<void> {
    while (this.#bufferedCount > 0) {
      for (const [name, list] of [...this.#buffered]) {
        this.#buffered.delete(name);
        this.#bufferedCount -= list.length;
        const endpoint = this.#endpoints.get(name) as WebhookEndpoint;
        let kept: number;
        try {
          kept = await this.#outbox.append(name, list, endpoint.maxPending);
        } catch (error) {
          // The store refuses writes for now: keep them (in front of newer ones) for the next tick.
          this.#buffered.set(name, [...list, ...(this.#buffered.get(name) ?? [])]);
          this.#bufferedCount += list.length;
          this.#log.warn(
            { err: error, endpoint: name, events: list.length },
            'could not write webhook events',
          );
          return;
        }
        this.#dropped(name, list.length - kept);
        this.#kick(name);
      }
    }
  }

  /** Counts and logs events a full outbox refused. */
  #dropped(name: string, dropped: number): void {
    if (dropped <= 0) return;
    this.#metrics?.events.inc({ endpoint: name, outcome: 'dropped' }, dropped);
    this.#log.warn(
      { endpoint: name, dropped, maxPending: this.#endpoints.get(name)?.maxPending },
      'webhook outbox full: events dropped (the endpoint is failing or too slow; see tern webhook list)',
    );
  }

  #kick(name: string): void {
    if (this.#stopped) return;
    if (this.#runs.has(name)) {
      this.#again.add(name);
      return;
    }
    const run = this.#run(this.#endpoints.get(name) as WebhookEndpoint)
      .catch((error: unknown) => this.#log.warn({ err: error, endpoint: name }, 'webhook dispatch failed'))
      .finally(() => {
        this.#runs.delete(name);
        if (this.#again.delete(name)) this.#kick(name);
      });
    this.#runs.set(name, run);
  }

  async #run(endpoint: WebhookEndpoint): Promise<void> {
    const name = endpoint.name;
    const state = await this.#outbox.state(name);
    if (state.pending === 0 || state.nextAttemptAt > Date.now()) return;
    const leaseMs = endpoint.timeoutMs + 30_000;
    if (!(await this.#outbox.lease(name, this.#owner, leaseMs))) return;
    try {
      let attempts = state.attempts;
      while (!this.#stopped) {
        const head = await this.#outbox.head(name, endpoint.batchSize);
        const cutoff = Date.now() - endpoint.maxAgeMs;
        const expired = head.filter((e) => e.createdAt <= cutoff);
        const due = head.filter((e) => e.createdAt > cutoff);
        if (expired.length > 0) await this.#expire(endpoint, expired);
        if (due.length === 0) {
          if (expired.length > 0) continue;
          return;
        }
        await this.#outbox.lease(name, this.#owner, leaseMs);
        const result = await this.#post(
          endpoint,
          due.map((e) => e.payload),
        );
        const now = Date.now();
        // Cut short by a stop: not the endpoint's failure, and the batch stays for the next start.
        if (this.#stopped && result.outcome !== 'success') return;
        if (result.outcome === 'success') {
          await this.#outbox.remove(
            name,
            due.map((e) => e.id),
          );
          await this.#outbox.record(name, { ok: true, at: now });
          this.#metrics?.events.inc({ endpoint: name, outcome: 'posted' }, due.length);
          if (attempts > 0)
            this.#log.info({ endpoint: name, after: attempts }, 'webhook endpoint answers again');
          attempts = 0;
          if (head.length < endpoint.batchSize) return;
          continue;
        }
        attempts++;
        const wait = backoffMs(endpoint, attempts);
        await this.#outbox.record(name, {
          ok: false,
          at: now,
          error: result.error ?? result.outcome,
          nextAttemptAt: now + wait,
        });
        this.#log.warn(
          { endpoint: name, events: due.length, attempts, retryInMs: wait, error: result.error },
          'webhook post failed; the events are kept and posted again',
        );
        return;
      }
    } finally {
      await this.#outbox.release(name, this.#owner);
    }
  }

  async #expire(endpoint: WebhookEndpoint, expired: readonly OutboxEvent[]): Promise<void> {
    await this.#outbox.remove(
      endpoint.name,
      expired.map((e) => e.id),
    );
    this.#metrics?.events.inc({ endpoint: endpoint.name, outcome: 'expired' }, expired.length);
    this.#log.warn(
      { endpoint: endpoint.name, events: expired.length, maxAgeMs: endpoint.maxAgeMs },
      'webhook events expired undelivered and were dropped',
    );
  }

  /** One signed POST of `payloads`; the answer's body is read up to a few hundred bytes. */
  async #post(endpoint: WebhookEndpoint, payloads: readonly string[]): Promise<PostResult> {
    const body = `{"events":[${payloads.join(',')}]}`;
    const started = Date.now();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), endpoint.timeoutMs);
    const stop = (): void => controller.abort();
    this.#stopping.signal.addEventListener('abort', stop, { once: true });
    let result: PostResult;
    try {
      const response = await fetch(endpoint.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'tern-webhooks',
          [SIGNATURE_HEADER]: signWebhook(endpoint.secret, body),
        },
        body,
        // A redirect is an answer, not a 2xx: never follow it with the signed body.
        redirect: 'manual',
        signal: controller.signal,
      });
      const text = await readSome(response, RESPONSE_READ_BYTES);
      const ms = Date.now() - started;
      result =
        response.status >= 200 && response.status < 300
          ? { outcome: 'success', status: response.status, ms }
          : {
              outcome: 'http_error',
              status: response.status,
              error: `HTTP ${response.status}${text === '' ? '' : `: ${text}`}`,
              ms,
            };
    } catch (error) {
      const ms = Date.now() - started;
      result = controller.signal.aborted
        ? { outcome: 'timeout', error: `no answer within ${endpoint.timeoutMs} ms`, ms }
        : { outcome: 'error', error: networkError(error), ms };
    } finally {
      clearTimeout(timer);
      this.#stopping.signal.removeEventListener('abort', stop);
    }
    this.#metrics?.posts.inc({ endpoint: endpoint.name, outcome: result.outcome });
    return result;
  }
}

/** At most `limit` bytes of the body as one printable line; the rest is not read. */
async function readSome(response: Response, limit: number): Promise<string> {
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks)
    .subarray(0, limit)
    .toString('utf8')
    .replace(/[^\x20-\x7e]+/g, ' ')
    .trim()
    .slice(0, 200);
}

function networkError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return (cause?.code ?? cause?.message ?? (error as Error).message ?? String(error)).slice(0, 200);
}
