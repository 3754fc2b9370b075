// The suppression list at work: an internal plugin that refuses a suppressed recipient at RCPT
// when the mail would be relayed (relay and submission, never mail for our own domains), and that
// adds recipients whose delivery failed with a hard-bounce category. The list itself lives in the
// queue's store (packages/queue/src/suppression.ts), so every node sees the same one.
import {
  type BounceCategory,
  definePlugin,
  type Logger,
  type Plugin,
  reject,
  type SmtpReply,
  smtpReply,
  tempfail,
} from '@tern/plugin-api';
import {
  MAX_SUPPRESSION_REASON,
  type Suppression,
  type SuppressionStore,
  suppressionScopes,
} from '@tern/queue';
import type { ResolvedConfig } from './config.js';
import type { PlatformEvents } from './events.js';
import { messageLabels, senderDomainOf, suppressionEvent } from './webhooks/producers.js';

export const SUPPRESSION_PLUGIN_NAME = 'tern-suppression';

/** Bounce categories that suppress a recipient unless the config says otherwise. */
export const DEFAULT_SUPPRESSING_CATEGORIES: readonly BounceCategory[] = ['bad-mailbox', 'inactive'];

/** What the config's `suppression` block resolves to. */
export interface SuppressionSettings {
  readonly enabled: boolean;
  readonly categories: ReadonlySet<BounceCategory>;
  readonly expireAfterMs: number | undefined;
}

export function suppressionSettings(config: ResolvedConfig): SuppressionSettings {
  const s = config.suppression;
  return {
    enabled: s?.enabled ?? true,
    categories: new Set(s?.categories ?? DEFAULT_SUPPRESSING_CATEGORIES),
    expireAfterMs: s?.expireAfter,
  };
}

/**
 * The reply for a suppressed recipient, as a mailbox that no longer takes mail answers (550 5.1.1)
 * when it was a bounce that suppressed it; a complaint or an operator's entry is a policy refusal
 * (550 5.7.1). It says since when, never the stored reason (a remote server's words).
 */
export function suppressedReply(address: string, entry: Suppression): SmtpReply {
  const since = new Date(entry.createdAt).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const scope = entry.scope === '*' ? 'every sender' : entry.scope;
  const why = entry.category === undefined ? entry.source : `${entry.source}: ${entry.category}`;
  const enhanced = entry.source === 'bounce' ? '5.1.1' : '5.7.1';
  return smtpReply(
    550,
    enhanced,
    `<${address}>: recipient is suppressed for ${scope} since ${since} (${why})`,
  );
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
  return definePlugin({
    name: SUPPRESSION_PLUGIN_NAME,
    enforce: 'pre',
    async rcptTo(ctx) {
      const list = store();
      if (!settings().enabled || list === undefined || ctx.isLocalDomain || !ctx.mayRelay) return;
      const address = ctx.recipient.address;
      let entry: Suppression | undefined;
      try {
        entry = await list.find(address, suppressionScopes(ctx.transaction.mailFrom));
      } catch (error) {
        // Unknown is not "not suppressed": the client tries again later.
        log.warn({ err: error, recipient: address }, 'could not read the suppression list');
        return tempfail(451, '4.3.0', 'Temporary local problem, please try again later');
      }
      if (entry === undefined) return;
      log.info(
        { recipient: address, sender: ctx.transaction.mailFrom, scope: entry.scope, source: entry.source },
        'refused a suppressed recipient',
      );
      const reply = suppressedReply(address, entry);
      const mailFrom = ctx.transaction.mailFrom;
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
    },
    async bounced(ctx) {
      const list = store();
      const current = settings();
      // Our own notices and mail from <> have no sender to protect.
      if (!current.enabled || list === undefined || ctx.envelope.mailFrom === '') return;
      const now = Date.now();
      const [scope] = suppressionScopes(ctx.envelope.mailFrom);
      if (scope === undefined || scope === '*') return;
      const entries: Suppression[] = ctx.results
        .filter((r) => r.category !== undefined && current.categories.has(r.category))
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
