// In-memory views for the dashboard: recent delivery results (from the delivered, deferred and
// bounced hooks of this process's worker) and queue depth over time (sampled from the summary).
// They are this process's view only; the queue itself (and every timeline) is shared.
import type { BounceCategory, NextHop, RecipientResult } from '@tern/plugin-api';
import { describeHop, type QueueSummary } from '@tern/queue';

export interface DeliveryActivity {
  readonly at: number;
  readonly kind: 'delivered' | 'deferred' | 'bounced';
  readonly queueId: string;
  readonly recipients: readonly string[];
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
  readonly remoteMta?: string;
  readonly hop?: string;
  /** Bounces: why (a permanent reply, or the message expired). */
  readonly reason?: 'permanent' | 'expired';
  /** Deferrals and bounces: the bounce classifier's category of the reply. */
  readonly category?: BounceCategory;
}

export interface DepthSample {
  readonly at: number;
  readonly total: number;
  readonly held: number;
  readonly active: number;
  readonly deferred: number;
  /** Jobs per destination for the busiest destinations of that moment. */
  readonly destinations: Readonly<Record<string, number>>;
}

/** Destinations kept per sample; the rest are summed as "(other)". */
const DESTINATIONS_PER_SAMPLE = 10;

export class ActivityLog {
  readonly #recent: DeliveryActivity[] = [];
  readonly #samples: DepthSample[] = [];
  readonly #maxRecent: number;
  readonly #maxSamples: number;

  constructor(options: { maxRecent?: number; maxSamples?: number } = {}) {
    this.#maxRecent = options.maxRecent ?? 200;
    this.#maxSamples = options.maxSamples ?? 240;
  }

  /** One delivery hook call: results grouped by reply, so one line per distinct answer. */
  delivery(
    kind: DeliveryActivity['kind'],
    queueId: string,
    results: readonly RecipientResult[],
    extra: { remoteMta?: string; hop?: NextHop; reason?: 'permanent' | 'expired' } = {},
    at: number = Date.now(),
  ): void {
    const byReply = new Map<string, RecipientResult[]>();
    for (const r of results) {
      const key = `${r.category ?? ''} ${r.reply.code} ${r.reply.enhanced} ${r.reply.text}`;
      byReply.set(key, [...(byReply.get(key) ?? []), r]);
    }
    for (const group of byReply.values()) {
      const { reply, category } = group[0] as RecipientResult;
      this.#recent.push({
        at,
        kind,
        queueId,
        recipients: group.map((r) => r.recipient.address),
        code: reply.code,
        enhanced: reply.enhanced,
        text: reply.text.slice(0, 300),
        ...(extra.remoteMta ? { remoteMta: extra.remoteMta } : {}),
        ...(extra.hop ? { hop: describeHop(extra.hop) } : {}),
        ...(extra.reason ? { reason: extra.reason } : {}),
        ...(category ? { category } : {}),
      });
    }
    while (this.#recent.length > this.#maxRecent) this.#recent.shift();
  }

  /** Newest first. */
  recent(limit = this.#maxRecent, kinds?: ReadonlySet<DeliveryActivity['kind']>): DeliveryActivity[] {
    const list = kinds ? this.#recent.filter((a) => kinds.has(a.kind)) : this.#recent;
    return list.slice(-limit).reverse();
  }

  sample(summary: QueueSummary): void {
    const destinations: Record<string, number> = {};
    let other = 0;
    summary.destinations.forEach((d, i) => {
      if (i < DESTINATIONS_PER_SAMPLE) destinations[d.domain] = d.total;
      else other += d.total;
    });
    if (other > 0) destinations['(other)'] = other;
    this.#samples.push({
      at: summary.at,
      total: summary.totals.total,
      held: summary.totals.held,
      active: summary.totals.active,
      deferred: summary.totals.deferred,
      destinations,
    });
    while (this.#samples.length > this.#maxSamples) this.#samples.shift();
  }

  /** Oldest first. */
  history(): DepthSample[] {
    return [...this.#samples];
  }
}
