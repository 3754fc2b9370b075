// The operations side of one running tern: observers of intake sessions and delivery outcomes
// (called by the listeners and the delivery worker, not through plugin hooks), the sink wrapper
// that stores each message's intake verdicts with it, metrics, and the admin server. mta.ts creates it before the plugin hosts (it needs their hook events) and starts the
// admin server once the queue is open. (An operator's reroute travels on the job: the deliverer
// honours `job.nextHop`.)

import type { ReplyEvent, SessionObserver, SpoolStats } from '@tern/core';
import { BACKOFF_ACTIONS } from '@tern/delivery';
import type { Logger, PlatformEvent, PlatformEventSource } from '@tern/plugin-api';
import type { HookEvent } from '@tern/plugin-api/host';
import type { IncomingMessage, OutboxWrite, OutcomeObserver, QueueBackend, QueueSummary } from '@tern/queue';
import { isQueueOperations } from '@tern/queue';
import type { ClusterRole } from '../cluster-worker.js';
import type { ResolvedConfig } from '../config.js';
import { adminToken } from '../config.js';
import type { PlatformEvents } from '../events.js';
import { type TlsReportView, tlsReportSender, tlsReportView } from '../outbound-tls.js';
import type { WebhookDispatcher } from '../webhooks/dispatcher.js';
import { envelopeEvents, resultEvents } from '../webhooks/producers.js';
import { ActivityLog } from './activity.js';
import { type AdminServer, type Listening, startAdminServer } from './admin-server.js';
import { IntakeRecorder } from './intake-recorder.js';
import { TernMetrics } from './metrics.js';

/** A summary is read at most this often, however many scrapes and dashboards ask. */
const SUMMARY_CACHE_MS = 1000;
const DEFAULT_SAMPLE_MS = 15_000;
/** The kinds of limit a wait is counted under (the deliverer's key prefixes); anything else is `other`. */
const LIMIT_KINDS = new Set(['domain', 'host', 'provider', 'source', 'backoff', 'warmup']);
const SHAPING_ACTIONS = new Set<string>(BACKOFF_ACTIONS);

export interface OpsStartOptions {
  readonly queue: QueueBackend;
  readonly hostname: string;
  /** Open connections per listener name. */
  readonly connections: () => Readonly<Record<string, number>>;
  /** The intake spool's memory and file use (metrics). */
  readonly spool?: () => SpoolStats;
  /** How many listeners this process should have, and the names of those bound (readiness). */
  readonly listening?: () => Listening;
  /**
   * In a cluster (processes > 1): one worker runs the admin server and reads the shared queue's
   * gauges; its /metrics sums every worker's registry. The others only offer their registry.
   */
  readonly cluster?: ClusterRole;
}

export class OpsRuntime {
  readonly recorder = new IntakeRecorder();
  readonly activity = new ActivityLog();
  metrics: TernMetrics | undefined;
  admin: AdminServer | undefined;
  readonly #config: ResolvedConfig;
  readonly #log: Logger;
  #sampler: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;

  constructor(config: ResolvedConfig, logger: Logger) {
    this.#config = config;
    this.#log = logger.child({ component: 'ops' });
  }

  /** For every PluginHost: each hook call goes to the timeline recorder and the metrics. */
  readonly onHookEvent = (event: HookEvent): void => {
    this.recorder.record(event);
    this.metrics?.hookCall(event, this.recorder.listenerOf(event.sessionId));
  };

  /** Set by startMta: reads the config file again and applies it (the admin API's POST /api/reload). */
  reloader: (() => Promise<unknown>) | undefined;

  /** For the delivery worker: a job a local limit refused, counted by the kind of limit (a closed set). */
  limitWait(key: string): void {
    const kind = key.slice(0, key.indexOf(':'));
    this.metrics?.limitWaits.inc({ limit: LIMIT_KINDS.has(kind) ? kind : 'other' });
  }

  /** For the delivery worker: a back-off action a reply set off or a job waited for (closed label sets). */
  shapingAction(action: string, cause: string): void {
    this.metrics?.shapingActions.inc({
      action: SHAPING_ACTIONS.has(action) ? action : 'other',
      cause: cause === 'triggered' || cause === 'applied' ? cause : 'waiting',
    });
  }

  /** Set by startMta: the MTA's platform events (queued, held, delivered, deferred, bounced are emitted here). */
  events: PlatformEvents | undefined;

  /** Set by startMta: the webhook dispatcher, for the admin API and the dashboard. */
  webhooks: WebhookDispatcher | undefined;

  /**
   * Emits each event on the MTA's stream. Built only when something listens: per message and
   * recipient, on the intake and delivery paths, and most MTAs have no webhooks.
   */
  #emit(events: () => readonly PlatformEvent[]): void {
    const stream = this.events;
    if (stream?.listening) for (const event of events()) stream.emit(event);
  }

  /** Set by startMta: the traffic shaping in force (back-off actions, egress sources), for the admin API. */
  shaping: (() => unknown) | undefined;

  /** Set by `tern start`: begins a drain and exits when it is done (the admin API's POST /api/drain). */
  drainer: (() => void) | undefined;

  /**
   * For every listener: each session's start, HELO, MAIL FROM, RCPT TO and end, called before any
   * plugin's hooks for them, without a hook call per connection or per message.
   */
  readonly sessions: SessionObserver = {
    opened: (session, xclient) => {
      this.recorder.opened(session.id, session.listener.name, session.remoteAddress);
      // XCLIENT hands the session to the forwarded client: one connection still.
      if (!xclient) this.metrics?.connections.inc({ listener: session.listener.name });
    },
    helo: (session, hostname) => this.recorder.helo(session.id, hostname),
    // A new transaction's events start afresh; called before any plugin's mailFrom verdict is recorded.
    mailFrom: (session, address) => {
      this.recorder.mailFrom(session.id, address);
      this.metrics?.transactions.inc({ listener: session.listener.name });
    },
    rcptTo: (session, recipient) => this.recorder.rcptTo(session.id, recipient.address),
    closed: (session) => this.recorder.closed(session.id),
  };

  /**
   * For the delivery worker: each attempt's delivered, deferred and bounced recipients (activity
   * log, metrics, platform events), called before the plugins' hooks for them, without a hook call
   * per delivered message.
   */
  readonly outcomes: OutcomeObserver = {
    delivered: (o) => {
      this.activity.delivery('delivered', o.queueId, o.results, { remoteMta: o.remoteMta, hop: o.hop });
      this.#emit(() => resultEvents('delivered', o.queueId, o.envelope, o.results));
      this.metrics?.deliveries.inc({ result: 'delivered' }, o.results.length);
    },
    deferred: (o) => {
      this.activity.delivery('deferred', o.queueId, o.results);
      this.#emit(() => resultEvents('deferred', o.queueId, o.envelope, o.results));
      this.metrics?.deliveries.inc({ result: 'deferred' }, o.results.length);
      this.metrics?.deliveryFailures('deferred', o.results);
    },
    bounced: (o) => {
      this.activity.delivery('bounced', o.queueId, o.results, { reason: o.reason });
      this.#emit(() => resultEvents('bounced', o.queueId, o.envelope, o.results));
      this.metrics?.deliveries.inc({ result: 'failed' }, o.results.length);
      this.metrics?.deliveryFailures('failed', o.results);
      this.metrics?.bounces.inc({ reason: o.reason }, o.results.length);
    },
  };

  /** For every listener: each 4xx/5xx reply, including core's own (relay, limits, syntax). */
  readonly onReply = (event: ReplyEvent): void => {
    this.recorder.reply(event);
    this.metrics?.errorReply(event);
  };

  /**
   * The queue as listeners see it: each message carries its session's verdicts into its timeline,
   * and its `queued` (and `held`) webhook events, written to the outbox in the same durable write.
   */
  sink(queue: QueueBackend): { enqueue(message: IncomingMessage): Promise<string> } {
    return {
      enqueue: async (message) => {
        const listener = message.source?.listener ?? '';
        const timeline = this.recorder.take(message.source?.sessionId);
        // HTTP injection enqueues through this sink too (listener 'http').
        const source = listener === 'http' ? 'injection' : 'intake';
        const webhooks = this.webhooks?.writesWithMessage ? this.webhooks : undefined;
        // Built only when an endpoint takes them (most MTAs have no webhooks): no closure per message otherwise.
        let events: PlatformEvent[] | undefined;
        let writes: OutboxWrite[] | undefined;
        const options =
          webhooks === undefined
            ? undefined
            : {
                outbox: (queueId: string) => {
                  events = intakeEvents(queueId, message, source);
                  writes = webhooks.outboxWrites(events);
                  return writes;
                },
              };
        try {
          const id = await queue.enqueue(timeline.length > 0 ? { ...message, timeline } : message, options);
          this.metrics?.accepted.inc({ listener });
          if (events !== undefined && writes !== undefined) webhooks?.written(events, writes);
          // Durable now: applications hear of it (and of a quarantine a queue hook asked for).
          this.#emit(() => events ?? intakeEvents(id, message, source));
          return id;
        } catch (error) {
          this.metrics?.enqueueFailures.inc({ listener });
          throw error;
        }
      },
    };
  }

  /** Starts metrics, the depth sampler and the admin server (when config.admin is set). */
  async start(options: OpsStartOptions): Promise<void> {
    const { queue, cluster } = options;
    // In a cluster only the admin worker reads what all share (the queue's depth, Redis), once.
    const shared = cluster === undefined || cluster.admin;
    const operations = isQueueOperations(queue) && shared ? queue : undefined;
    const summary = operations ? this.#cachedSummary(() => operations.summary()) : undefined;
    const ping = shared ? (queue as { ping?: () => Promise<number> }).ping : undefined;
    this.metrics = new TernMetrics({
      connections: options.connections,
      health: () => queue.health(),
      ...(options.spool ? { spool: options.spool } : {}),
      destinations: configuredDestinations(this.#config),
      ...(summary ? { summary } : {}),
      ...(typeof ping === 'function' ? { redisPing: () => ping.call(queue) } : {}),
      ...(this.#config.metrics?.tags ? { tags: this.#config.metrics.tags } : {}),
      ...(cluster ? { gather: () => cluster.metrics() } : {}),
    });
    cluster?.share(this.metrics.registry);
    // Counted from the platform events, heard only when tags are to be counted: with no listener,
    // producers build no events at all.
    if (this.metrics.tagEvents !== undefined) this.#unsubscribe = this.events?.on(this.metrics.tagEvent);
    const admin = this.#config.admin;
    if (!admin || !shared) return;
    if (summary) {
      const sample = (): void => {
        summary().then(
          (s) => this.activity.sample(s),
          (error: unknown) => this.#log.warn({ err: error }, 'queue depth sample failed'),
        );
      };
      sample();
      this.#sampler = setInterval(sample, admin.sampleIntervalMs ?? DEFAULT_SAMPLE_MS);
      this.#sampler.unref();
    }
    const token = adminToken(this.#config);
    this.admin = await startAdminServer({
      listen: admin.listen,
      token,
      metricsAuth: admin.metricsAuth === true,
      queue,
      hostname: options.hostname,
      metrics: this.metrics,
      activity: this.activity,
      recorder: this.recorder,
      logger: this.#log,
      ...(options.listening ? { listening: options.listening } : {}),
      ...tlsReportRoute(this.#config, options.hostname, queue, this.#log),
      shaping: () => this.shaping?.() ?? { backoffs: [] },
      events: () => this.events,
      webhooks: () => this.webhooks,
      reload: () => {
        if (!this.reloader) throw new Error('no config file to reload');
        return this.reloader();
      },
      drain: () => {
        if (!this.drainer) return false;
        this.drainer();
        return true;
      },
    });
  }

  async close(): Promise<void> {
    clearInterval(this.#sampler);
    this.#unsubscribe?.();
    await this.admin?.close();
  }

  #cachedSummary(read: () => Promise<QueueSummary>): () => Promise<QueueSummary> {
    let cached: { at: number; value: Promise<QueueSummary> } | undefined;
    return () => {
      const now = Date.now();
      if (!cached || now - cached.at > SUMMARY_CACHE_MS) {
        const value = read();
        cached = { at: now, value };
        // A failed read is not kept: the next caller tries again.
        value.catch(() => {
          if (cached?.value === value) cached = undefined;
        });
      }
      return cached.value;
    };
  }
}

/** A message's events at intake: `queued` per recipient, and `held` when a queue hook quarantined it. */
function intakeEvents(
  queueId: string,
  message: IncomingMessage,
  source: PlatformEventSource,
): PlatformEvent[] {
  const queued = envelopeEvents('queued', queueId, message.envelope, source);
  const hold = message.hold;
  if (hold === undefined) return queued;
  return [
    ...queued,
    ...envelopeEvents('held', queueId, message.envelope, source, { text: hold.slice(0, 300) }),
  ];
}

/** Destination domains the configuration names: routes, delivery limits and local domains. */
function configuredDestinations(config: ResolvedConfig): string[] {
  const delivery = config.delivery;
  return [
    ...Object.keys(delivery?.routes ?? {}),
    ...Object.keys(delivery?.limits?.domains ?? {}),
    ...(delivery?.local?.domains ?? []),
    ...(config.localDomains ?? []),
  ].filter((domain) => domain !== '*');
}

/** The admin API's view of TLS-RPT reports, when `delivery.tlsReports` is on (the store is locked to this process). */
function tlsReportRoute(
  config: ResolvedConfig,
  hostname: string,
  queue: QueueBackend,
  logger: Logger,
): { tlsReport?: (domain: string, day: string) => Promise<TlsReportView> } {
  const sender = tlsReportSender(config, hostname, queue, logger);
  return sender ? { tlsReport: async (domain, day) => tlsReportView(await sender.prepare(domain, day)) } : {};
}
