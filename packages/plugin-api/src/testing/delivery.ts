// The delivery side of the test kit: runs the hooks of one delivery job (one message towards one
// recipient domain) the way the delivery worker does, with the same runner and the same checks,
// so a plugin with route, beforeSend, delivered, deferred or bounced hooks is tested without a
// queue, a socket or a receiving server.
import { domainOf, type Envelope, type EnvelopeRecipient, type NextHop } from '../envelope.js';
import type { BouncedAdvice, DeferredAdvice, Plugin, RecipientResult } from '../hooks.js';
import { MessageContent } from '../message.js';
import { type SmtpReply, smtpReply } from '../reply.js';
import { PluginTestHost, type TestHostOptions, testQueueId } from './base.js';

export interface TestDeliveryOptions extends TestHostOptions {
  /** The message's envelope (default: sender@example.org to rcpt@example.net). */
  readonly envelope?: Envelope;
  /** Its queue id (default: a new one in the queue's format). */
  readonly queueId?: string;
  /** Delivery attempts made before this one (default 0: the first attempt). */
  readonly attempt?: number;
}

/** One recipient domain's share of the message, as the queue makes one job of it. */
export interface TestJob {
  readonly domain: string;
  /** Only this domain's recipients, as the job's envelope holds them. */
  readonly envelope: Envelope;
  readonly recipients: readonly EnvelopeRecipient[];
}

/** Replies the kit gives when a test names none: what a receiving server typically says. */
export const TEST_REPLIES = {
  delivered: smtpReply(250, '2.0.0', 'OK: queued as 4F2A9C'),
  deferred: smtpReply(451, '4.7.1', 'Greylisted, please try again later'),
  permanent: smtpReply(550, '5.1.1', 'No such user here'),
  expired: smtpReply(451, '4.4.1', 'No answer from host'),
} as const satisfies Record<string, SmtpReply>;

export class PluginTestDelivery extends PluginTestHost {
  readonly queueId: string;
  /** The whole message's envelope; each hook sees its domain's job (`job()`). */
  readonly envelope: Envelope;
  /** Delivery attempts made before the current one; count up with `attempt += 1` between tries. */
  attempt: number;

  constructor(plugins: Plugin | readonly Plugin[], options: TestDeliveryOptions = {}) {
    super(plugins, options);
    this.queueId = options.queueId ?? testQueueId();
    this.envelope = options.envelope ?? {
      mailFrom: 'sender@example.org',
      recipients: [{ address: 'rcpt@example.net' }],
    };
    this.attempt = options.attempt ?? 0;
  }

  /** The job for `domain` (default: the first recipient's domain). */
  job(domain: string = domainOf(this.envelope.recipients[0]?.address ?? '')): TestJob {
    const wanted = domain.toLowerCase();
    const recipients = this.envelope.recipients.filter((r) => domainOf(r.address) === wanted);
    if (recipients.length === 0) throw new Error(`no recipient of the envelope is in ${domain}`);
    return { domain: wanted, recipients, envelope: { ...this.envelope, recipients: [...recipients] } };
  }

  /**
   * Runs the route hooks for a domain's job: the next hop the first plugin names, or undefined
   * when none does (Tern then uses the static routes and MX). A hook that fails or names something
   * that is not a next hop rejects with HookFailure (the worker defers the job).
   */
  async route(domain?: string): Promise<NextHop | undefined> {
    const job = this.job(domain);
    return this.host.runRoute({ ...this.#base(job), domain: job.domain, recipients: job.recipients });
  }

  /**
   * Runs the beforeSend hooks on a message about to go to `hop` and returns it as it would be sent
   * (headers changed in place). Rejects with HookFailure when a hook fails (the worker defers).
   */
  async beforeSend(
    raw: string | Buffer,
    options: { readonly hop?: NextHop; readonly domain?: string } = {},
  ): Promise<MessageContent> {
    const job = this.job(options.domain);
    const message = MessageContent.parse(raw);
    await this.host.runTransform('beforeSend', {
      ...this.#base(job),
      hop: options.hop ?? { type: 'mx', domain: job.domain },
      recipients: job.recipients,
      message,
    });
    return message;
  }

  /** Runs the delivered hooks: the job's recipients were accepted by `remoteMta` (default 250 replies). */
  async delivered(
    options: {
      readonly domain?: string;
      readonly hop?: NextHop;
      readonly remoteMta?: string;
      readonly reply?: SmtpReply;
    } = {},
  ): Promise<void> {
    const job = this.job(options.domain);
    await this.host.runObserve('delivered', {
      ...this.#base(job),
      hop: options.hop ?? { type: 'mx', domain: job.domain },
      remoteMta: options.remoteMta ?? `mx.${job.domain}[192.0.2.25]:25`,
      results: resultsOf(job, options.reply ?? TEST_REPLIES.delivered),
    });
  }

  /**
   * Runs the deferred hooks (a temporary failure; default reply 451 4.7.1, next attempt in five
   * minutes) and returns their combined advice. Advice of the wrong shape is a hook failure: it is
   * left out and shows in `failures()`.
   */
  async deferred(
    options: { readonly domain?: string; readonly reply?: SmtpReply; readonly nextAttemptAt?: Date } = {},
  ): Promise<DeferredAdvice> {
    const job = this.job(options.domain);
    return this.host.runAdvise('deferred', {
      ...this.#base(job),
      results: resultsOf(job, options.reply ?? TEST_REPLIES.deferred),
      nextAttemptAt: options.nextAttemptAt ?? new Date(Date.now() + 5 * 60_000),
    });
  }

  /**
   * Runs the bounced hooks (default: a permanent 550 5.1.1; `reason: 'expired'` for a message that
   * outlived the retry schedule) and returns their combined advice, checked as `deferred` does.
   */
  async bounced(
    options: {
      readonly domain?: string;
      readonly reason?: 'permanent' | 'expired';
      readonly reply?: SmtpReply;
    } = {},
  ): Promise<BouncedAdvice> {
    const job = this.job(options.domain);
    const reason = options.reason ?? 'permanent';
    return this.host.runAdvise('bounced', {
      ...this.#base(job),
      results: resultsOf(job, options.reply ?? TEST_REPLIES[reason]),
      reason,
    });
  }

  #base(job: TestJob): { queueId: string; envelope: Envelope; attempt: number } {
    // Each hook gets its own copy, as in the worker: a hook changing it changes nothing queued.
    const envelope = { ...job.envelope, recipients: job.envelope.recipients.map((r) => ({ ...r })) };
    return { queueId: this.queueId, envelope, attempt: this.attempt };
  }
}

function resultsOf(job: TestJob, reply: SmtpReply): RecipientResult[] {
  return job.recipients.map((recipient) => ({ recipient, reply }));
}

/** Starts driving these plugins' delivery hooks for one message, as the delivery worker would. */
export function testDelivery(
  plugins: Plugin | readonly Plugin[],
  options?: TestDeliveryOptions,
): PluginTestDelivery {
  return new PluginTestDelivery(plugins, options);
}
