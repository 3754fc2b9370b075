// The suppression list at work: an internal plugin that refuses a suppressed recipient at RCPT
// when the mail would be relayed (relay and submission, never mail for our own domains), checks
// the tag scopes of a tagged message once its tags are known (DATA), and adds recipients whose
// delivery failed with a hard-bounce category. At delivery, recipients of a message carrying a
// tag scope are checked again and fail (a DSN) when suppressed. The list itself lives in the
// queue's store (packages/queue/src/suppression.ts), so every node sees the same one.
import {
  type BounceCategory,
  definePlugin,
  type Logger,
  type Plugin,
  reject,
  type SmtpReply,
  smtpReply,
  type TransactionInfo,
  tempfail,
  type Verdict,
} from '@tern/plugin-api';
import {
  type DeliveryJob,
  type DeliveryReport,
  isTagScope,
  MAX_SUPPRESSION_REASON,
  messageTagScopes,
  type RecipientOutcome,
  type Suppression,
  type SuppressionStore,
  suppressionScopes,
} from '@tern/queue';
import type { ResolvedConfig } from './config.js';
import type { PlatformEvents } from './events.js';
import { messageFields, messageLabels, senderDomainOf, suppressionEvent } from './webhooks/producers.js';

export const SUPPRESSION_PLUGIN_NAME = 'tern-suppression';

/** Bounce categories that suppress a recipient unless the config says otherwise. */
export const DEFAULT_SUPPRESSING_CATEGORIES: readonly BounceCategory[] = ['bad-mailbox', 'inactive'];

/** What the config's `suppression` block resolves to. */
export interface SuppressionSettings {
  readonly enabled: boolean;
  readonly categories: ReadonlySet<BounceCategory>;
  readonly expireAfterMs: number | undefined;
  /** Tags with a list of their own (`tag:<name>`), lower-cased. */
  readonly tagScopes: ReadonlySet<string>;
}

export function suppressionSettings(config: ResolvedConfig): SuppressionSettings {
  const s = config.suppression;
  return {
    enabled: s?.enabled ?? true,
    categories: new Set(s?.categories ?? DEFAULT_SUPPRESSING_CATEGORIES),
    expireAfterMs: s?.expireAfter,
    tagScopes: new Set(s?.tagScopes ?? []),
  };
}

/** Every suppression refusal says this, so its bounce is known as ours (and never suppresses again). */
const SUPPRESSED = 'recipient is suppressed for';

/**
 * The reply for a suppressed recipient, as a mailbox that no longer takes mail answers (550 5.1.1)
 * when it was a bounce that suppressed it for its sender domain or every sender; a complaint, an
 * operator's entry or a tag scope (the sender's own policy for one stream of mail) is a policy
 * refusal (550 5.7.1). It says since when, never the stored reason (a remote server's words).
 */
export function suppressedReply(address: string, entry: Suppression): SmtpReply {
  const since = new Date(entry.createdAt).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const scope = entry.scope === '*' ? 'every sender' : entry.scope;
  const why = entry.category === undefined ? entry.source : `${entry.source}: ${entry.category}`;
  const enhanced = entry.source === 'bounce' && !isTagScope(entry.scope) ? '5.1.1' : '5.7.1';
  return smtpReply(550, enhanced, `<${address}>: ${SUPPRESSED} ${scope} since ${since} (${why})`);
}

/** Whether a reply is one of ours for a suppressed recipient. */
export function isSuppressedReply(reply: SmtpReply): boolean {
  return reply.code === 550 && reply.text.includes(`>: ${SUPPRESSED} `);
}

/** The DATA reply when every recipient is suppressed by a tag scope: one names its entry, more are counted. */
function allSuppressedReply(found: readonly { address: string; entry: Suppression }[]): SmtpReply {
  const [first] = found;
  if (found.length === 1 && first !== undefined) return suppressedReply(first.address, first.entry);
  const scopes = [...new Set(found.map((f) => f.entry.scope))].join(', ');
  return smtpReply(550, '5.7.1', `Every recipient (${found.length}) is suppressed for ${scopes}`);
}

/**
 * The internal plugin; `store` is asked at each use (the queue opens after the plugin hosts), and
 * `settings` too (a reload changes them).
 */
export function suppressionPlugin(
  store: () => SuppressionStore | undefined,
  settings: () => SuppressionSettings,
  logger: Logger,
  events?: PlatformEvents,
): Plugin {
  const log = logger.child({ component: 'suppression' });
  /** A relayed recipient looked up in the list: refused when suppressed for its sender. */
  const refuseSuppressed = async (
    list: SuppressionStore,
    address: string,
    mailFrom: string,
  ): Promise<Verdict | undefined> => {
    let entry: Suppression | undefined;
    try {
      entry = await list.find(address, suppressionScopes(mailFrom));
    } catch (error) {
      // Unknown is not "not suppressed": the client tries again later.
      log.warn({ err: error, recipient: address }, 'could not read the suppression list');
      return tempfail(451, '4.3.0', 'Temporary local problem, please try again later');
    }
    if (entry === undefined) return;
    log.info(
      { recipient: address, sender: mailFrom, scope: entry.scope, source: entry.source },
      'refused a suppressed recipient',
    );
    const reply = suppressedReply(address, entry);
    events?.emit({
      type: 'suppressed',
      at: Date.now(),
      recipient: address,
      mailFrom,
      senderDomain: senderDomainOf(mailFrom),
      code: reply.code,
      enhanced: reply.enhanced,
      text: reply.text,
      source: 'intake',
    });
    return reject(reply.code, reply.enhanced, reply.text);
  };
  /** A tagged message's recipients looked up in its tag scopes: refused when every one is suppressed. */
  const refuseTagged = async (
    list: SuppressionStore,
    scopes: string[],
    transaction: TransactionInfo,
    tags: readonly string[],
  ): Promise<Verdict | undefined> => {
    const recipients = transaction.recipients;
    const found: { address: string; entry: Suppression }[] = [];
    try {
      for (const r of recipients) {
        const entry = await list.find(r.address, scopes);
        if (entry !== undefined) found.push({ address: r.address, entry });
      }
    } catch (error) {
      log.warn({ err: error, scopes }, 'could not read the suppression list');
      return tempfail(451, '4.3.0', 'Temporary local problem, please try again later');
    }
    if (found.length === 0) return;
    const mailFrom = transaction.mailFrom;
    if (found.length < recipients.length) {
      log.info(
        { recipients: found.map((f) => f.address), sender: mailFrom, scopes },
        'took a tagged message with suppressed recipients: they fail at delivery',
      );
      return;
    }
    const reply = allSuppressedReply(found);
    log.info(
      { recipients: found.map((f) => f.address), sender: mailFrom, scopes },
      'refused a tagged message: every recipient is suppressed',
    );
    for (const f of found) {
      events?.emit({
        type: 'suppressed',
        at: Date.now(),
        recipient: f.address,
        mailFrom,
        senderDomain: senderDomainOf(mailFrom),
        tags: [...tags],
        code: reply.code,
        enhanced: reply.enhanced,
        text: suppressedReply(f.address, f.entry).text,
        source: 'intake',
      });
    }
    return reject(reply.code, reply.enhanced, reply.text);
  };
  return definePlugin({
    name: SUPPRESSION_PLUGIN_NAME,
    enforce: 'pre',
    // Set by rcptTo: the transaction came over SMTP. Injected mail never runs rcptTo hooks, and
    // the injection API checked every scope, tags included, before intake (422).
    state: { transaction: () => ({ smtp: false }) },
    // Both intake hooks answer at once when there is nothing to look up (mail for our own domains,
    // a message without tag scopes): a hook that returns a promise costs its call a deadline timer,
    // a race and a turn of the microtask queue.
    rcptTo(ctx) {
      ctx.transactionState.smtp = true;
      const list = store();
      if (!settings().enabled || list === undefined || ctx.isLocalDomain || !ctx.mayRelay) return;
      return refuseSuppressed(list, ctx.recipient.address, ctx.transaction.mailFrom);
    },
    // Tags come with the header (X-Tern-Tag), after RCPT: the tag scopes are checked here. When
    // every recipient is suppressed the message is refused; when only some are, it is taken, and
    // those fail at delivery (see tagSuppressionGate): a DSN, never a silent drop.
    message(ctx) {
      const list = store();
      const current = settings();
      if (!current.enabled || list === undefined || !ctx.transactionState.smtp) return;
      const scopes = messageTagScopes(ctx.tags, current.tagScopes);
      if (scopes.length === 0) return;
      return refuseTagged(list, scopes, ctx.transaction, ctx.tags);
    },
    async bounced(ctx) {
      const list = store();
      const current = settings();
      // Our own notices and mail from <> have no sender to protect.
      if (!current.enabled || list === undefined || ctx.envelope.mailFrom === '') return;
      const now = Date.now();
      const [scope] = suppressionScopes(ctx.envelope.mailFrom);
      if (scope === undefined || scope === '*') return;
      // A hard bounce goes to the sender domain's list even for a tagged message: a mailbox that
      // does not exist does not exist for any stream. Our own refusals (tag scopes) are not bounces.
      const entries: Suppression[] = ctx.results
        .filter(
          (r) =>
            r.category !== undefined && current.categories.has(r.category) && !isSuppressedReply(r.reply),
        )
        .map((r) => ({
          scope,
          address: r.recipient.address.toLowerCase(),
          source: 'bounce',
          reason: `${r.reply.code} ${r.reply.enhanced} ${r.reply.text}`.slice(0, MAX_SUPPRESSION_REASON),
          ...(r.category === undefined ? {} : { category: r.category }),
          createdAt: now,
          ...(current.expireAfterMs === undefined ? {} : { expiresAt: now + current.expireAfterMs }),
          queueId: ctx.queueId,
        }));
      if (entries.length === 0) return;
      try {
        await list.add(entries);
        for (const e of entries) {
          // The message's tags and API key too, as on its bounced event: webhook filters see both.
          events?.emit({
            ...suppressionEvent(e, 'smtp', now),
            mailFrom: ctx.envelope.mailFrom,
            ...messageLabels(ctx.envelope),
          });
          log.info(
            { recipient: e.address, scope, category: e.category, queueId: ctx.queueId },
            'suppressed a recipient after a hard bounce',
          );
        }
      } catch (error) {
        log.warn(
          { err: error, recipients: entries.map((e) => e.address), queueId: ctx.queueId },
          'could not add hard-bounced recipients to the suppression list',
        );
      }
    },
  });
}

/**
 * Runs one delivery attempt of a job behind the tag scopes: when the message carries a scoping
 * tag, its recipients are looked up first (the list may have changed since intake: a complaint
 * about the last newsletter stops the next one still in the queue), and those suppressed fail
 * with the suppression reply, so the queue bounces them (a DSN per the usual rules, the timeline,
 * a bounced event) while the rest are delivered. Jobs without such a tag cost nothing.
 */
export function tagSuppressionGate(
  store: () => SuppressionStore | undefined,
  settings: () => SuppressionSettings,
  logger: Logger,
  events?: PlatformEvents,
): (job: DeliveryJob, deliver: (job: DeliveryJob) => Promise<DeliveryReport>) => Promise<DeliveryReport> {
  const log = logger.child({ component: 'suppression' });
  return async (job, deliver) => {
    const list = store();
    const current = settings();
    if (!current.enabled || list === undefined || job.isBounce || current.tagScopes.size === 0)
      return deliver(job);
    const scopes = messageTagScopes(messageLabels(job.envelope).tags, current.tagScopes);
    if (scopes.length === 0) return deliver(job);
    const refused: { outcome: RecipientOutcome; entry: Suppression }[] = [];
    // A list that cannot be read throws: the attempt defers every recipient, to try again.
    for (const r of job.recipients) {
      const entry = await list.find(r.address, scopes);
      if (entry !== undefined) {
        const reply = suppressedReply(r.address, entry);
        refused.push({ outcome: { address: r.address, result: 'failed', reply }, entry });
      }
    }
    if (refused.length === 0) return deliver(job);
    const gone = new Set(refused.map((r) => r.outcome.address));
    const rest = job.recipients.filter((r) => !gone.has(r.address));
    const report = rest.length === 0 ? { recipients: [] } : await deliver({ ...job, recipients: rest });
    // A limit of ours held the job back: nothing happened, the next attempt looks again.
    if (report.wait !== undefined) return report;
    log.info(
      { queueId: job.queueId, recipients: [...gone], scopes: refused.map((r) => r.entry.scope) },
      'failed suppressed recipients of a tagged message',
    );
    if (events?.listening) {
      const base = messageFields(job.queueId, job.envelope);
      for (const { outcome } of refused) {
        events.emit({
          type: 'suppressed',
          at: Date.now(),
          ...base,
          recipient: outcome.address,
          code: outcome.reply.code,
          enhanced: outcome.reply.enhanced,
          text: outcome.reply.text,
          source: 'intake',
        });
      }
    }
    return { ...report, recipients: [...refused.map((r) => r.outcome), ...report.recipients] };
  };
}
