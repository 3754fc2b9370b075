// Shared by every backend: builds RFC 3464 delivery status notifications (bounces and delay
// notices) as ordinary messages that go out through the same queue, from `<>`.
import { randomBytes } from 'node:crypto';
import { type BounceCategory, type Envelope, rfc5322Date, type SmtpReply } from '@tern/plugin-api';
import { findHeaderEnd, memorySource } from '@tern/plugin-api/host';
import type { IncomingMessage, RecipientState } from './contract.js';

/** One recipient line group of a report. */
export interface DsnRecipient {
  readonly recipient: RecipientState;
  readonly action: 'failed' | 'delayed';
  /** The last reply for this recipient (from the remote server or a local stand-in). */
  readonly reply?: SmtpReply;
  /** For failures: a 5xx (`permanent`) or the message outlived the retry schedule (`expired`). */
  readonly reason?: 'permanent' | 'expired';
  /** Why, as the bounce classifier sorted the reply (an `X-Tern-Bounce-Category` field, RFC 3464 §2.4). */
  readonly category?: BounceCategory;
}

/** What a notice reports on. */
export interface DsnInput {
  readonly kind: 'bounce' | 'delay';
  /** Where the notice goes: the original return path, or where a `bounced` hook redirected it. */
  readonly to: string;
  readonly queueId: string;
  /** The original message's envelope (for ENVID and the null-sender check). */
  readonly envelope: Envelope;
  /** When the original message was accepted. */
  readonly arrivalDate: Date;
  readonly lastAttemptAt: Date;
  /** Delay notices: when the queue gives up. */
  readonly willRetryUntil?: Date;
  readonly recipients: readonly DsnRecipient[];
  /** The original header block (without the empty line); the notice carries it as text/rfc822-headers. */
  readonly originalHeaders: Buffer;
}

export interface DsnOptions {
  /** This MTA's host name, for Reporting-MTA, Message-ID and the From address. */
  readonly reportingMta: string;
  /** The From header address (default `MAILER-DAEMON@<reportingMta>`). */
  readonly from?: string;
  readonly now?: Date;
}

/** Expired mail fails with "delivery time expired" (RFC 3463 X.4.7), whatever the last temporary reply was. */
const EXPIRED_STATUS = '5.4.7';
// RFC 5322 caps a line at 998 octets; reply texts from remote servers are not ours to trust.
const MAX_TEXT = 800;

/**
 * Builds a bounce or delay notice addressed to `input.to` from the null sender, ready for
 * `QueueBackend.enqueue` (it is marked `isBounce`, so its own failures are never bounced).
 * Throws when asked to notify `<>`: that is a bug in the caller.
 */
export function buildDsn(input: DsnInput, options: DsnOptions): IncomingMessage {
  if (input.to === '') throw new Error('buildDsn: a notice to the null sender <> would start a bounce loop');
  const now = options.now ?? new Date();
  const host = options.reportingMta;
  const boundary = `${randomBytes(12).toString('hex')}/${host}`;
  const messageId = `${input.queueId}.${input.kind}.${randomBytes(6).toString('hex')}@${host}`;
  const from = options.from ?? `MAILER-DAEMON@${host}`;
  const bounce = input.kind === 'bounce';

  const headers = [
    `From: Mail Delivery System <${from}>`,
    `To: <${input.to}>`,
    `Subject: ${bounce ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)'}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${messageId}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="${boundary}"`,
    'Content-Transfer-Encoding: 8bit',
  ];

  const perMessage = [`Reporting-MTA: dns; ${host}`];
  if (input.envelope.envid !== undefined)
    perMessage.push(`Original-Envelope-Id: ${oneLine(input.envelope.envid)}`);
  perMessage.push(`X-Tern-Queue-ID: ${input.queueId}`, `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`);

  const perRecipient = input.recipients.map((r) => {
    const lines = [`Final-Recipient: rfc822; ${r.recipient.address}`];
    if (r.recipient.orcpt !== undefined) lines.push(`Original-Recipient: ${addressType(r.recipient.orcpt)}`);
    lines.push(`Action: ${r.action}`, `Status: ${statusOf(r)}`);
    const mta = remoteMtaName(r.recipient.remoteMta);
    if (mta !== undefined) lines.push(`Remote-MTA: dns; ${mta}`);
    if (r.reply !== undefined) lines.push(`Diagnostic-Code: smtp; ${replyLine(r.reply)}`);
    if (r.category !== undefined) lines.push(`X-Tern-Bounce-Category: ${r.category}`);
    lines.push(`Last-Attempt-Date: ${rfc5322Date(input.lastAttemptAt)}`);
    if (r.action === 'delayed' && input.willRetryUntil !== undefined) {
      lines.push(`Will-Retry-Until: ${rfc5322Date(input.willRetryUntil)}`);
    }
    return lines.join('\r\n');
  });

  const parts = [
    part('text/plain; charset=utf-8', humanText(input, host)),
    part('message/delivery-status', `${perMessage.join('\r\n')}\r\n\r\n${perRecipient.join('\r\n\r\n')}\r\n`),
    part('text/rfc822-headers', headerBlock(input.originalHeaders)),
  ];

  const text = `${headers.join('\r\n')}\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n${parts
    .map((p) => `--${boundary}\r\n${p}`)
    .join('\r\n')}\r\n--${boundary}--\r\n`;

  return {
    envelope: { mailFrom: '', recipients: [{ address: input.to }] },
    content: memorySource([Buffer.from(text, 'utf8')]),
    receivedAt: now.getTime(),
    messageId: `<${messageId}>`,
    isBounce: true,
    source: { listener: 'dsn' },
  };
}

/** How much of a stored message backends read to find its header block for a notice. */
export const HEADER_READ_LIMIT = 64 * 1024;

/**
 * The header block of a message, from its first bytes (at most {@link HEADER_READ_LIMIT} need be
 * read): everything before the empty line, or the whole prefix when the block is longer than that.
 */
export function headerBlockOf(prefix: Buffer): Buffer {
  const { headerEnd } = findHeaderEnd(prefix);
  return headerEnd === -1 ? prefix : prefix.subarray(0, headerEnd);
}

/** RFC 5322 date-time in UTC (`Tue, 28 Nov 2023 17:03:00 +0000`). */
function part(contentType: string, body: string): string {
  return `Content-Type: ${contentType}\r\n\r\n${body}`;
}

function statusOf(r: DsnRecipient): string {
  const enhanced = r.reply?.enhanced;
  if (r.action === 'delayed') return enhanced?.startsWith('4.') ? enhanced : '4.0.0';
  if (r.reason === 'expired') return EXPIRED_STATUS;
  return enhanced?.startsWith('5.') ? enhanced : '5.0.0';
}

function replyLine(reply: SmtpReply): string {
  return oneLine(`${reply.code} ${reply.enhanced} ${reply.text}`).slice(0, MAX_TEXT);
}

/** `mx.example.net[192.0.2.1]:25` → `mx.example.net`; a bare `[192.0.2.1]:25` → `192.0.2.1`. */
function remoteMtaName(remoteMta: string | undefined): string | undefined {
  if (remoteMta === undefined || remoteMta === '') return undefined;
  const match = /^([^[\s]*)(?:\[([^\]]*)\])?/.exec(remoteMta);
  const name = match?.[1] || match?.[2];
  return name ? oneLine(name) : undefined;
}

/** ORCPT arrives as `type;address` (RFC 3461); a bare address is rfc822. */
function addressType(orcpt: string): string {
  const semi = orcpt.indexOf(';');
  return oneLine(semi === -1 ? `rfc822; ${orcpt}` : `${orcpt.slice(0, semi)}; ${orcpt.slice(semi + 1)}`);
}

function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

function headerBlock(original: Buffer): string {
  const text = original.toString('utf8').replace(/\r?\n/g, '\r\n');
  if (text.trim() === '') return '\r\n';
  return text.endsWith('\r\n') ? text : `${text}\r\n`;
}

function humanText(input: DsnInput, host: string): string {
  const lines =
    input.kind === 'bounce'
      ? [
          `This is the mail system at host ${host}.`,
          '',
          'Your message could not be delivered to one or more recipients.',
          'It is attached below (headers only). The mail system said:',
        ]
      : [
          `This is the mail system at host ${host}.`,
          '',
          'Your message has not been delivered yet to the recipients below.',
          input.willRetryUntil === undefined
            ? 'The mail system will keep trying; you do not need to send it again.'
            : `The mail system will keep trying until ${rfc5322Date(input.willRetryUntil)}; you do not need to send it again.`,
        ];
  lines.push('');
  for (const r of input.recipients) {
    const why =
      r.reason === 'expired'
        ? 'gave up after retrying for too long'
        : r.reply === undefined
          ? 'no reply'
          : replyLine(r.reply);
    const last =
      r.reason === 'expired' && r.reply !== undefined ? ` (last reply: ${replyLine(r.reply)})` : '';
    lines.push(`<${r.recipient.address}>: ${why}${last}`);
  }
  return `${lines.join('\r\n')}\r\n`;
}
