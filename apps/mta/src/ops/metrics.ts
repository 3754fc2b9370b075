// Prometheus metrics for one tern process (prom-client, its own registry). Counters come from
// hook events and the ops plugin; queue depth and Redis latency are read when scraped, so a
// scrape shows the shared queue as it is now, whichever node answers.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** Destinations exported with their own label on a scrape; the rest are summed as "(other)". */
const MAX_DOMAIN_SERIES = 100;

export interface MetricSources {
  /** Open SMTP connections per listener. */
  readonly connections: () => Readonly<Record<string, number>>;
  /** The queue summary (absent when the backend has no operator operations). */
  readonly summary?: () => Promise<{
    totals: Record<'total' | 'scheduled' | 'active' | 'held' | 'deferred', number>;
    destinations: readonly ({ domain: string } & Record<
      'scheduled' | 'active' | 'held' | 'deferred',
      number
    >)[];
  }>;
  /** One Redis PING in ms (Redis backend only). */
  readonly redisPing?: () => Promise<number>;
}

export class TernMetrics {
  readonly registry = new Registry();
  readonly connections: Counter<'listener'>;
  readonly transactions: Counter<'listener'>;
  readonly accepted: Counter<'listener'>;
  readonly enqueueFailures: Counter<'listener'>;
  readonly refusals: Counter<'listener' | 'plugin' | 'hook' | 'outcome' | 'code'>;
  readonly errorReplies: Counter<'listener' | 'command' | 'code'>;
  readonly hookCalls: Counter<'plugin' | 'hook' | 'outcome'>;
  readonly hookDuration: Histogram<'plugin' | 'hook'>;
  readonly deliveries: Counter<'result'>;
  readonly bounces: Counter<'reason'>;

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'tern_process_' });
    this.connections = new Counter({
      name: 'tern_smtp_connections_total',
      help: 'SMTP connections accepted, by listener',
      labelNames: ['listener'],
      registers,
    });
    new Gauge({
      name: 'tern_smtp_connections_open',
      help: 'SMTP connections open now, by listener',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        for (const [listener, open] of Object.entries(sources.connections())) this.set({ listener }, open);
      },
    });
    this.transactions = new Counter({
      name: 'tern_smtp_transactions_total',
      help: 'Mail transactions started (MAIL FROM), by listener',
      labelNames: ['listener'],
      registers,
    });
    this.accepted = new Counter({
      name: 'tern_messages_accepted_total',
      help: 'Messages made durable and answered 250, by listener',
      labelNames: ['listener'],
      registers,
    });
    this.enqueueFailures = new Counter({
      name: 'tern_messages_enqueue_failed_total',
      help: 'Messages answered 451 because the queue could not take them, by listener',
      labelNames: ['listener'],
      registers,
    });
    this.refusals = new Counter({
      name: 'tern_smtp_refusals_total',
      help: 'Plugin verdicts that refused (reject, tempfail, disconnect) or failed (error, timeout), by listener, plugin, hook and reply code',
      labelNames: ['listener', 'plugin', 'hook', 'outcome', 'code'],
      registers,
    });
    this.errorReplies = new Counter({
      name: 'tern_smtp_error_replies_total',
      help: 'Every 4xx/5xx reply sent, whoever decided it (core policy, limits or a plugin), by listener, command and code',
      labelNames: ['listener', 'command', 'code'],
      registers,
    });
    this.hookCalls = new Counter({
      name: 'tern_hook_calls_total',
      help: 'Plugin hook calls by plugin, hook and outcome (continue, accept, reject, tempfail, disconnect, ok, error, timeout)',
      labelNames: ['plugin', 'hook', 'outcome'],
      registers,
    });
    this.hookDuration = new Histogram({
      name: 'tern_hook_duration_seconds',
      help: 'Plugin hook latency by plugin and hook',
      labelNames: ['plugin', 'hook'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    });
    this.deliveries = new Counter({
      name: 'tern_delivery_recipients_total',
      help: 'Recipient results of delivery attempts in this process: delivered, deferred or failed',
      labelNames: ['result'],
      registers,
    });
    this.bounces = new Counter({
      name: 'tern_bounces_total',
      help: 'Recipients bounced by this process, by reason (permanent reply or expired)',
      labelNames: ['reason'],
      registers,
    });

    const summary = sources.summary;
    if (summary) {
      new Gauge({
        name: 'tern_queue_jobs',
        help: `Unfinished delivery jobs in the queue by destination domain and state (the ${MAX_DOMAIN_SERIES} largest destinations; the rest as "(other)")`,
        labelNames: ['domain', 'state'],
        registers,
        async collect() {
          this.reset();
          const { destinations } = await summary();
          const states = ['scheduled', 'active', 'held', 'deferred'] as const;
          const other = { scheduled: 0, active: 0, held: 0, deferred: 0 };
          destinations.forEach((d, i) => {
            for (const state of states) {
              if (i < MAX_DOMAIN_SERIES) this.set({ domain: d.domain, state }, d[state]);
              else other[state] += d[state];
            }
          });
          if (destinations.length > MAX_DOMAIN_SERIES) {
            for (const state of states) this.set({ domain: '(other)', state }, other[state]);
          }
        },
      });
      new Gauge({
        name: 'tern_queue_jobs_total',
        help: 'Unfinished delivery jobs in the queue by state (deferred: failed at least once, in any state)',
        labelNames: ['state'],
        registers,
        async collect() {
          this.reset();
          const { totals } = await summary();
          for (const state of ['total', 'scheduled', 'active', 'held', 'deferred'] as const) {
            this.set({ state }, totals[state]);
          }
        },
      });
    }
    const ping = sources.redisPing;
    if (ping) {
      new Gauge({
        name: 'tern_redis_ping_seconds',
        help: 'Round trip of one Redis PING, timed when scraped (-1: Redis did not answer)',
        registers,
        async collect() {
          try {
            this.set((await ping()) / 1000);
          } catch {
            this.set(-1);
          }
        },
      });
    }
  }

  /** The text exposition format. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
