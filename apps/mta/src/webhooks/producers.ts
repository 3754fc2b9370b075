// Platform events from what the MTA sees: one event per recipient, with the message's sender
// domain and tags (for filters) and, where there is one, the reply and its bounce category.
import type {
  Envelope,
  PlatformEvent,
  PlatformEventSource,
  PlatformEventType,
  RecipientResult,
} from '@tern/plugin-api';
import {
  ANY_SENDER,
  isTagScope,
  type MessageDetails,
  operatorBounceReply,
  type Suppression,
  TAG_SCOPE_PREFIX,
} from '@tern/queue';

/** The domain of a return path, lower-cased ('' for the null sender). */
export function senderDomainOf(mailFrom: string): string {
  const at = mailFrom.lastIndexOf('@');
  return at === -1 ? '' : mailFrom.slice(at + 1).toLowerCase();
}

/**
 * The message's tags and API key, where intake put them on the envelope (HTTP injection does; an
 * SMTP message has none). Read defensively: the envelope is stored JSON.
 */
export function messageLabels(envelope: Envelope): { tags?: string[]; apiKey?: string } {
  const { tags, apiKey } = envelope as Envelope & { tags?: unknown; apiKey?: unknown };
  const list = Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string') : [];
  return {
    ...(list.length > 0 ? { tags: list } : {}),
    ...(typeof apiKey === 'string' ? { apiKey } : {}),
  };
}

/** What every event about one message carries. */
export function messageFields(
  queueId: string,
  envelope: Envelope,
): Pick<PlatformEvent, 'queueId' | 'mailFrom' | 'senderDomain' | 'tags' | 'apiKey'> {
  return {
    queueId,
    mailFrom: envelope.mailFrom,
    senderDomain: senderDomainOf(envelope.mailFrom),
    ...messageLabels(envelope),
  };
}

/** One event per recipient of `envelope` (queued, held). */
export function envelopeEvents(
  type: PlatformEventType,
  queueId: string,
  envelope: Envelope,
  source: PlatformEventSource,
  extra: Partial<PlatformEvent> = {},
  at: number = Date.now(),
): PlatformEvent[] {
  const base = messageFields(queueId, envelope);
  return envelope.recipients.map((r) => ({ type, at, ...base, recipient: r.address, source, ...extra }));
}

/** One event per delivery result (delivered, deferred, bounced), with its reply and category. */
export function resultEvents(
  type: PlatformEventType,
  queueId: string,
  envelope: Envelope,
  results: readonly RecipientResult[],
  at: number = Date.now(),
): PlatformEvent[] {
  const base = messageFields(queueId, envelope);
  return results.map((r) => ({
    type,
    at,
    ...base,
    recipient: r.recipient.address,
    code: r.reply.code,
    enhanced: r.reply.enhanced,
    text: r.reply.text.slice(0, 500),
    ...(r.category === undefined ? {} : { category: r.category }),
    source: 'smtp' as const,
  }));
}

/**
 * One `bounced` event per recipient an operator's "bounce now" failed: those still pending in
 * `details` (read just before the bounce), with the reply the bounce gives them.
 */
export function operatorBounceEvents(
  queueId: string,
  details: MessageDetails,
  reason: string | undefined,
  at: number = Date.now(),
): PlatformEvent[] {
  if (details.envelope === undefined) return [];
  const base = messageFields(queueId, details.envelope);
  const reply = operatorBounceReply(reason);
  return details.jobs.flatMap((job) =>
    job.recipients
      .filter((r) => r.status === 'pending')
      .map((r) => ({
        type: 'bounced' as const,
        at,
        ...base,
        recipient: r.address,
        code: reply.code,
        enhanced: reply.enhanced,
        text: reply.text,
        source: 'operator' as const,
      })),
  );
}

/** A recipient put on a suppression list (after a bounce, a complaint, or by an operator). */
export function suppressionEvent(
  entry: Suppression,
  source: PlatformEventSource,
  at: number = Date.now(),
): PlatformEvent {
  return {
    type: 'suppressed',
    at,
    recipient: entry.address,
    // A tag scope's entry is about mail with that tag (webhook filters by tag see it).
    ...(isTagScope(entry.scope)
      ? { tags: [entry.scope.slice(TAG_SCOPE_PREFIX.length)] }
      : entry.scope === ANY_SENDER
        ? {}
        : { senderDomain: entry.scope }),
    ...(entry.queueId === undefined ? {} : { queueId: entry.queueId }),
    ...(entry.category === undefined ? {} : { category: entry.category }),
    text: entry.reason,
    source,
  };
}
