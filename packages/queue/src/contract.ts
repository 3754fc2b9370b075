// The queue contract: what intake hands over, what a delivery job is, what delivery reports
// back, and what every backend (Redis/BullMQ, embedded SQLite) must do with it.
import type { Readable } from 'node:stream';
import type { Envelope, EnvelopeRecipient, Logger, NextHop, PluginHost, SmtpReply } from '@tern/plugin-api';
import type { RetrySchedule, RetryScheduleOptions } from './retry.js';

/** What intake hands to the queue after DATA. Nothing is acknowledged (250) before `enqueue` resolves. */
export interface IncomingMessage {
  readonly envelope: Envelope;
  /** The whole message (headers, empty line, body) as chunks; written without concatenating where possible. */
  readonly chunks: readonly Buffer[];
  readonly receivedAt: number;
  /** Where it came from, for the timeline and bounces. */
  readonly source?: {
    readonly listener?: string;
    readonly remoteAddress?: string;
    readonly helo?: string;
    readonly user?: string;
    readonly sessionId?: string;
  };
  /** Message-ID header value, for lookups by operators. */
  readonly messageId?: string;
  /** A notice (bounce, delay DSN) this MTA generated: its jobs get `isBounce`, so it is never bounced itself. */
  readonly isBounce?: boolean;
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
}

export type AttemptResult = 'delivered' | 'deferred' | 'failed';

/** What happened to one recipient in one attempt. */
export interface RecipientOutcome {
  readonly address: string;
  readonly result: AttemptResult;
  readonly reply: SmtpReply;
}

/** What delivery reports for one attempt of one job. */
export interface DeliveryReport {
  readonly recipients: readonly RecipientOutcome[];
  readonly hop?: NextHop;
  /** `name[address]:port` of the server that answered, for DSN Remote-MTA and the timeline. */
  readonly remoteMta?: string;
}

/**
 * The delivery function the queue calls for each due job (implemented by @tern/delivery).
 * `message()` opens the stored message as a stream. It must not throw for remote failures
 * (those are outcomes); a throw is treated as a temporary failure of every recipient.
 */
export type Deliver = (job: DeliveryJob, message: () => Promise<Readable>) => Promise<DeliveryReport>;

export interface WorkerOptions {
  /** Jobs delivered at once by this process (default 20). */
  readonly concurrency?: number;
  /** Hooks for deferred/bounced advice and delivered/observe events. */
  readonly plugins?: PluginHost;
  /** When to retry deferred recipients and when to give up (default: see RetrySchedule). */
  readonly retry?: RetrySchedule | RetryScheduleOptions;
  /** This MTA's host name, for the Reporting-MTA of bounces (default: os.hostname()). */
  readonly hostname?: string;
  readonly logger?: Logger;
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

/** Every backend implements this; one contract test suite runs against each. */
export interface QueueBackend {
  readonly kind: 'redis' | 'embedded';
  /** Where the data lives, for `tern start` to print (a Redis URL without password, or a file path). */
  readonly location: string;
  /**
   * Makes body, envelope and jobs durable, then resolves with the queue id. Rejects (the caller
   * answers 451 4.3.0) when durability cannot be had in time.
   */
  enqueue(message: IncomingMessage): Promise<string>;
  /** Starts delivering due jobs with `deliver`. */
  startWorker(deliver: Deliver, options?: WorkerOptions): Promise<void>;
  /** Stops taking jobs, waits for running attempts, closes connections. */
  close(): Promise<void>;
  /** The stored message (null once every recipient is done and the body is removed). */
  readMessage(queueId: string): Promise<Buffer | null>;
  /** A message's envelope and jobs, or null when unknown or finished. */
  inspect(queueId: string): Promise<MessageRecord | null>;
}
