// Shared by every backend: runs one delivery attempt of one job end to end (deliver, decide,
// hooks, bounces, delay notices). Backends only fetch the job and persist the AttemptOutcome.
import { hostname as osHostname } from 'node:os';
import type { Readable } from 'node:stream';
import { type Logger, lazyChild, type RecipientResult, type SmtpReply, silentLogger } from '@tern/plugin-api';
import { type HookInput, type PluginHost, readStream, SourceTooLargeError } from '@tern/plugin-api/host';
import { type BounceClassifier, defaultBounceClassifier } from './bounce-classifier.js';
import type {
  Deliver,
  DeliveryJob,
  DeliveryReport,
  IncomingMessage,
  LimitWait,
  OutcomeObserver,
  RecipientState,
  WorkerOptions,
} from './contract.js';
import {
  type AttemptDecision,
  decideAttempt,
  type FailedRecipient,
  type SettledRecipient,
} from './decide.js';
import { buildDsn, type DsnRecipient, RETURN_FULL_LIMIT, returnsFullMessage } from './dsn.js';
import { RetrySchedule } from './retry.js';
import { clip } from './timeline.js';

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
  readonly classifier: () => BounceClassifier;
  readonly prepareNotice: ((notice: IncomingMessage) => Promise<IncomingMessage>) | undefined;
  readonly observer: OutcomeObserver | undefined;
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
    classifier: classifierOf(options.classifier),
    prepareNotice: options.prepareNotice,
    observer: options.observer,
    now,
  };
}

function classifierOf(option: WorkerOptions['classifier']): () => BounceClassifier {
  if (typeof option === 'function') return option;
  const classifier = option ?? defaultBounceClassifier;
  return () => classifier;
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
  /**
   * Set when a limit of ours refused the job before any connection: no attempt was made. Then
   * `decision` is empty and `next` is the job as it was (attempts, delay notice and recipients
   * untouched) at the time the limit has room; the backend puts it back without recording an
   * attempt and paces its domain.
   */
  readonly waiting?: LimitWait;
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
  // Made only if a record is written: a pino child per message costs microseconds at any level.
  const log = lazyChild(settings.logger, { queueId: job.queueId, jobId: job.id, domain: job.domain });
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
  // Waiting for a limit is not an attempt; but a message that waited past its lifetime is
  // decided like any other, so a destination that never has room still ends in a bounce.
  if (report.wait !== undefined && now < settings.schedule.expiresAt(job.createdAt).getTime()) {
    log.debug({ limit: report.wait.key, retryAfterMs: report.wait.retryAfterMs }, 'waiting for a limit');
    return {
      decision: {
        delivered: [],
        failed: [],
        deferred: [],
        retryAt: undefined,
        delayNotice: [],
        successNotice: [],
        successAction: 'relayed',
        notifyTo: undefined,
        done: false,
      },
      next: {
        recipients: job.recipients,
        at: new Date(now + waitMs(report.wait.retryAfterMs)),
        attempts: job.attempts,
        delayNotified: job.delayNotified === true,
      },
      notices: [],
      report,
      startedAt: started,
      waiting: report.wait,
    };
  }
  const decision = decideAttempt(job, report, settings.schedule, now, settings.classifier());
  const hookBase = { queueId: job.queueId, envelope: job.envelope, attempt: job.attempts };

  const line = recipientLine(job, report, started, now);
  if (decision.delivered.length > 0) {
    for (const d of decision.delivered) log.info(line(d), 'delivered');
    const delivered: HookInput<'delivered'> = {
      ...hookBase,
      hop: report.hop ?? { type: 'mx', domain: job.domain },
      remoteMta: report.remoteMta ?? '',
      results: decision.delivered.map(result),
    };
    tell(settings.observer, log, (observer) => observer.delivered(delivered));
    // No plugin observes deliveries (the usual case): no hook run, no promise to wait for.
    if (plugins?.has('delivered')) await plugins.runObserve('delivered', delivered);
  }

  const notices: string[] = [];
  if (decision.successNotice.length > 0 && decision.notifyTo !== undefined) {
    const action = decision.successAction;
    const lines = decision.successNotice.map((d): DsnRecipient => ({ ...d, action }));
    try {
      const notice = await sendNotice(job, 'success', decision.notifyTo, lines, store, settings, started);
      notices.push(notice);
      log.info({ notice, action, recipients: lines.map((l) => l.recipient.address) }, 'success notice sent');
    } catch (error) {
      // The recipients are delivered either way; only the report the sender asked for is lost.
      log.error({ err: error }, 'could not enqueue the success notice (NOTIFY=SUCCESS); none will be sent');
    }
  }

  let retryAt = decision.retryAt;
  if (retryAt !== undefined) {
    const deferred: HookInput<'deferred'> = {
      ...hookBase,
      results: decision.deferred.map(result),
      nextAttemptAt: retryAt,
    };
    tell(settings.observer, log, (observer) => observer.deferred(deferred));
    const advice = await plugins?.runAdvise('deferred', deferred);
    // A plugin may move the retry, but not into a hot loop.
    if (advice?.retryAt instanceof Date) retryAt = settings.schedule.clamp(advice.retryAt, now);
    for (const d of decision.deferred) log.info({ ...line(d), retryAt: retryAt.toISOString() }, 'deferred');
  }

  const unbounced: RecipientState[] = [];
  for (const reason of ['permanent', 'expired'] as const) {
    const group = decision.failed.filter((f) => f.reason === reason);
    if (group.length === 0) continue;
    const bouncedInput: HookInput<'bounced'> = { ...hookBase, results: group.map(result), reason };
    tell(settings.observer, log, (observer) => observer.bounced(bouncedInput));
    const advice = await plugins?.runAdvise('bounced', bouncedInput);
    const notify = group.filter((f) => f.notify);
    // One `bounced` line per recipient, naming the notice that tells the sender, or why none does.
    const bounced = (f: FailedRecipient, notice: Record<string, string>): void =>
      log.info({ ...line(f), reason, ...notice }, 'bounced');
    if (job.isBounce) {
      // A notice of ours that cannot be delivered is dropped (never bounced: that is how loops start).
      log.warn(
        { recipients: group.map((f) => f.recipient.address), reason },
        'a bounce we generated could not be delivered; dropped',
      );
      for (const f of group) bounced(f, { notice: 'none', noticeSkipped: 'a bounce we generated' });
      continue;
    }
    const notifyTo = decision.notifyTo;
    const skipped =
      notifyTo === undefined
        ? 'null sender'
        : advice?.suppress
          ? 'suppressed by a plugin'
          : notify.length === 0
            ? NOT_REQUESTED
            : undefined;
    if (notifyTo === undefined || skipped !== undefined) {
      for (const f of group) bounced(f, { notice: 'none', noticeSkipped: skipped ?? NOT_REQUESTED });
      continue;
    }
    const to = advice?.redirectTo ?? notifyTo;
    try {
      const notice = await sendNotice(job, 'bounce', to, notify.map(failedLine), store, settings, started);
      notices.push(notice);
      for (const f of group) {
        bounced(f, f.notify ? { notice, bounceTo: to } : { notice: 'none', noticeSkipped: NOT_REQUESTED });
      }
    } catch (error) {
      // Without its bounce, a failure would be silent: keep these recipients and decide again later.
      log.error(
        { err: error, recipients: group.map((f) => f.recipient.address), reason },
        'could not enqueue the bounce; keeping the recipients for later',
      );
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

/** A limit's wait as a time to add: a limit that can never pass (Infinity) is looked at again in a minute. */
function waitMs(retryAfterMs: number): number {
  return Number.isFinite(retryAfterMs) ? Math.max(0, retryAfterMs) : 60_000;
}

/** Why a failed recipient's sender gets no bounce when its NOTIFY (RFC 3461) did not ask for one. */
const NOT_REQUESTED = 'not requested (NOTIFY)';

/**
 * The fields of a per-recipient `delivered`, `deferred` or `bounced` line: what Postfix puts on its
 * line, under the names the rest of the log uses. `delay` is seconds since the message was received;
 * `delays` is Postfix's a/b/c/d in seconds: waiting in the queue before this attempt, this attempt
 * before connecting (routing, hooks, limits), session set-up (DNS, connect, greeting, TLS, AUTH),
 * and the transaction.
 */
function recipientLine(
  job: DeliveryJob,
  report: DeliveryReport,
  started: number,
  ended: number,
): (settled: SettledRecipient) => Record<string, unknown> {
  const connect = durationOf(report.connectMs);
  const transfer = durationOf(report.transferMs);
  const shared = {
    attempt: job.attempts + 1,
    remoteMta: report.remoteMta ?? 'none',
    ...(report.source === undefined ? {} : { source: report.source }),
    tls: report.tls?.protocol ?? 'none',
    ...(report.tls?.cipher === undefined ? {} : { tlsCipher: report.tls.cipher }),
    ...(report.tls === undefined
      ? {}
      : { tlsPolicy: report.tls.applied, tlsValidated: report.tls.validated }),
    delay: Number(postfixSeconds(ended - job.createdAt)),
    delays: [started - job.createdAt, ended - started - connect - transfer, connect, transfer]
      .map(postfixSeconds)
      .join('/'),
  };
  return (settled) => ({
    recipient: settled.recipient.address,
    ...shared,
    code: settled.reply.code,
    enhanced: settled.reply.enhanced,
    ...(settled.category === undefined ? {} : { category: settled.category }),
    text: clip(settled.reply.text),
  });
}

/** A duration a deliverer reported, or 0 when it reported none (or nonsense). */
function durationOf(ms: number | undefined): number {
  return ms !== undefined && Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/** Milliseconds as Postfix writes seconds in `delay=` and `delays=`: two decimals below 1 s, one below 10 s, then whole. */
function postfixSeconds(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s >= 10) return String(Math.round(s));
  return String(Number(s.toFixed(s >= 1 ? 1 : 2)));
}

function result(settled: SettledRecipient): RecipientResult {
  return {
    recipient: settled.recipient,
    reply: settled.reply,
    ...(settled.category === undefined ? {} : { category: settled.category }),
  };
}

function failedLine(f: FailedRecipient): DsnRecipient {
  return { recipient: f.recipient, reply: f.reply, reason: f.reason, action: 'failed', category: f.category };
}

async function sendNotice(
  job: DeliveryJob,
  kind: 'bounce' | 'delay' | 'success',
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
      ...(kind === 'bounce' && returnsFullMessage(job.envelope)
        ? await wholeMessage(job, store, settings.logger)
        : {}),
    },
    { reportingMta: settings.hostname, now: new Date(settings.now()) },
  );
  return store.enqueue(await prepared(notice, settings, job));
}

/** The notice as the MTA's notice hooks leave it; as built when they fail. */
async function prepared(
  notice: IncomingMessage,
  settings: AttemptSettings,
  job: DeliveryJob,
): Promise<IncomingMessage> {
  if (!settings.prepareNotice) return notice;
  try {
    return await settings.prepareNotice(notice);
  } catch (error) {
    settings.logger.warn(
      { err: error, queueId: job.queueId },
      'notice hooks failed; queueing the notice as built',
    );
    return notice;
  }
}

/** The message a RET=FULL bounce returns, when it is small enough; otherwise the bounce carries headers only. */
async function wholeMessage(
  job: DeliveryJob,
  store: AttemptStore,
  logger: Logger,
): Promise<{ originalMessage?: Buffer }> {
  if (job.size !== undefined && job.size > RETURN_FULL_LIMIT) return {};
  try {
    return { originalMessage: await readStream(await store.openMessage(), RETURN_FULL_LIMIT) };
  } catch (error) {
    if (!(error instanceof SourceTooLargeError)) {
      logger.warn({ err: error, queueId: job.queueId }, 'could not read the message for a RET=FULL bounce');
    }
    return {};
  }
}

/** Tells the worker's OutcomeObserver, if it has one; a throw there is logged, never the attempt's end. */
function tell(
  observer: OutcomeObserver | undefined,
  log: Logger,
  call: (observer: OutcomeObserver) => void,
): void {
  if (observer === undefined) return;
  try {
    call(observer);
  } catch (error) {
    log.error({ err: error }, 'outcome observer threw');
  }
}
