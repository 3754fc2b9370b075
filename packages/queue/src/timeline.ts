// Shared by every backend: what a message's timeline records (intake verdicts, delivery attempts,
// operators' actions) and how those records are made, so both backends store the same thing.
import type { BounceCategory, NextHop } from '@tern/plugin-api';
import type { AttemptOutcome } from './attempt.js';
import type { DeliveryJob, DeliveryReport, DeliveryTls, IncomingMessage, ShapingNote } from './contract.js';
import type { SettledRecipient } from './decide.js';

/** The message was made durable: who sent it, from where, to whom. */
export interface ReceivedEvent {
  readonly type: 'received';
  readonly at: number;
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly size: number;
  readonly messageId?: string;
  readonly listener?: string;
  readonly remoteAddress?: string;
  readonly helo?: string;
  readonly user?: string;
  readonly sessionId?: string;
  /** A notice (bounce, delay DSN) this MTA generated. */
  readonly isBounce?: boolean;
  /** Held on arrival (a plugin's quarantine), with the plugin's reason. */
  readonly hold?: string;
  /** The message's tags (the envelope's), and the API key that injected it. */
  readonly tags?: readonly string[];
  readonly apiKey?: string;
}

/** One plugin hook's verdict at intake (from the plugin host's hook events). */
export interface HookVerdictEvent {
  readonly type: 'hook';
  readonly at: number;
  readonly plugin: string;
  readonly hook: string;
  /** `continue`, `accept`, `reject`, `tempfail`, `disconnect`, `ok` (transform/observe), `error` or `timeout`. */
  readonly outcome: string;
  readonly code?: number;
  readonly enhanced?: string;
  readonly text?: string;
  readonly durationMs: number;
}

/** One recipient's result in one attempt. */
export interface AttemptRecipient {
  readonly address: string;
  /** `expired`: still deferred when the message outlived the retry schedule (bounced as 5.4.7). */
  readonly result: 'delivered' | 'deferred' | 'failed' | 'expired';
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
  /** Not delivered: why, as the bounce classifier sorted the reply. */
  readonly category?: BounceCategory;
}

/** One delivery attempt of one job. */
export interface AttemptEvent {
  readonly type: 'attempt';
  readonly at: number;
  readonly jobId: string;
  readonly domain: string;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly durationMs: number;
  /** Where delivery went (SMTP AUTH passwords removed). */
  readonly hop?: NextHop;
  /** `name[address]:port` of the server that answered. */
  readonly remoteMta?: string;
  /** Which TLS policy applied, whether the server was validated, and why not (SMTP hops). */
  readonly tls?: DeliveryTls;
  /** The egress source the connection was made from (with egress pools configured). */
  readonly source?: string;
  readonly recipients: readonly AttemptRecipient[];
  /** When the deferred recipients are tried again. */
  readonly nextAttemptAt?: number;
  /** Queue ids of the notices this attempt sent: bounces, delay and success notices. */
  readonly notices: readonly string[];
}

export type OperatorAction =
  | 'hold'
  | 'release'
  | 'retry'
  | 'delete'
  | 'bounce'
  | 'reroute'
  | 'suspend'
  | 'resume';

/** An operator acted on the message (through the admin API or the CLI). */
export interface OperatorEvent {
  readonly type: 'operator';
  readonly at: number;
  readonly action: OperatorAction;
  /** The job's domain, when the action was for one job only. */
  readonly domain?: string;
  readonly detail?: string;
  /** The queue id of the bounce an operator's `bounce` sent. */
  readonly notice?: string;
}

/** A traffic-shaping action concerned the message: its reply set one off, or it waited for one. */
export interface ShapingEvent extends Omit<ShapingNote, 'reply'> {
  readonly type: 'shaping';
  readonly at: number;
  readonly jobId: string;
  readonly domain: string;
  /** The reply that set the action off. */
  readonly code?: number;
  readonly enhanced?: string;
  readonly text?: string;
}

/**
 * A delivery status notification (RFC 3464) that came back later, to the message's signed return
 * path (VERP), about one recipient: the receiving side took the message, then could not deliver it.
 */
export interface AsyncBounceEvent {
  readonly type: 'async-bounce';
  readonly at: number;
  readonly recipient: string;
  /** The DSN's Action: `failed`, `delayed`, `delivered`, `relayed` or `expanded`; `unknown` without one. */
  readonly action: string;
  /** The DSN's Status (an RFC 3463 code), when it had a valid one. */
  readonly status?: string;
  /** The DSN's Diagnostic-Code text, or the report's text for a bounce that is not a DSN. */
  readonly diagnostic?: string;
  /** The DSN's Reporting-MTA (or Remote-MTA). */
  readonly reportingMta?: string;
  /** Why, as the bounce classifier sorted status and diagnostic. */
  readonly category?: BounceCategory;
  /** `dsn` (RFC 3464) or `plain` (a non-standard bounce matched by its VERP address alone). */
  readonly format: 'dsn' | 'plain';
  /** The queue id of the report as it arrived here. */
  readonly report?: string;
}

/** A feedback-loop report (ARF, RFC 5965): a recipient marked the message as spam (or another type). */
export interface ComplaintEvent {
  readonly type: 'complaint';
  readonly at: number;
  readonly recipient: string;
  /** The report's Feedback-Type: `abuse`, `fraud`, `virus`, `other`, `not-spam`, `auth-failure`. */
  readonly feedbackType: string;
  /** Who sent the report (its User-Agent field, e.g. `Yahoo!-Mail-Feedback/2.0`). */
  readonly userAgent?: string;
  /** The queue id of the report as it arrived here. */
  readonly report?: string;
}

export type TimelineEvent =
  | ReceivedEvent
  | HookVerdictEvent
  | AttemptEvent
  | OperatorEvent
  | ShapingEvent
  | AsyncBounceEvent
  | ComplaintEvent;

/** How long a finished message's timeline stays retrievable (default 7 days). */
export const DEFAULT_TIMELINE_RETENTION_MS = 7 * 24 * 3600_000;

// Remote servers' texts are not ours to trust with unlimited space.
const MAX_TEXT = 500;

/** A remote server's text as we keep it (timeline, log lines): at most MAX_TEXT characters. */
export function clip(text: string): string {
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text;
}

/** The first event of every timeline. */
export function receivedEvent(message: IncomingMessage): ReceivedEvent {
  const source = message.source ?? {};
  return {
    type: 'received',
    at: message.receivedAt,
    mailFrom: message.envelope.mailFrom,
    recipients: message.envelope.recipients.map((r) => r.address),
    size: message.content.size,
    ...(message.messageId === undefined ? {} : { messageId: message.messageId }),
    ...(source.listener === undefined ? {} : { listener: source.listener }),
    ...(source.remoteAddress === undefined ? {} : { remoteAddress: source.remoteAddress }),
    ...(source.helo === undefined ? {} : { helo: source.helo }),
    ...(source.user === undefined ? {} : { user: source.user }),
    ...(source.sessionId === undefined ? {} : { sessionId: source.sessionId }),
    ...(message.isBounce ? { isBounce: true } : {}),
    ...(message.hold === undefined ? {} : { hold: message.hold }),
    ...(message.envelope.tags?.length ? { tags: message.envelope.tags } : {}),
    ...(message.envelope.apiKey === undefined ? {} : { apiKey: message.envelope.apiKey }),
  };
}

/** The events a new message starts its timeline with: received, then the intake verdicts it carried. */
export function initialTimeline(message: IncomingMessage): TimelineEvent[] {
  return [receivedEvent(message), ...(message.timeline ?? [])];
}

/** A next hop as the timeline shows it: without the smarthost password. */
export function redactHop(hop: NextHop): NextHop {
  if (hop.type !== 'smtp' || hop.auth === undefined) return hop;
  return { ...hop, auth: { user: hop.auth.user, pass: '(redacted)' } };
}

/** The timeline record of one attempt, from what the shared attempt step returned. */
export function attemptEvent(job: DeliveryJob, outcome: AttemptOutcome, now: number): AttemptEvent {
  const { decision, report } = outcome;
  const line = (
    address: string,
    result: AttemptRecipient['result'],
    settled: SettledRecipient,
  ): AttemptRecipient => ({
    address,
    result,
    code: settled.reply.code,
    enhanced: settled.reply.enhanced,
    text: clip(settled.reply.text),
    ...(settled.category === undefined ? {} : { category: settled.category }),
  });
  return {
    type: 'attempt',
    at: outcome.startedAt,
    jobId: job.id,
    domain: job.domain,
    attempt: job.attempts + 1,
    durationMs: Math.max(0, now - outcome.startedAt),
    ...(report.hop === undefined ? {} : { hop: redactHop(report.hop) }),
    ...(report.remoteMta === undefined ? {} : { remoteMta: report.remoteMta }),
    ...(report.tls === undefined
      ? {}
      : { tls: { ...report.tls, ...(report.tls.reason ? { reason: clip(report.tls.reason) } : {}) } }),
    ...(report.source === undefined ? {} : { source: report.source }),
    recipients: [
      ...decision.delivered.map((d) => line(d.recipient.address, 'delivered', d)),
      ...decision.deferred.map((d) => line(d.recipient.address, 'deferred', d)),
      ...decision.failed.map((f) =>
        line(f.recipient.address, f.reason === 'expired' ? 'expired' : 'failed', f),
      ),
    ],
    ...(outcome.next === undefined ? {} : { nextAttemptAt: outcome.next.at.getTime() }),
    notices: outcome.notices,
  };
}

/** The timeline records of the shaping actions a report carries (none for most attempts). */
export function shapingEvents(job: DeliveryJob, report: DeliveryReport, now: number): ShapingEvent[] {
  return (report.shaping ?? []).map((note) => ({
    type: 'shaping',
    at: now,
    jobId: job.id,
    domain: job.domain,
    cause: note.cause,
    rule: note.rule,
    action: note.action,
    source: note.source,
    destination: note.destination,
    until: note.until,
    ...(note.detail === undefined ? {} : { detail: note.detail }),
    ...(note.reply === undefined
      ? {}
      : { code: note.reply.code, enhanced: note.reply.enhanced, text: clip(note.reply.text) }),
  }));
}

/** Parses a stored event; a record that is not one (a newer Tern's, a damaged one) is skipped by callers. */
export function parseTimelineEvent(text: string): TimelineEvent | undefined {
  try {
    const value = JSON.parse(text) as { type?: unknown; at?: unknown };
    if (typeof value?.type !== 'string' || typeof value.at !== 'number') return undefined;
    return value as TimelineEvent;
  } catch {
    return undefined;
  }
}
