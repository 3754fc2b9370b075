// Prometheus metrics for one tern process (prom-client, its own registry). Counters come from
// hook events and the ops runtime's observers; queue depth and Redis latency are read when scraped, so a
// scrape shows the shared queue as it is now, whichever node answers.
//
// Every label value comes from a closed set, so no client can grow the registry: commands are
// core's closed ReplyCommand set, reply codes known codes or their class, destinations the
// configured ones and the largest few, listener and plugin names the configured ones (capped all
// the same, as a guard across reloads); hooks, outcomes, states and reasons are fixed unions.
import { type ReplyCommand, type ReplyEvent, SMTP_VERBS, type SpoolStats } from '@tern/core';
import {
  isBounceCategory,
  PLATFORM_EVENT_TYPES,
  type PlatformEvent,
  type RecipientResult,
} from '@tern/plugin-api';
import type { HookEvent } from '@tern/plugin-api/host';
import type { QueueHealth } from '@tern/queue';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** Destinations exported with their own label besides the configured ones; the rest are summed as "(other)". */
const MAX_DOMAIN_SERIES = 50;
/** Distinct listener and plugin names kept as labels; past this (only after many reloads) they count as "other". */
const MAX_NAMES = 100;
const OTHER = 'other';

const COMMANDS: ReadonlySet<string> = new Set<ReplyCommand>([...SMTP_VERBS, 'OTHER', 'NONE']);
// Reply codes of RFC 5321 and its extensions (AUTH, STARTTLS, SIZE, ...); any other becomes its class.
const REPLY_CODES: ReadonlySet<number> = new Set([
  421, 450, 451, 452, 454, 455, 500, 501, 502, 503, 504, 521, 523, 530, 534, 535, 538, 550, 551, 552, 553,
  554, 555, 556,
]);

/** A reply code as a label: a known code as itself, another 2xx-5xx code as its class (`4xx`), anything else `other`. */
export function replyCodeLabel(code: number | undefined): string {
  if (code === undefined || !Number.isInteger(code) || code < 200 || code > 599) return OTHER;
  return REPLY_CODES.has(code) ? String(code) : `${String(code)[0]}xx`;
}

/** The command of a reply event as a label: core's closed set, and `OTHER` should anything else get through. */
export function commandLabel(command: string): string {
  return COMMANDS.has(command) ? command : 'OTHER';
}

/** Names from configuration: each keeps its own label until `max` are known, then `other`. */
class NameLabels {
  readonly #known = new Set<string>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  label(name: string): string {
    if (this.#known.has(name)) return name;
    if (this.#known.size >= this.#max) return OTHER;
    this.#known.add(name);
    return name;
  }
}

type DomainCounts = { domain: string } & Record<
  'total' | 'scheduled' | 'active' | 'held' | 'deferred',
  number
>;

/**
 * The destinations that keep their own label: every configured one with jobs, then the largest
 * others (ties by name, so the set does not churn between scrapes), at most `max` of them.
 */
export function labelledDestinations(
  destinations: readonly DomainCounts[],
  configured: ReadonlySet<string>,
  max: number,
): Set<string> {
  const chosen = new Set(destinations.filter((d) => configured.has(d.domain)).map((d) => d.domain));
  const largest = destinations
    .filter((d) => !configured.has(d.domain))
    .sort((a, b) => b.total - a.total || (a.domain < b.domain ? -1 : 1))
    .slice(0, max);
  for (const d of largest) chosen.add(d.domain);
  return chosen;
}

export interface MetricSources {
  /** Open SMTP connections per listener. */
  readonly connections: () => Readonly<Record<string, number>>;
  /** The queue summary (absent when the backend has no operator operations). */
  readonly summary?: () => Promise<{
    totals: Record<'total' | 'scheduled' | 'active' | 'held' | 'deferred', number>;
    destinations: readonly DomainCounts[];
  }>;
  /** Destination domains named in the configuration (routes, limits, local domains): always labelled. */
  readonly destinations?: readonly string[];
  /** One Redis PING in ms (Redis backend only). */
  readonly redisPing?: () => Promise<number>;
  /** Whether the queue's store takes writes. */
  readonly health?: () => QueueHealth;
  /** The intake spool: bodies in memory and on disk. */
  readonly spool?: () => SpoolStats;
  /** Tags counted under their own label (`metrics.tags`, lower-cased); none: no tag counters. */
  readonly tags?: readonly string[];
  /** In a cluster (processes > 1): what /metrics shows, every worker's registry summed by the primary. */
  readonly gather?: () => Promise<string>;
}

/** The `tag` label of a message without tags. */
const NO_TAG = 'none';
const EVENT_TYPES: ReadonlySet<string> = new Set(PLATFORM_EVENT_TYPES);

/**
 * The `tag` labels one event counts under: each of its tags on the allow-list, `other` (once) for
 * any tag that is not, `none` when it has no tag.
 */
export function tagLabels(tags: readonly string[] | undefined, allowed: ReadonlySet<string>): string[] {
  if (tags === undefined || tags.length === 0) return [NO_TAG];
  const labels = new Set<string>();
  for (const tag of tags) {
    const lower = tag.toLowerCase();
    labels.add(allowed.has(lower) ? lower : OTHER);
  }
  return [...labels];
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
  readonly limitWaits: Counter<'limit'>;
  readonly shapingActions: Counter<'action' | 'cause'>;
  readonly failures: Counter<'result' | 'category'>;
  readonly injections: Counter<'source' | 'result'>;
  /** Platform events by tag (configured tags only), when `metrics.tags` is set. */
  readonly tagEvents: Counter<'tag' | 'event'> | undefined;
  readonly #tags: ReadonlySet<string>;
  readonly #listeners = new NameLabels(MAX_NAMES);
  readonly #plugins = new NameLabels(MAX_NAMES);
  readonly #gather: (() => Promise<string>) | undefined;

  constructor(sources: MetricSources) {
    this.#gather = sources.gather;
    const registers = [this.registry];
    // prom-client's own names start with process_ and nodejs_: tern_process_cpu_seconds_total, not tern_process_process_…
    collectDefaultMetrics({ register: this.registry, prefix: 'tern_' });
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
    this.injections = new Counter({
      name: 'tern_http_injections_total',
      help: 'HTTP injection requests answered, by how the message came (json, raw, none) and result (queued, duplicate, or the error code)',
      labelNames: ['source', 'result'],
      registers,
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
    this.limitWaits = new Counter({
      name: 'tern_delivery_limit_waits_total',
      help: 'Jobs a local limit refused before any connection, put back to wait (not attempts), by kind of limit',
      labelNames: ['limit'],
      registers,
    });
    this.shapingActions = new Counter({
      name: 'tern_shaping_actions_total',
      help: 'Traffic-shaping actions: set off (or extended) by a reply, or waited for by a job; by action',
      labelNames: ['action', 'cause'],
      registers,
    });
    this.bounces = new Counter({
      name: 'tern_bounces_total',
      help: 'Recipients bounced by this process, by reason (permanent reply or expired)',
      labelNames: ['reason'],
      registers,
    });
    this.failures = new Counter({
      name: 'tern_delivery_failures_total',
      help: 'Recipients deferred or failed by this process, by the bounce category of the reply',
      labelNames: ['result', 'category'],
      registers,
    });

    this.#tags = new Set(sources.tags ?? []);
    this.tagEvents =
      this.#tags.size === 0
        ? undefined
        : new Counter({
            name: 'tern_tag_events_total',
            help: 'Platform events (one per recipient: queued, delivered, deferred, bounced, held, suppressed, complained) by message tag: the tags of metrics.tags, "other" for any other tag, "none" for untagged mail; a message with several tags counts under each',
            labelNames: ['tag', 'event'],
            registers,
          });
    // Every series from the start, at 0: a rate over a tag's first event needs the series before it.
    for (const tag of this.#tags.size === 0 ? [] : [...this.#tags, OTHER, NO_TAG]) {
      for (const event of PLATFORM_EVENT_TYPES) this.tagEvents?.inc({ tag, event }, 0);
    }

    const summary = sources.summary;
    if (summary) {
      const configured = new Set(sources.destinations ?? []);
      new Gauge({
        name: 'tern_queue_jobs',
        help: `Unfinished delivery jobs in the queue by destination domain and state (configured destinations and the ${MAX_DOMAIN_SERIES} largest others; the rest as "(other)")`,
        labelNames: ['domain', 'state'],
        registers,
        async collect() {
          this.reset();
          const { destinations } = await summary();
          const labelled = labelledDestinations(destinations, configured, MAX_DOMAIN_SERIES);
          const states = ['scheduled', 'active', 'held', 'deferred'] as const;
          const other = { scheduled: 0, active: 0, held: 0, deferred: 0 };
          for (const d of destinations) {
            for (const state of states) {
              if (labelled.has(d.domain)) this.set({ domain: d.domain, state }, d[state]);
              else other[state] += d[state];
            }
          }
          if (labelled.size < destinations.length) {
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
    const health = sources.health;
    if (health) {
      new Gauge({
        name: 'tern_queue_store_writable',
        help: 'Whether the queue store takes writes (1) or refuses them (0: disk full, I/O error, Redis down or out of memory; new mail gets 451)',
        registers,
        // Summed over a cluster's workers it would count them: 0 when any worker's store refuses.
        aggregator: 'min',
        collect() {
          this.set(health().writable ? 1 : 0);
        },
      });
    }
    const spool = sources.spool;
    if (spool) {
      const gauge = (name: string, help: string, read: (s: SpoolStats) => number): void => {
        new Gauge({
          name,
          help,
          registers,
          collect() {
            this.set(read(spool()));
          },
        });
      };
      gauge(
        'tern_intake_memory_bytes',
        'Bytes of messages being received held in memory',
        (s) => s.memoryBytes,
      );
      gauge(
        'tern_intake_memory_budget_bytes',
        'The intake memory budget (intake.memoryBudget)',
        (s) => s.memoryBudget,
      );
      gauge(
        'tern_intake_spooled_messages',
        'Messages being received whose body is in a spool file now',
        (s) => s.spooledMessages,
      );
      // Counts the spool keeps, read when scraped (set, not incremented, here).
      const count = (name: string, help: string, read: (s: SpoolStats) => number): void => {
        new Counter({
          name,
          help,
          registers,
          collect() {
            this.reset();
            this.inc(read(spool()));
          },
        });
      };
      count(
        'tern_intake_spilled_total',
        'Messages whose body went to a spool file, since start',
        (s) => s.spilledTotal,
      );
      count(
        'tern_intake_spool_refused_total',
        'Messages refused with 451 4.3.1 because their body fit neither in memory nor on disk, since start',
        (s) => s.refusedTotal,
      );
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

  /** Counts deferred or failed recipients by category (a closed set: a result without one is `unknown`). */
  deliveryFailures(result: 'deferred' | 'failed', results: readonly RecipientResult[]): void {
    for (const r of results) {
      this.failures.inc({ result, category: isBounceCategory(r.category) ? r.category : 'unknown' });
    }
  }

  /** Counts one platform event under each tag label of its message (see tagLabels). */
  readonly tagEvent = (event: PlatformEvent): void => {
    const counter = this.tagEvents;
    if (counter === undefined || !EVENT_TYPES.has(event.type)) return;
    for (const tag of tagLabels(event.tags, this.#tags)) counter.inc({ tag, event: event.type });
  };

  /** Counts one 4xx/5xx reply a listener sent (its onReply event). */
  errorReply(event: ReplyEvent): void {
    this.errorReplies.inc({
      listener: this.#listeners.label(event.listener),
      command: commandLabel(event.command),
      code: replyCodeLabel(event.code),
    });
  }

  /** Counts one plugin hook call and its latency; refusals and failures also by listener and reply code. */
  hookCall(event: HookEvent, listener: string | undefined): void {
    const plugin = this.#plugins.label(event.plugin);
    this.hookCalls.inc({ plugin, hook: event.hook, outcome: event.outcome });
    this.hookDuration.observe({ plugin, hook: event.hook }, event.durationMs / 1000);
    if (!['reject', 'tempfail', 'disconnect', 'error', 'timeout'].includes(event.outcome)) return;
    const failed = event.outcome === 'error' || event.outcome === 'timeout';
    this.refusals.inc({
      listener: listener === undefined ? '' : this.#listeners.label(listener),
      plugin,
      hook: event.hook,
      outcome: event.outcome,
      // A failed hook is answered 451 by the runner.
      code: event.code === undefined ? (failed ? '451' : '') : replyCodeLabel(event.code),
    });
  }

  /** The text exposition format. */
  async render(): Promise<{ contentType: string; body: string }> {
    const body = this.#gather ? await this.#gather() : await this.registry.metrics();
    return { contentType: this.registry.contentType, body };
  }
}
