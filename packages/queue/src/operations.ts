// Shared by every backend's operator operations: filters, Message-ID and queue id forms, the
// header view, the bounce an operator sends with "bounce now", and the views both backends build.
import { type Envelope, Headers, type NextHop, type SmtpReply, unfoldValue } from '@tern/plugin-api';
import type {
  BounceNowOptions,
  DestinationCounts,
  IncomingMessage,
  MessageDetails,
  QueuedJob,
  QueueFilter,
  RecipientState,
} from './contract.js';
import { buildDsn, type DsnRecipient } from './dsn.js';
import type { ReceivedEvent, TimelineEvent } from './timeline.js';

export const DEFAULT_LIST_LIMIT = 100;
export const MAX_LIST_LIMIT = 1000;

/** An invalid argument to an operator operation; the admin API answers 400 with its message. */
export class OperationInputError extends Error {
  readonly code = 'TERN_ERR_QUEUE_OPERATION_INPUT';
}

/** Queue ids are 9 base-36 time digits and 12 hex digits, upper case (see plan.ts). */
const QUEUE_ID = /^[0-9A-Z]{21}$/;

export function isQueueId(text: string): boolean {
  return QUEUE_ID.test(text);
}

/** When the message with this queue id was accepted (ms), read from the id itself. */
export function queueIdTime(queueId: string): number | undefined {
  if (!isQueueId(queueId)) return undefined;
  const ms = Number.parseInt(queueId.slice(0, 9), 36);
  return Number.isFinite(ms) ? ms : undefined;
}

/** A Message-ID as stored for lookups: without angle brackets and outer space. */
export function normalizeMessageId(messageId: string): string {
  return messageId.trim().replace(/^<\s*/, '').replace(/\s*>$/, '');
}

/** The page size a filter asks for, checked. */
export function listLimit(filter: QueueFilter): number {
  const limit = filter.limit ?? DEFAULT_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
    throw new OperationInputError(`limit: ${limit} must be a whole number from 1 to ${MAX_LIST_LIMIT}`);
  }
  return limit;
}

const STATES = new Set(['scheduled', 'deferred', 'active', 'held']);

/** Throws OperationInputError for a filter no backend could answer. */
export function checkFilter(filter: QueueFilter): void {
  listLimit(filter);
  if (filter.state !== undefined && !STATES.has(filter.state)) {
    throw new OperationInputError(
      `state: ${JSON.stringify(filter.state)} is not one of scheduled, deferred, active, held`,
    );
  }
  if (filter.cursor !== undefined && !/^[0-9A-Z]{21}@\S+$/.test(filter.cursor)) {
    throw new OperationInputError('cursor: not a cursor from a previous page');
  }
}

/** Whether a listed job passes the sender, recipient and state parts of a filter (domain is the backends' index). */
export function matchesFilter(job: QueuedJob, filter: QueueFilter): boolean {
  if (filter.state !== undefined) {
    if (filter.state === 'deferred') {
      if (job.state !== 'scheduled' || job.attempts === 0) return false;
    } else if (job.state !== filter.state) {
      return false;
    }
  }
  if (filter.domain !== undefined && job.domain !== filter.domain.toLowerCase()) return false;
  if (filter.sender !== undefined) {
    const wanted = filter.sender.toLowerCase();
    if (wanted === '<>' ? job.mailFrom !== '' : !job.mailFrom.toLowerCase().includes(wanted)) return false;
  }
  if (filter.recipient !== undefined) {
    const wanted = filter.recipient.toLowerCase();
    if (!job.recipients.some((r) => r.address.toLowerCase().includes(wanted))) return false;
  }
  return true;
}

/** The header block as name/value pairs, values unfolded (lines without a name are left out). */
export function headerPairs(block: Buffer): [string, string][] {
  return Headers.parse(block)
    .fields()
    .filter((f) => f.name !== '')
    .map((f) => [f.name, unfoldValue(f)]);
}

/** The reply every recipient of an operator's bounce gets. */
export function operatorBounceReply(reason: string | undefined): SmtpReply {
  const why = reason?.replace(/[\r\n]+/g, ' ').trim();
  return {
    code: 550,
    enhanced: '5.0.0',
    text: `Returned by the mail system's operator${why ? `: ${why.slice(0, 300)}` : ''}`,
  };
}

/**
 * The bounce for an operator's "bounce now": every pending recipient fails with
 * {@link operatorBounceReply}. Undefined when no bounce may be sent: the null sender, a notice we
 * generated, or recipients whose NOTIFY excludes FAILURE (RFC 3461).
 */
export function operatorBounce(
  message: {
    readonly queueId: string;
    readonly envelope: Envelope;
    readonly createdAt: number;
    readonly isBounce: boolean;
    readonly headers: Buffer;
  },
  pending: readonly RecipientState[],
  options: BounceNowOptions,
  now: Date = new Date(),
): IncomingMessage | undefined {
  if (message.isBounce || message.envelope.mailFrom === '') return undefined;
  const reply = operatorBounceReply(options.reason);
  const lines: DsnRecipient[] = pending
    .filter((r) => r.notify === undefined || r.notify.length === 0 || r.notify.includes('FAILURE'))
    .map((r) => ({ recipient: r, reply, reason: 'permanent', action: 'failed' }));
  if (lines.length === 0) return undefined;
  return buildDsn(
    {
      kind: 'bounce',
      to: message.envelope.mailFrom,
      queueId: message.queueId,
      envelope: message.envelope,
      arrivalDate: new Date(message.createdAt),
      lastAttemptAt: now,
      recipients: lines,
      originalHeaders: message.headers,
    },
    { reportingMta: options.reportingMta, now },
  );
}

/** A next hop in words, for timelines, listings and the dashboard. */
export function describeHop(hop: NextHop): string {
  switch (hop.type) {
    case 'mx':
      return `via the MX of ${hop.domain}`;
    case 'smtp':
      return `via SMTP ${hop.host}:${hop.port ?? 25}`;
    case 'lmtp':
      return `via LMTP ${hop.path ?? `${hop.host ?? '127.0.0.1'}:${hop.port ?? 24}`}`;
    case 'maildir':
      return `to Maildir ${hop.path}`;
  }
}

/** The totals row of a summary. */
export function sumCounts(rows: readonly DestinationCounts[]): DestinationCounts {
  const totals = { total: 0, scheduled: 0, active: 0, held: 0, deferred: 0 };
  for (const row of rows) {
    totals.total += row.total;
    totals.scheduled += row.scheduled;
    totals.active += row.active;
    totals.held += row.held;
    totals.deferred += row.deferred;
  }
  return totals;
}

/** A finished message (delivered, bounced or deleted): what its timeline still tells. */
export function finishedDetails(queueId: string, timeline: readonly TimelineEvent[]): MessageDetails {
  const received = timeline.find((e): e is ReceivedEvent => e.type === 'received');
  return {
    queueId,
    state: 'finished',
    ...(received
      ? {
          envelope: {
            mailFrom: received.mailFrom,
            recipients: received.recipients.map((address) => ({ address })),
            // Tags and API key travel on the envelope: async bounces and complaints about a
            // delivered message carry them into their events (and webhook filters) from here.
            ...(received.tags === undefined || received.tags.length === 0
              ? {}
              : { tags: [...received.tags] }),
            ...(received.apiKey === undefined ? {} : { apiKey: received.apiKey }),
          },
          createdAt: received.at,
          size: received.size,
          ...(received.messageId === undefined ? {} : { messageId: received.messageId }),
          ...(received.isBounce ? { isBounce: true } : {}),
        }
      : {}),
    held: false,
    jobs: [],
    timeline,
  };
}
