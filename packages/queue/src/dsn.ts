// Shared by every backend: builds RFC 3464 delivery status notifications (bounces and delay
// notices) as ordinary messages that go out through the same queue, from `<>`.
import { randomBytes } from 'node:crypto';
import {
  type BounceCategory,
  type Envelope,
  orcptForNotice,
  rfc5322Date,
  type SmtpReply,
} from '@tern/plugin-api';
import { findHeaderEnd, memorySource } from '@tern/plugin-api/host';
import type { IncomingMessage, RecipientState } from './contract.js';

/** One recipient line group of a report. */
export interface DsnRecipient {
  readonly recipient: RecipientState;
  /** RFC 3464 §2.3.3: `delivered` into a mailbox, `relayed` to a hop that does not report (no DSN). */
  readonly action: 'failed' | 'delayed' | 'delivered' | 'relayed';
  /** The last reply for this recipient (from the remote server or a local stand-in). */
  readonly reply?: SmtpReply;
  /** For failures: a 5xx (`permanent`) or the message outlived the retry schedule (`expired`). */
  readonly reason?: 'permanent' | 'expired';
  /** Why, as the bounce classifier sorted the reply (an `X-Tern-Bounce-Category` field, RFC 3464 §2.4). */
  readonly category?: BounceCategory;
}

/** What a notice reports on. */
export interface DsnInput {
  readonly kind: 'bounce' | 'delay' | 'success';
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
  /**
   * The whole original message, for a bounce the sender asked to get it back with (RET=FULL): the
   * notice then carries it as message/rfc822 instead of the header block.
   */
  readonly originalMessage?: Buffer;
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

  const headers = [
    `From: Mail Delivery System <${from}>`,
    `To: <${input.to}>`,
    `Subject: ${SUBJECTS[input.kind]}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${messageId}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="${boundary}"`,
    'Content-Transfer-Encoding: 8bit',
  ];

  const perMessage = [`Reporting-MTA: dns; ${host}`];
  // RFC 3464 §2.2.1 and §2.3.1: the ENVID and ORCPT as the client meant them (envelopes hold them decoded).
  if (input.envelope.envid !== undefined)
    perMessage.push(`Original-Envelope-Id: ${oneLine(input.envelope.envid)}`);
  perMessage.push(`X-Tern-Queue-ID: ${input.queueId}`, `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`);

  const perRecipient = input.recipients.map((r) => {
    const lines = [`Final-Recipient: rfc822; ${r.recipient.address}`];
    if (r.recipient.orcpt !== undefined)
      lines.push(`Original-Recipient: ${oneLine(orcptForNotice(r.recipient.orcpt))}`);
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

  // The returned message stays bytes: its 8-bit text need not be UTF-8.
  const returned =
    input.originalMessage === undefined
      ? Buffer.from(part('text/rfc822-headers', headerBlock(input.originalHeaders)), 'utf8')
      : Buffer.concat([Buffer.from(part('message/rfc822', ''), 'utf8'), endingInCrlf(input.originalMessage)]);
  const parts = [
    Buffer.from(part('text/plain; charset=utf-8', humanText(input, host)), 'utf8'),
    Buffer.from(
      part(
        'message/delivery-status',
        `${perMessage.join('\r\n')}\r\n\r\n${perRecipient.join('\r\n\r\n')}\r\n`,
      ),
      'utf8',
    ),
    returned,
  ];
  const chunks = [
    Buffer.from(`${headers.join('\r\n')}\r\n\r\nThis is a MIME-encapsulated message.\r\n`, 'utf8'),
  ];
  for (const p of parts) chunks.push(Buffer.from(`\r\n--${boundary}\r\n`), p);
  chunks.push(Buffer.from(`\r\n--${boundary}--\r\n`));

  return {
    // RFC 8689 §5: a notice about a REQUIRETLS message asks for REQUIRETLS too, where the hop takes it.
    envelope: {
      mailFrom: '',
      recipients: [{ address: input.to }],
      ...(input.envelope.requireTls === true ? { requireTls: true } : {}),
    },
    content: memorySource([Buffer.concat(chunks)]),
    receivedAt: now.getTime(),
    messageId: `<${messageId}>`,
    isBounce: true,
    source: { listener: 'dsn' },
  };
}

const SUBJECTS: Readonly<Record<DsnInput['kind'], string>> = {
  bounce: 'Undelivered Mail Returned to Sender',
  delay: 'Delayed Mail (still being retried)',
  success: 'Successful Mail Delivery Report',
};

/**
 * The largest message a bounce returns whole under RET=FULL (Postfix's bounce_size_limit): a bigger
 * one comes back as its header block.
 */
export const RETURN_FULL_LIMIT = 50_000;

/**
 * Whether a bounce returns the whole message (RFC 3461 §4.3): only when the sender asked with
 * RET=FULL, and never for a REQUIRETLS message (RFC 8689 §5: as if RET=HDRS, since the notice may
 * travel without TLS). Without RET, headers only.
 */
export function returnsFullMessage(envelope: Envelope): boolean {
  return envelope.ret === 'FULL' && envelope.requireTls !== true;
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
  if (r.action === 'delivered' || r.action === 'relayed')
    return enhanced?.startsWith('2.') ? enhanced : '2.0.0';
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

function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

/** The stored message (CRLF line ends already) ending in a line break, so the boundary starts a line. */
function endingInCrlf(original: Buffer): Buffer {
  return original.subarray(-2).toString('latin1') === '\r\n'
    ? original
    : Buffer.concat([original, Buffer.from('\r\n')]);
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
          `It is attached below${input.originalMessage === undefined ? ' (headers only)' : ''}. The mail system said:`,
        ]
      : input.kind === 'success'
        ? [
            `This is the mail system at host ${host}.`,
            '',
            'Your message was delivered to the recipients below, as you asked to be told.',
            ...(input.recipients.some((r) => r.action === 'relayed')
              ? [
                  '"relayed": it went on to a system that does not send such reports, so you may hear nothing more.',
                ]
              : []),
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
      r.action === 'delivered' || r.action === 'relayed'
        ? `${r.action}${r.reply === undefined ? '' : ` (${replyLine(r.reply)})`}`
        : r.reason === 'expired'
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
