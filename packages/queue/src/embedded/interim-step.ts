// TEMPORARY: the embedded worker's step after one attempt (decide, advice hooks, notices) until
// the shared worker step lands in packages/queue/src; then this file goes away.
import type { Logger, PluginHost, RecipientResult } from '@tern/plugin-api';
import { findHeaderEnd } from '@tern/plugin-api';
import type { DeliveryJob, DeliveryReport, IncomingMessage, RecipientState } from '../contract.js';
import { decideAttempt } from '../decide.js';
import { buildDsn } from '../dsn.js';
import type { RetrySchedule } from '../retry.js';

/** What the backend writes after an attempt, in one transaction. */
export interface Settlement {
  /** Every recipient of the job after this attempt, settled ones included. */
  readonly recipients: RecipientState[];
  readonly done: boolean;
  readonly nextAttemptAt: number | undefined;
  readonly delayNotified: boolean;
  /** Bounces and delay notices to enqueue with the job's new state. */
  readonly notices: IncomingMessage[];
  /** Observe hooks to run once the settlement is durable. */
  readonly after: () => Promise<void>;
}

export interface StepInput {
  readonly job: DeliveryJob;
  /** All recipients of the job as stored (the job's `recipients` are only the pending ones). */
  readonly stored: readonly RecipientState[];
  readonly report: DeliveryReport;
  readonly schedule: RetrySchedule;
  readonly plugins: PluginHost | undefined;
  readonly hostname: string;
  readonly logger: Logger;
  readonly body: () => Buffer;
  readonly attemptedAt: number;
}

export async function settleAttempt(input: StepInput): Promise<Settlement> {
  const { job, report, schedule, plugins } = input;
  const now = Date.now();
  const decision = decideAttempt(job, report, schedule, now);
  const base = { queueId: job.queueId, envelope: job.envelope, attempt: job.attempts };
  const results = (list: readonly { recipient: RecipientState; reply: RecipientResult['reply'] }[]) =>
    list.map((s) => ({ recipient: s.recipient, reply: s.reply }));

  let nextAttemptAt = decision.retryAt?.getTime();
  if (decision.deferred.length > 0 && nextAttemptAt !== undefined && plugins?.has('deferred')) {
    const advice = await plugins.runAdvise('deferred', {
      ...base,
      results: results(decision.deferred),
      nextAttemptAt: new Date(nextAttemptAt),
    });
    if (advice.retryAt) nextAttemptAt = schedule.clamp(advice.retryAt, now).getTime();
  }

  const notices: IncomingMessage[] = [];
  const headers = (): Buffer => {
    const body = input.body();
    const { headerEnd } = findHeaderEnd(body);
    return headerEnd === -1 ? body : body.subarray(0, headerEnd);
  };
  const toNotify = decision.failed.filter((f) => f.notify);
  if (decision.failed.length > 0) {
    let to = decision.notifyTo;
    if (plugins?.has('bounced')) {
      const reason = decision.failed.some((f) => f.reason === 'permanent') ? 'permanent' : 'expired';
      const advice = await plugins.runAdvise('bounced', {
        ...base,
        results: results(decision.failed),
        reason,
      });
      if (advice.suppress) to = undefined;
      else if (advice.redirectTo) to = advice.redirectTo;
    }
    if (job.isBounce || job.envelope.mailFrom === '') {
      input.logger.warn(
        { queueId: job.queueId, recipients: decision.failed.map((f) => f.recipient.address) },
        'a bounce could not be delivered; dropped',
      );
    } else if (to !== undefined && toNotify.length > 0) {
      notices.push(
        buildDsn(
          {
            kind: 'bounce',
            to,
            queueId: job.queueId,
            envelope: job.envelope,
            arrivalDate: new Date(job.createdAt),
            lastAttemptAt: new Date(input.attemptedAt),
            recipients: toNotify.map((f) => ({
              recipient: f.recipient,
              action: 'failed',
              reply: f.reply,
              reason: f.reason,
            })),
            originalHeaders: headers(),
          },
          { reportingMta: input.hostname },
        ),
      );
    }
  }
  let delayNotified = job.delayNotified === true;
  if (decision.delayNotice.length > 0 && decision.notifyTo !== undefined) {
    delayNotified = true;
    notices.push(
      buildDsn(
        {
          kind: 'delay',
          to: decision.notifyTo,
          queueId: job.queueId,
          envelope: job.envelope,
          arrivalDate: new Date(job.createdAt),
          lastAttemptAt: new Date(input.attemptedAt),
          willRetryUntil: schedule.expiresAt(job.createdAt),
          recipients: decision.delayNotice.map((d) => ({
            recipient: d.recipient,
            action: 'delayed',
            reply: d.reply,
          })),
          originalHeaders: headers(),
        },
        { reportingMta: input.hostname },
      ),
    );
  }

  const updated = new Map<string, RecipientState>();
  for (const s of [...decision.delivered, ...decision.failed, ...decision.deferred]) {
    updated.set(s.recipient.address.toLowerCase(), s.recipient);
  }
  const recipients = input.stored.map((r) => updated.get(r.address.toLowerCase()) ?? r);

  return {
    recipients,
    done: decision.done,
    nextAttemptAt: decision.done ? undefined : nextAttemptAt,
    delayNotified,
    notices,
    after: async () => {
      if (!plugins) return;
      if (decision.delivered.length > 0 && report.hop && plugins.has('delivered')) {
        await plugins.runObserve('delivered', {
          ...base,
          hop: report.hop,
          remoteMta: report.remoteMta ?? '',
          results: results(decision.delivered),
        });
      }
    },
  };
}
