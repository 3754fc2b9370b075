// The queue contract: what intake hands over, what a delivery job is, what delivery reports
// back, and what every backend (Redis/BullMQ, embedded SQLite) must do with it.
import type { Readable } from 'node:stream';
import type { Envelope, EnvelopeRecipient, Logger, NextHop, SmtpReply } from '@tern/plugin-api';
import type { AcceptedMessage, HookInput, PluginHost } from '@tern/plugin-api/host';
import type { BounceClassifier } from './bounce-classifier.js';
import type { IdempotencyStore } from './idempotency.js';
import type { RetrySchedule, RetryScheduleOptions } from './retry.js';
import type { SuppressionStore } from './suppression.js';
import type { TimelineEvent } from './timeline.js';
import type { TlsStore } from './tls-store.js';
import type { EnqueueOptions, WebhookOutbox } from './webhook-outbox.js';

/**
 * What the queue takes: what intake hands over (plugin-api's AcceptedMessage, which core builds),
 * plus what only the queue's own producers set.
 */
export interface IncomingMessage extends AcceptedMessage {
  /** A notice (bounce, delay DSN) this MTA generated: its jobs get `isBounce`, so it is never bounced itself. */
  readonly isBounce?: boolean;
  /**
   * Intake events to store as the start of the message's timeline (the plugin verdicts of its
   * SMTP session), written in the same durable step as the message. Optional: added by apps/mta.
   */
  readonly timeline?: readonly TimelineEvent[];
}

export type RecipientStatus = 'pending' | 'delivered' | 'failed';

export interface RecipientState extends EnvelopeRecipient {
  status: RecipientStatus;
  /** The last reply for this recipient, if any attempt reached one. */
  lastReply?: SmtpReply;
  remoteMta?: string;
}

/** One delivery job: one message towards one next hop (grouped by recipient domain at enqueue). */
export interface DeliveryJob {
  /** Stable job id (unique per queueId + domain). */
  readonly id: string;
  /** The message's queue id, as given in `250 2.0.0 queued as <id>`. */
  readonly queueId: string;
  /** The recipient domain this job delivers to (the routing key). */
  readonly domain: string;
  readonly envelope: Envelope;
  /** Recipients still to deliver in this job (already delivered ones are never here). */
  readonly recipients: readonly RecipientState[];
  /** Attempts made before this one. */
  readonly attempts: number;
  /** When the message was accepted (ms since epoch); the retry schedule's lifetime counts from here. */
  readonly createdAt: number;
  /** This job carries a bounce (DSN) we generated: its failures are logged and dropped, never bounced. */
  readonly isBounce: boolean;
  /** A delay notice was already sent for this job. */
  readonly delayNotified?: boolean;
  /** An operator's reroute: deliver through this hop instead of routing the domain. */
  readonly nextHop?: NextHop;
  /** Bytes of the stored message (headers, empty line, body), when the backend knows them. */
  readonly size?: number;
  /**
   * Whether a byte of the message has the high bit set (so it needs 8BITMIME onward), when known
   * from intake; undefined means delivery must find out itself.
   */
  readonly eightBit?: boolean;
}

export type AttemptResult = 'delivered' | 'deferred' | 'failed';

/** What happened to one recipient in one attempt. */
export interface RecipientOutcome {
  readonly address: string;
  readonly result: AttemptResult;
  readonly reply: SmtpReply;
}

/**
 * Outbound TLS policy levels (as Postfix's smtp_tls_security_level): `none` never TLS; `may`
 * opportunistic; `encrypt` TLS required, not authenticated; `verify` TLS with a certificate that chains
 * to a trusted CA and names the MX host; `secure` the same, naming the recipient domain; `dane` DANE
 * where the MX host has secure TLSA records, else as `mta-sts`; `dane-only` DANE or nothing;
 * `mta-sts` the domain's MTA-STS policy where it has one, else `may`.
 */
export type TlsPolicyLevel =
  | 'none'
  | 'may'
  | 'encrypt'
  | 'verify'
  | 'secure'
  | 'dane'
  | 'dane-only'
  | 'mta-sts';

/** What a policy level became for the host used: `dane` and the MTA-STS modes only where they applied. */
export type AppliedTlsPolicy =
  | 'none'
  | 'may'
  | 'encrypt'
  | 'verify'
  | 'secure'
  | 'dane'
  | 'mta-sts-enforce'
  | 'mta-sts-testing';

/** How TLS went for one attempt, for timelines and logs. */
export interface DeliveryTls {
  /** The level configured for the destination (policy table, next hop or default). */
  readonly policy: TlsPolicyLevel;
  /** What it became for the host the attempt ended with. */
  readonly applied: AppliedTlsPolicy;
  /** The connection ran under TLS. */
  readonly tls: boolean;
  /** The server was authenticated (PKIX or DANE). */
  readonly validated: boolean;
  /** Why it was not validated, why no server was used, or what the validation does not prove. */
  readonly reason?: string;
  /** The TLS protocol and cipher of the session that carried the transaction. */
  readonly protocol?: string;
  readonly cipher?: string;
}

/**
 * What delivery reports for one attempt of one job. Only `recipients` is required: the rest is what
 * a deliverer knows of the attempt, for the delivery log lines, DSNs and the timeline.
 */
export interface DeliveryReport {
  readonly recipients: readonly RecipientOutcome[];
  readonly hop?: NextHop;
  /** `name[address]:port` of the server that answered (the address used), for DSN Remote-MTA, logs and the timeline. */
  readonly remoteMta?: string;
  /** The outbound TLS policy and its outcome, with the session's protocol and cipher (SMTP hops; absent for LMTP and maildir). */
  readonly tls?: DeliveryTls;
  /**
   * Time spent setting up the session, in ms: DNS lookups, TCP connect, greeting, EHLO, STARTTLS,
   * AUTH, over every address tried (Postfix's `delays` c). Near 0 when a pooled connection was reused.
   */
  readonly connectMs?: number;
  /** Time spent in the transaction, in ms: MAIL FROM to the reply after the final dot (Postfix's `delays` d). */
  readonly transferMs?: number;
  /**
   * Who tells senders that asked (NOTIFY=SUCCESS, RFC 3461 §5.2) of the recipients delivered in this
   * attempt: `delivered` the message reached its mailbox (LMTP, maildir), so our notice says
   * delivered; `relayed` the next hop did not offer DSN, so our notice says relayed; `next-hop` the
   * next hop took the DSN request with the message and reports itself (no notice from us).
   * Absent: `relayed`, the most a deliverer that does not say can claim.
   */
  readonly successNotice?: 'delivered' | 'relayed' | 'next-hop';
  /**
   * Set when a limit of ours refused the job before any connection: the queue then ignores the
   * recipients' outcomes (deferred placeholders) and waits for the limit instead of counting an attempt.
   */
  readonly wait?: LimitWait;
  /** Traffic-shaping actions this attempt set off or waited for (for the timeline). */
  readonly shaping?: readonly ShapingNote[];
  /** The egress source the connection was made from, when egress pools are configured. */
  readonly source?: string;
}

/**
 * A limit of ours refused the job before any connection was made: not an attempt. The queue puts the
 * job back, unchanged, and lets jobs of its domain through again at the limit's pace (KumoMTA
 * re-inserts a throttled message into its scheduled queue "with a delay based on the acceptance
 * rate of the throttle"), so a backlog drains at the limit instead of going to the retry schedule.
 */
export interface LimitWait {
  /** The limit that refused, e.g. `domain:example.com` (for logs). */
  readonly key: string;
  /** How long until the limit has room again (ms, at least 0). */
  readonly retryAfterMs: number;
  /** The limit's pace: ms between two jobs it admits (0: it frees room in bursts, as a concurrency limit does). */
  readonly spacingMs: number;
  /** How many jobs it admits back to back once open. */
  readonly burst: number;
}

/**
 * A traffic-shaping action that concerned this job: a back-off rule its reply set off, or one in
 * force that made it wait. Goes into the message's timeline.
 */
export interface ShapingNote {
  /**
   * `triggered`: this job's reply set the action off (or extended it); `waiting`: the job waits for
   * it; `applied`: the job went another way for it (another egress pool).
   */
  readonly cause: 'triggered' | 'waiting' | 'applied';
  readonly rule: string;
  /** suspend, rate, connections, pool or circuit. */
  readonly action: string;
  /** The egress source (`default` without pools; `*` for every source). */
  readonly source: string;
  /** The recipient domain or provider the action is on. */
  readonly destination: string;
  /** When the action ends unless extended (ms since epoch). */
  readonly until: number;
  readonly detail?: string;
  /** The reply that set it off. */
  readonly reply?: SmtpReply;
}

/** What the worker hands one delivery attempt besides the job. */
export interface DeliveryAttempt {
  /**
   * The plugin host of this attempt: its route and beforeSend hooks run here, as its delivered,
   * deferred and bounced hooks do, so one attempt never mixes the plugins of two configs.
   */
  readonly plugins?: PluginHost;
}

/**
 * The delivery function the queue calls for each due job (implemented by @tern/delivery).
 * `message()` opens the stored message as a stream. It must not throw for remote failures
 * (those are outcomes); a throw is treated as a temporary failure of every recipient.
 */
export type Deliver = (
  job: DeliveryJob,
  message: () => Promise<Readable>,
  attempt?: DeliveryAttempt,
) => Promise<DeliveryReport>;

/** Jobs one process delivers at once unless WorkerOptions.concurrency says otherwise. */
export const DEFAULT_WORKER_CONCURRENCY = 20;

export interface WorkerOptions {
  /** Jobs delivered at once by this process (default DEFAULT_WORKER_CONCURRENCY, 20). */
  readonly concurrency?: number;
  /**
   * Hooks for route, beforeSend, deferred/bounced advice and delivered events. A function is asked
   * at the start of each attempt (a reload swaps hosts); the attempt retains the host it got until
   * it ends, so a replaced host's plugins are shut down only after its last attempt.
   */
  readonly plugins?: PluginHost | (() => PluginHost);
  /** When to retry deferred recipients and when to give up (default: see RetrySchedule). */
  readonly retry?: RetrySchedule | RetryScheduleOptions;
  /** This MTA's host name, for the Reporting-MTA of bounces (default: os.hostname()). */
  readonly hostname?: string;
  readonly logger?: Logger;
  /**
   * Sorts failure replies into bounce categories (default: the shipped rules alone). A function is
   * asked at each attempt, so a reload can swap the rules.
   */
  readonly classifier?: BounceClassifier | (() => BounceClassifier);
  /**
   * Called with each notice this worker generates (bounce, delay and success DSNs) before it is
   * queued, to return the message to queue instead: the MTA runs its queue hooks here, so DKIM
   * signs notices (Postfix's internal_mail_filter_classes). When it throws, the notice is queued
   * as built and the error logged: a notice is never lost to a hook.
   */
  readonly prepareNotice?: (notice: IncomingMessage) => Promise<IncomingMessage>;
  /** The app's own bookkeeping of each attempt's outcome (see OutcomeObserver). */
  readonly observer?: OutcomeObserver;
}

/**
 * Told of each attempt's delivered, deferred and bounced recipients, with what those hooks get,
 * just before they run: the app's activity log, metrics and events, called directly instead of
 * through a plugin of its own (a hook call per delivered message: a context, a signal, an event,
 * promises). A throw is logged, never the attempt's end.
 */
export interface OutcomeObserver {
  delivered(outcome: HookInput<'delivered'>): void;
  deferred(outcome: HookInput<'deferred'>): void;
  bounced(outcome: HookInput<'bounced'>): void;
}

/** A message's state as operators and tests see it. */
export interface MessageRecord {
  readonly queueId: string;
  readonly envelope: Envelope;
  readonly createdAt: number;
  readonly messageId?: string;
  readonly jobs: readonly {
    readonly id: string;
    readonly domain: string;
    readonly state: 'scheduled' | 'active' | 'held' | 'done';
    readonly attempts: number;
    readonly nextAttemptAt?: number;
    readonly recipients: readonly RecipientState[];
  }[];
}

/** Whether a backend's store takes writes: for a log line per change, a metric, readiness and the dashboard. */
export interface QueueHealth {
  /**
   * New mail can be made durable and attempts recorded. False from the first write the store
   * refused (disk full, I/O error, Redis unreachable or out of memory) until a probe write works.
   */
  readonly writable: boolean;
  /** Since when (ms since epoch) the store has been in this state. */
  readonly since: number;
  /** The last write error, kept after recovery so operators see what happened (absent if none yet). */
  readonly lastError?: string;
  readonly lastErrorAt?: number;
}

/** Every backend implements this; one contract test suite runs against each. */
export interface QueueBackend {
  readonly kind: 'redis' | 'embedded';
  /** Where the data lives, for `tern start` to print (a Redis URL without password, or a file path). */
  readonly location: string;
  /**
   * Makes body, envelope and jobs durable, then resolves with the queue id. Rejects (the caller
   * answers 451 4.3.0) when durability cannot be had in time. `options.outbox`: webhook events
   * made durable in the same write (backends with a `webhookOutbox`).
   */
  enqueue(message: IncomingMessage, options?: EnqueueOptions): Promise<string>;
  /** Starts delivering due jobs with `deliver`. */
  startWorker(deliver: Deliver, options?: WorkerOptions): Promise<void>;
  /** Stops taking jobs, waits for running attempts, closes connections. */
  close(): Promise<void>;
  /**
   * The stored message as one buffer (null once every recipient is done and the body is
   * removed). For operators and tests: delivery streams with `openMessage`.
   */
  readMessage(queueId: string): Promise<Buffer | null>;
  /** The stored message as a stream read from the store in slices, or null when it is gone. */
  openMessage(queueId: string): Promise<Readable | null>;
  /** Whether the store takes writes now, since when, and its last write error. */
  health(): QueueHealth;
  /** Calls `listener` once at each change of `health()`; returns the function that stops it. */
  onHealthChange(listener: (health: QueueHealth) => void): () => void;
  /** A message's envelope and jobs, or null when unknown or finished. */
  inspect(queueId: string): Promise<MessageRecord | null>;
  /** Outbound TLS state every node shares: MTA-STS policies, TLS-RPT counters, report claims. */
  readonly tlsStore?: TlsStore;
  /** The suppression list kept in the same store (both backends have one; test doubles may not). */
  readonly suppressions?: SuppressionStore;
  /** Idempotency keys of HTTP injection, in the same store (both backends; test doubles may not). */
  readonly idempotency?: IdempotencyStore;
  /** Webhook events waiting per endpoint, in the same store (both backends; test doubles may not). */
  readonly webhookOutbox?: WebhookOutbox;
}

// ---- Operator operations ------------------------------------------------------------------------
// Additive to QueueBackend: what `tern queue ...` and the admin API do. Both backends implement it;
// `isQueueOperations` tells whether a backend does.

/** A job's state for list filters: `deferred` is a scheduled job that has failed at least once. */
export type JobStateFilter = 'scheduled' | 'deferred' | 'active' | 'held';

export interface QueueFilter {
  readonly state?: JobStateFilter;
  /** Recipient domain of the job (exact, case-insensitive). */
  readonly domain?: string;
  /** Part of the return path (case-insensitive); `<>` matches only the null sender. */
  readonly sender?: string;
  /** Part of any of the job's recipients (case-insensitive). */
  readonly recipient?: string;
  /** At most this many jobs (default 100, at most 1000). */
  readonly limit?: number;
  /** Where the previous page ended (its `cursor`). */
  readonly cursor?: string;
}

/** One unfinished job as operators list it. */
export interface QueuedJob {
  readonly queueId: string;
  readonly jobId: string;
  readonly domain: string;
  readonly state: 'scheduled' | 'active' | 'held';
  readonly attempts: number;
  readonly nextAttemptAt?: number;
  readonly mailFrom: string;
  readonly recipients: readonly RecipientState[];
  readonly createdAt: number;
  readonly messageId?: string;
  readonly size: number;
  /** Why the message was held on arrival (a plugin's quarantine), until it is released. */
  readonly holdReason?: string;
}

export interface QueuePage {
  /** Oldest first. */
  readonly jobs: readonly QueuedJob[];
  /** Pass as `cursor` for the next page; absent on the last page. */
  readonly cursor?: string;
}

export interface DestinationCounts {
  /** Unfinished jobs: scheduled + active + held. */
  readonly total: number;
  readonly scheduled: number;
  readonly active: number;
  readonly held: number;
  /** Jobs that failed at least once (in any state). */
  readonly deferred: number;
}

export interface DestinationSummary extends DestinationCounts {
  readonly domain: string;
  /** When the oldest unfinished message for this domain was accepted. */
  readonly oldestCreatedAt?: number;
  /** Suspended by an operator until then (ms since epoch). */
  readonly suspendedUntil?: number;
  /** An operator's reroute for every job of this domain. */
  readonly nextHop?: NextHop;
}

export interface QueueSummary {
  readonly at: number;
  readonly totals: DestinationCounts;
  /** Every domain with unfinished jobs, or with a suspension or reroute; most jobs first. */
  readonly destinations: readonly DestinationSummary[];
}

/** Everything known about one message, queued or finished. */
export interface MessageDetails {
  readonly queueId: string;
  /** `finished`: delivered, bounced or deleted; only its timeline is left. */
  readonly state: 'queued' | 'finished';
  readonly messageId?: string;
  readonly envelope?: Envelope;
  readonly createdAt?: number;
  readonly size?: number;
  readonly source?: IncomingMessage['source'];
  readonly isBounce?: boolean;
  /** The header block as name/value pairs (values unfolded). */
  readonly headers?: readonly (readonly [string, string])[];
  readonly held: boolean;
  /** Why the message was held on arrival (a plugin's quarantine), until it is released. */
  readonly holdReason?: string;
  readonly jobs: readonly (MessageRecord['jobs'][number] & { readonly nextHop?: NextHop })[];
  readonly timeline: readonly TimelineEvent[];
}

export interface BounceNowOptions {
  /** Reporting-MTA and From of the bounce. */
  readonly reportingMta: string;
  /** Shown to the sender in the bounce's Diagnostic-Code. */
  readonly reason?: string;
}

export type BounceNowResult =
  | { readonly ok: true; readonly recipients: number; readonly notice?: string }
  | { readonly ok: false; readonly reason: 'unknown' | 'active' };

export interface QueueOperations {
  /** Counts by state per destination domain, with suspensions and reroutes. */
  summary(): Promise<QueueSummary>;
  /** Unfinished jobs, oldest first, filtered; page on with the returned cursor. */
  listJobs(filter?: QueueFilter): Promise<QueuePage>;
  /** A message by queue id: envelope, headers, jobs with per-recipient state, timeline. Null when unknown or expired. */
  details(queueId: string): Promise<MessageDetails | null>;
  /** Queue ids of messages (queued, or finished within the timeline retention) with this Message-ID. */
  findByMessageId(messageId: string): Promise<string[]>;
  /** Appends events to a message's timeline (intake verdicts that arrive late, operator notes). */
  appendTimeline(queueId: string, events: readonly TimelineEvent[]): Promise<void>;
  /** Stops delivery of a message until `release`; an attempt in flight finishes. Returns jobs affected. */
  hold(queueId: string): Promise<number>;
  release(queueId: string): Promise<number>;
  /** Makes scheduled jobs due now (held ones stay held, suspended destinations stay suspended). */
  retryNow(queueId: string): Promise<number>;
  /** Deletes a message without a bounce. False when unknown. */
  remove(queueId: string): Promise<boolean>;
  /** Fails every pending recipient now with a bounce to the sender (RFC 3464), then removes the message. */
  bounceNow(queueId: string, options: BounceNowOptions): Promise<BounceNowResult>;
  /** Sets (or with null clears) a next hop for a message's jobs, or only its job for `domain`. Returns jobs affected. */
  reroute(queueId: string, hop: NextHop | null, domain?: string): Promise<number>;
  /** Sets (or with null clears) a next hop for every job of a destination domain, now and later. */
  rerouteDestination(domain: string, hop: NextHop | null): Promise<void>;
  /** No delivery to `domain` until `until` (ms since epoch); its jobs wait without using attempts. */
  suspend(domain: string, until: number): Promise<void>;
  /** Ends a suspension; due jobs run at once. Returns how many jobs were made due. */
  resume(domain: string): Promise<number>;
}

/** Whether a backend implements the operator operations. */
export function isQueueOperations(queue: object): queue is QueueOperations {
  const candidate = queue as Partial<Record<keyof QueueOperations, unknown>>;
  return typeof candidate.summary === 'function' && typeof candidate.listJobs === 'function';
}
