// Replies on the outbound side in one place: parsing what a remote server says, classifying it
// into a recipient result, and the replies delivery itself gives when no server said anything.
import { type SmtpReply, smtpReply } from '@tern/plugin-api';
import type { AttemptResult } from '@tern/queue';

/** A reply as read off the wire: the basic code and the text of each line (code and separator removed). */
export interface WireReply {
  readonly code: number;
  readonly lines: readonly string[];
}

const ENHANCED_PREFIX = /^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)/;

/**
 * Characters of a server's text kept in a reply (as Postfix keeps `line_length_limit`, 2048): the
 * reply goes into every recipient's state, the queue and DSNs, so a server's 64 KiB must not.
 */
export const MAX_REPLY_TEXT = 2048;

function clip(text: string): string {
  return text.length > MAX_REPLY_TEXT ? `${text.slice(0, MAX_REPLY_TEXT - 1)}…` : text;
}

/**
 * Turns a wire reply into an SmtpReply. The server's enhanced code is used when it gives one whose class
 * matches the basic code (RFC 3463); otherwise one is derived as `class.0.0`. Multi-line text is joined
 * with a space; a repeated enhanced code at the start of continuation lines is dropped.
 */
export function toSmtpReply(wire: WireReply): SmtpReply {
  const cls = Math.floor(wire.code / 100);
  const first = wire.lines[0] ?? '';
  const match = ENHANCED_PREFIX.exec(first);
  const enhanced =
    match !== null && match[1] === String(cls) ? `${match[1]}.${match[2]}.${match[3]}` : `${cls}.0.0`;
  const text = wire.lines
    .map((line) => {
      const m = ENHANCED_PREFIX.exec(line);
      return m !== null && `${m[1]}.${m[2]}.${m[3]}` === enhanced ? line.slice(m[0].length) : line;
    })
    .join(' ')
    .trim();
  if (cls < 2 || cls > 5 || cls === 3) {
    // Only 2xx, 4xx and 5xx are outcomes; anything else where an outcome was due is a protocol error.
    return unexpectedReply(wire);
  }
  return smtpReply(wire.code, enhanced, text === '' ? '(no text)' : clip(text));
}

/** The outcome a reply means for a recipient: 2xx delivered, 4xx deferred, 5xx failed. */
export function classify(reply: SmtpReply): AttemptResult {
  if (reply.code >= 200 && reply.code < 300) return 'delivered';
  if (reply.code >= 500) return 'failed';
  return 'deferred';
}

/** A reply with a code we cannot use as an outcome (1xx, 3xx where no 3xx is due): retry later. */
export function unexpectedReply(wire: WireReply): SmtpReply {
  return smtpReply(
    451,
    '4.5.0',
    clip(`Unexpected reply from server: ${wire.code} ${wire.lines.join(' ')}`.trim()),
  );
}

/** Replies delivery gives itself: no remote server answered, or a local rule decided. */
export const DeliveryReplies = {
  /** RFC 7505: the domain publishes a null MX. */
  nullMx: (domain: string): SmtpReply =>
    smtpReply(550, '5.1.10', `Domain ${domain} does not accept mail (null MX)`),
  /** The recipient domain does not exist (NXDOMAIN). */
  noSuchDomain: (domain: string): SmtpReply =>
    smtpReply(550, '5.1.2', `Domain ${domain} does not exist (NXDOMAIN)`),
  /** The domain exists but has neither MX nor address records. */
  noMailHost: (domain: string): SmtpReply =>
    smtpReply(550, '5.1.2', `Domain ${domain} has no MX and no address records`),
  /** Every MX host name was looked up and none has an address. */
  mxHostsWithoutAddress: (domain: string): SmtpReply =>
    smtpReply(550, '5.4.4', `No MX host of ${domain} has an address`),
  dnsTemporary: (name: string, code: string): SmtpReply =>
    smtpReply(451, '4.4.3', `Temporary DNS failure looking up ${name} (${code})`),
  /** No address could be reached (refused, unreachable, timed out). */
  noConnection: (detail: string): SmtpReply =>
    smtpReply(451, '4.4.1', `No answer from any mail server: ${detail}`),
  /**
   * The server sent what we do not wait out (a reply too long or of too many lines, a reply nobody
   * asked for): the connection was closed. Temporary: the next attempt may meet a sane server.
   */
  protocolViolation: (remoteMta: string, detail: string): SmtpReply =>
    smtpReply(451, '4.5.0', `${remoteMta} broke the SMTP protocol: it sent ${detail}; connection closed`),
  /** The connection broke or timed out in the middle of a transaction. */
  connectionLost: (detail: string): SmtpReply =>
    smtpReply(451, '4.4.2', `Connection lost during the transaction: ${detail}`),
  tlsUnavailable: (host: string): SmtpReply =>
    smtpReply(451, '4.7.10', `TLS is required but ${host} does not offer STARTTLS`),
  tlsFailed: (host: string, detail: string): SmtpReply =>
    smtpReply(451, '4.7.5', `TLS with ${host} failed: ${detail}`),
  insecureAuth: (host: string): SmtpReply =>
    smtpReply(451, '4.7.10', `Not sending credentials to ${host} without TLS`),
  authFailed: (host: string, remote: string): SmtpReply =>
    smtpReply(451, '4.7.0', `Authentication to ${host} failed: ${remote}`),
  needs8BitMime: (host: string): SmtpReply =>
    smtpReply(
      554,
      '5.6.3',
      `Message has 8-bit content but ${host} does not support 8BITMIME; conversion is not supported`,
    ),
  needsSmtpUtf8: (host: string): SmtpReply =>
    smtpReply(554, '5.6.7', `Message needs SMTPUTF8 but ${host} does not support it`),
  tooBig: (host: string, size: number, limit: number): SmtpReply =>
    smtpReply(552, '5.3.4', `Message size ${size} exceeds the limit of ${host} (${limit} bytes)`),
  /** RFC 8689 §4.2.1: a REQUIRETLS message goes only where the next hop's TLS can be authenticated by policy. */
  requireTlsNoPolicy: (domain: string): SmtpReply =>
    smtpReply(
      550,
      '5.7.10',
      `REQUIRETLS needed: ${domain} has no MTA-STS or DANE policy that authenticates its mail servers`,
    ),
  requireTlsNotValidated: (host: string, detail: string): SmtpReply =>
    smtpReply(550, '5.7.10', `REQUIRETLS needed: TLS with ${host} was not validated (${detail})`),
  requireTlsNotOffered: (host: string): SmtpReply =>
    smtpReply(550, '5.7.10', `REQUIRETLS needed: ${host} does not offer REQUIRETLS`),
  badRecipient: (address: string): SmtpReply =>
    smtpReply(553, '5.1.3', `Recipient address cannot be sent in SMTP: ${JSON.stringify(address)}`),
  badSender: (address: string): SmtpReply =>
    smtpReply(553, '5.1.7', `Sender address cannot be sent in SMTP: ${JSON.stringify(address)}`),
  /** A back-off rule (or the circuit breaker) suspended the destination for a while. */
  suspended: (destination: string, rule: string): SmtpReply =>
    smtpReply(451, '4.7.0', `Delivery to ${destination} is suspended for a while (${rule}), will retry`),
  /** A per-destination concurrency or rate limit held the job longer than allowed. */
  throttled: (key: string): SmtpReply =>
    smtpReply(451, '4.7.0', `Delivery to ${key} is throttled by a local limit, will retry`),
  /** Something inside Tern failed (hook, message store); never leaks detail to the remote side. */
  localError: (detail: string): SmtpReply => smtpReply(451, '4.3.0', `Local problem: ${detail}`),
  /** The server did not take the recipient because the transaction had no other outcome for it. */
  noDataReply: smtpReply(451, '4.4.2', 'No reply was received for this recipient'),
} as const;
