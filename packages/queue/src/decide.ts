// Shared by every backend: the pure decision after one delivery attempt. Which recipients are
// done, which failed for good (and whether their sender hears of it), which retry and when.
import type { BounceCategory, SmtpReply } from '@tern/plugin-api';
import { type BounceClassifier, defaultBounceClassifier } from './bounce-classifier.js';
import type { DeliveryJob, DeliveryReport, RecipientOutcome, RecipientState } from './contract.js';
import type { RetrySchedule } from './retry.js';

/** A recipient this attempt settled, with the reply that settled it and its updated state. */
export interface SettledRecipient {
  readonly recipient: RecipientState;
  readonly reply: SmtpReply;
  /** Deferred and failed recipients: why, as the bounce classifier sorted the reply. */
  readonly category?: BounceCategory;
}

export interface FailedRecipient extends SettledRecipient {
  readonly category: BounceCategory;
  /** `permanent`: a 5xx; `expired`: still deferred when the message outlived the schedule. */
  readonly reason: 'permanent' | 'expired';
  /** Whether the sender gets a bounce for it (false for `<>`, our own bounces, and NOTIFY without FAILURE). */
  readonly notify: boolean;
}

/** What the worker does after one attempt; backends persist it, nothing here touches storage. */
export interface AttemptDecision {
  readonly delivered: readonly SettledRecipient[];
  readonly failed: readonly FailedRecipient[];
  /** Recipients for the next attempt (never one that was delivered or failed). */
  readonly deferred: readonly SettledRecipient[];
  /** When the next attempt is due; set exactly when `deferred` is not empty. */
  readonly retryAt: Date | undefined;
  /** Deferred recipients to name in a delay notice now (empty: send none). */
  readonly delayNotice: readonly SettledRecipient[];
  /**
   * Delivered recipients that asked for a success notice (NOTIFY=SUCCESS) we must send: `delivered`
   * into a mailbox, `relayed` to a hop without DSN. Empty when the next hop reports itself.
   */
  readonly successNotice: readonly SettledRecipient[];
  readonly successAction: 'delivered' | 'relayed';
  /** Where bounces and delay notices go: the return path, or undefined when they must not be sent. */
  readonly notifyTo: string | undefined;
  /** Nothing is left to deliver in this job. */
  readonly done: boolean;
}

/** Stands in for a recipient the report left out: delivery forgot it, so it must be tried again, not lost. */
export const MISSING_OUTCOME_REPLY: SmtpReply = {
  code: 451,
  enhanced: '4.3.0',
  text: 'No delivery result was reported for this recipient',
};

/**
 * Decides the fate of every recipient of `job` after the attempt that produced `report`.
 * `job.attempts` counts the attempts before this one. Recipients not delivered get a category from
 * `classifier` (an expired one keeps the category of its last temporary reply: the cause it met).
 */
export function decideAttempt(
  job: DeliveryJob,
  report: DeliveryReport,
  schedule: RetrySchedule,
  now: number | Date = Date.now(),
  classifier: BounceClassifier = defaultBounceClassifier,
): AttemptDecision {
  const outcomes = new Map<string, RecipientOutcome>();
  for (const outcome of report.recipients) outcomes.set(outcome.address.toLowerCase(), outcome);

  // Never to `<>` (RFC 5321 §4.5.5), and never about our own bounces: that is how bounce loops start.
  const notifyTo = job.isBounce || job.envelope.mailFrom === '' ? undefined : job.envelope.mailFrom;
  const attempts = job.attempts + 1;
  const next = schedule.nextAttemptAt(attempts, job.createdAt, now);

  const delivered: SettledRecipient[] = [];
  const failed: FailedRecipient[] = [];
  const deferred: SettledRecipient[] = [];
  for (const recipient of job.recipients) {
    const outcome = outcomes.get(recipient.address.toLowerCase());
    const result = outcome?.result ?? 'deferred';
    const reply = outcome?.reply ?? MISSING_OUTCOME_REPLY;
    const remoteMta = report.remoteMta ?? recipient.remoteMta;
    const base = { ...recipient, lastReply: reply, ...(remoteMta === undefined ? {} : { remoteMta }) };
    if (result === 'delivered') {
      delivered.push({ recipient: { ...base, status: 'delivered' }, reply });
    } else if (result === 'failed' || next === 'expired') {
      const reason = result === 'failed' ? 'permanent' : 'expired';
      const notify = notifyTo !== undefined && wants(recipient, 'FAILURE');
      const category = classifier.classify(reply);
      failed.push({ recipient: { ...base, status: 'failed' }, reply, category, reason, notify });
    } else {
      deferred.push({
        recipient: { ...base, status: 'pending' },
        reply,
        category: classifier.classify(reply),
      });
    }
  }

  const retryAt = deferred.length > 0 && next !== 'expired' ? next : undefined;
  const noticeDue =
    notifyTo !== undefined &&
    !job.delayNotified &&
    retryAt !== undefined &&
    schedule.delayNoticeDue(job.createdAt, now);
  return {
    delivered,
    failed,
    deferred,
    retryAt,
    delayNotice: noticeDue ? deferred.filter((d) => wantsDelayNotice(d.recipient, schedule)) : [],
    // RFC 3461 §5.2.2: a next hop that took the DSN request reports success itself.
    successNotice:
      notifyTo !== undefined && report.successNotice !== 'next-hop'
        ? delivered.filter((d) => d.recipient.notify?.includes('SUCCESS') === true)
        : [],
    successAction: report.successNotice === 'delivered' ? 'delivered' : 'relayed',
    notifyTo,
    done: deferred.length === 0,
  };
}

/** RFC 3461 §4.1 NOTIFY: without the parameter, failures are reported; NEVER silences every notice. */
function wants(recipient: RecipientState, kind: 'FAILURE'): boolean {
  if (recipient.notify === undefined || recipient.notify.length === 0) return true;
  return recipient.notify.includes(kind);
}

/** NOTIFY with DELAY asks for one; without NOTIFY, one is sent only where the operator configured it. */
function wantsDelayNotice(recipient: RecipientState, schedule: RetrySchedule): boolean {
  if (recipient.notify === undefined || recipient.notify.length === 0) return schedule.delayNoticeUnrequested;
  return recipient.notify.includes('DELAY');
}
