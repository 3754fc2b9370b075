// Shared by every backend: runs one delivery attempt of one job end to end (deliver, decide,
// hooks, bounces, delay notices). Backends only fetch the job and persist the AttemptOutcome.
import { hostname as osHostname } from 'node:os';
import type { Readable } from 'node:stream';
import { type Logger, type RecipientResult, type SmtpReply, silentLogger } from '@tern/plugin-api';
import type { PluginHost } from '@tern/plugin-api/host';
import type {
  Deliver,
  DeliveryJob,
  DeliveryReport,
  IncomingMessage,
  RecipientState,
  WorkerOptions,
} from './contract.js';
import {
  type AttemptDecision,
  decideAttempt,
  type FailedRecipient,
  type SettledRecipient,
} from './decide.js';
import { buildDsn, type DsnRecipient } from './dsn.js';
import { RetrySchedule } from './retry.js';

/** What a backend lends the attempt: its stored message and its own enqueue (for bounces). */
export interface AttemptStore {
  /** Opens the stored message as a stream (handed to `deliver`). */
  openMessage(): Promise<Readable>;
  /** The original header block, without the empty line (bounces quote it). */
  readHeaders(): Promise<Buffer>;
  /** Enqueues a notice through the same queue; resolves with its queue id. */
  enqueue(message: IncomingMessage): Promise<string>;
}

/** Worker settings resolved once per worker, shared by every attempt. */
export interface AttemptSettings {
  readonly schedule: RetrySchedule;
  readonly hostname: string;
  readonly logger: Logger;
  readonly plugins: PluginHost | (() => PluginHost) | undefined;
  readonly now: () => number;
}

/** Fills in WorkerOptions defaults. */
export function attemptSettings(options: WorkerOptions = {}, now: () => number = Date.now): AttemptSettings {
  const retry = options.retry;
  return {
    schedule: retry instanceof RetrySchedule ? retry : new RetrySchedule(retry),
    hostname: options.hostname ?? osHostname(),
    logger: options.logger ?? silentLogger,
    plugins: options.plugins,
    now,
  };
}

/** What the backend persists after an attempt. */
export interface AttemptOutcome {
  readonly decision: AttemptDecision;
  /**
   * The job's next attempt, or undefined when the job is finished. `recipients` hold only those
   * still to deliver; `attempts` counts this attempt.
   */
  readonly next:
    | {
        readonly recipients: readonly RecipientState[];
        readonly at: Date;
        readonly attempts: number;
        readonly delayNotified: boolean;
      }
    | undefined;
  /** Queue ids of the bounces and delay notices this attempt enqueued. */
  readonly notices: readonly string[];
  /** What delivery reported (hop, remote MTA), and when the attempt started: for the message's timeline. */
  readonly report: DeliveryReport;
  readonly startedAt: number;
}

/** Stands in for every recipient when `deliver` throws: a bug or an outage is a temporary failure, never a loss. */
export const LOCAL_ERROR_REPLY: SmtpReply = {
  code: 451,
  enhanced: '4.3.0',
  text: 'Local delivery error, will retry',
};

/**
 * Runs `deliver` on `job` and carries out the decision: fires the delivered, deferred and
 * bounced hooks, enqueues bounces and delay notices through `store`, and returns what the backend
 * must persist. Never throws for delivery failures; a notice that cannot be enqueued keeps its
 * recipients in the job, to be tried (and bounced) again, rather than losing the bounce.
 */
export async function runDeliveryAttempt(
  job: DeliveryJob,
  deliver: Deliver,
  store: AttemptStore,
  settings: AttemptSettings,
): Promise<AttemptOutcome> {
  // One host for the whole attempt, held until it ends: a reload meanwhile changes the next one.
  const plugins = typeof settings.plugins === 'function' ? settings.plugins() : settings.plugins;
  const release = plugins?.retain();
  try {
    return await attemptWith(job, deliver, store, settings, plugins);
  } finally {
    release?.();
  }
}

async function attemptWith(
  job: DeliveryJob,
  deliver: Deliver,
  store: AttemptStore,
  settings: AttemptSettings,
  plugins: PluginHost | undefined,
): Promise<AttemptOutcome> {
  const log = settings.logger.child({ queueId: job.queueId, jobId: job.id, domain: job.domain });
  const started = settings.now();
  let report: DeliveryReport;
  try {
    report = await deliver(job, () => store.openMessage(), plugins ? { plugins } : {});
    if (!report || !Array.isArray(report.recipients))
      throw new TypeError('deliver returned no recipients list');
  } catch (error) {
    log.error({ err: error, attempt: job.attempts + 1 }, 'delivery attempt threw; deferring every recipient');
    report = {
      recipients: job.recipients.map((r) => ({
        address: r.address,
        result: 'deferred',
        reply: LOCAL_ERROR_REPLY,
      })),
    };
  }

  const now = settings.now();
  const decision = decideAttempt(job, report, settings.schedule, now);
  const hookBase = { queueId: job.queueId, envelope: job.envelope, attempt: job.attempts };

  if (decision.delivered.length > 0) {
    log.info({ recipients: decision.delivered.map((d) => d.recipient.address) }, 'delivered');
    await plugins?.runObserve('delivered', {
      ...hookBase,
      hop: report.hop ?? { type: 'mx', domain: job.domain },
      remoteMta: report.remoteMta ?? '',
      results: decision.delivered.map(result),
    });
  }

  let retryAt = decision.retryAt;
  if (retryAt !== undefined) {
    const advice = await plugins?.runAdvise('deferred', {
      ...hookBase,
      results: decision.deferred.map(result),
      nextAttemptAt: retryAt,
    });
    // A plugin may move the retry, but not into a hot loop.
    if (advice?.retryAt instanceof Date) retryAt = settings.schedule.clamp(advice.retryAt, now);
    log.info(
      { recipients: decision.deferred.map((d) => d.recipient.address), retryAt: retryAt.toISOString() },
      'deferred',
    );
  }

  const notices: string[] = [];
  const unbounced: RecipientState[] = [];
  for (const reason of ['permanent', 'expired'] as const) {
    const group = decision.failed.filter((f) => f.reason === reason);
    if (group.length === 0) continue;
    const advice = await plugins?.runAdvise('bounced', { ...hookBase, results: group.map(result), reason });
    const notify = group.filter((f) => f.notify);
    const fields = { recipients: group.map((f) => f.recipient.address), reason };
    if (job.isBounce) {
      log.warn(fields, 'a bounce we generated could not be delivered; dropped');
      continue;
    }
    if (decision.notifyTo === undefined || notify.length === 0 || advice?.suppress) {
      log.info({ ...fields, suppressed: advice?.suppress === true }, 'failed; no bounce sent');
      continue;
    }
    const to = advice?.redirectTo ?? decision.notifyTo;
    try {
      notices.push(await sendNotice(job, 'bounce', to, notify.map(failedLine), store, settings, started));
      log.info({ ...fields, to }, 'bounced');
    } catch (error) {
      // Without its bounce, a failure would be silent: keep these recipients and decide again later.
      log.error({ err: error, ...fields }, 'could not enqueue the bounce; keeping the recipients for later');
      for (const f of group) unbounced.push({ ...f.recipient, status: 'pending' });
    }
  }

  let delayNotified = job.delayNotified === true;
  if (decision.delayNotice.length > 0 && decision.notifyTo !== undefined) {
    const lines = decision.delayNotice.map((d): DsnRecipient => ({ ...d, action: 'delayed' }));
    try {
      notices.push(await sendNotice(job, 'delay', decision.notifyTo, lines, store, settings, started));
      delayNotified = true;
    } catch (error) {
      log.error({ err: error }, 'could not enqueue the delay notice; will try at the next attempt');
    }
  }

  const remaining = [...decision.deferred.map((d) => d.recipient), ...unbounced];
  if (remaining.length === 0) return { decision, next: undefined, notices, report, startedAt: started };
  const at = retryAt ?? new Date(now + settings.schedule.delayAfter(job.attempts + 1));
  return {
    decision,
    next: { recipients: remaining, at, attempts: job.attempts + 1, delayNotified },
    notices,
    report,
    startedAt: started,
  };
}

function result(settled: SettledRecipient): RecipientResult {
  return { recipient: settled.recipient, reply: settled.reply };
}

function failedLine(f: FailedRecipient): DsnRecipient {
  return { recipient: f.recipient, reply: f.reply, reason: f.reason, action: 'failed' };
}

async function sendNotice(
  job: DeliveryJob,
  kind: 'bounce' | 'delay',
  to: string,
  recipients: readonly DsnRecipient[],
  store: AttemptStore,
  settings: AttemptSettings,
  attemptedAt: number,
): Promise<string> {
  const notice = buildDsn(
    {
      kind,
      to,
      queueId: job.queueId,
      envelope: job.envelope,
      arrivalDate: new Date(job.createdAt),
      lastAttemptAt: new Date(attemptedAt),
      willRetryUntil: settings.schedule.expiresAt(job.createdAt),
      recipients,
      originalHeaders: await store.readHeaders(),
    },
    { reportingMta: settings.hostname, now: new Date(settings.now()) },
  );
  return store.enqueue(notice);
}
