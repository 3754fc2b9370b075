// Envelope vocabulary shared by intake, queue and delivery.
import type { ByteSource } from './source.js';

/** ESMTP parameters of MAIL FROM or RCPT TO, keys upper-cased (`SIZE`, `BODY`, `NOTIFY`, ...). */
export type SmtpParams = Readonly<Record<string, string | true>>;

export interface EnvelopeRecipient {
  /** The mailbox as given, without angle brackets. */
  readonly address: string;
  /** DSN NOTIFY (RFC 3461), when the client asked. */
  readonly notify?: readonly ('SUCCESS' | 'FAILURE' | 'DELAY' | 'NEVER')[];
  /** DSN ORCPT (RFC 3461 §4.2) as `addr-type;address`, the xtext decoded, when the client gave one. */
  readonly orcpt?: string;
}

export interface Envelope {
  /** The return path without angle brackets; '' is the null sender `<>` (bounces). */
  mailFrom: string;
  recipients: EnvelopeRecipient[];
  /** The message needs SMTPUTF8 from every next hop (RFC 6531). */
  smtputf8?: boolean;
  /** Declared body type (RFC 6152). */
  body?: '7BIT' | '8BITMIME' | 'BINARYMIME';
  /** DSN envelope id (RFC 3461 §4.4), the xtext decoded, and RET. */
  envid?: string;
  ret?: 'FULL' | 'HDRS';
  /**
   * `MAIL FROM:<...> REQUIRETLS` (RFC 8689): relay only over TLS validated by MTA-STS or DANE, to
   * hops that offer REQUIRETLS, else bounce. It overrides a `TLS-Required: No` header.
   */
  requireTls?: boolean;
  /**
   * The message carries `TLS-Required: No` (RFC 8689 §3), read at intake: relay it even where the
   * recipient's MTA-STS or DANE policy cannot be met (TLS is still tried). Never set with `requireTls`.
   */
  tlsRequiredNo?: boolean;
  /**
   * Tags the message carries (the injection API's `tags`, or `X-Tern-Tag` header fields of an
   * authenticated or trusted client, removed at intake): for events, webhooks, route hooks (pool
   * selection) and suppression scopes. Never sent onward. At most MAX_TAGS, each matching TAG_PATTERN.
   */
  tags?: string[];
  /** The id of the API key that injected the message over HTTP. */
  apiKey?: string;
}

/** The header field an authenticated or trusted SMTP client tags a message with; intake removes it. */
export const TAG_HEADER = 'X-Tern-Tag';

/** One tag: a short word of letters, digits, `_`, `.` and `-`. */
export const TAG_PATTERN: RegExp = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Tags one message may carry. */
export const MAX_TAGS = 10;

/**
 * The tags of `X-Tern-Tag` field values (each one tag or a comma-separated list) added to `known`,
 * deduplicated; a problem to answer when one is not a tag or there are too many.
 */
export function parseTagFields(
  values: readonly string[],
  known: readonly string[] = [],
): { tags: string[] } | { problem: string } {
  const tags = new Set(known);
  for (const value of values) {
    for (const raw of value.split(',')) {
      const tag = raw.trim();
      if (tag === '') continue;
      if (!TAG_PATTERN.test(tag)) {
        return {
          problem: `X-Tern-Tag ${JSON.stringify(tag.slice(0, 80))} is not a tag (letters, digits, _ . -, at most 64)`,
        };
      }
      tags.add(tag);
    }
  }
  if (tags.size > MAX_TAGS) return { problem: `at most ${MAX_TAGS} tags per message` };
  return { tags: [...tags] };
}

/** Splits `local@domain` at the last @. The domain comes back lower-cased; '' for the null sender. */
export function splitAddress(address: string): { local: string; domain: string } {
  const at = address.lastIndexOf('@');
  if (at === -1) return { local: address, domain: '' };
  return { local: address.slice(0, at), domain: address.slice(at + 1).toLowerCase() };
}

/** The lower-cased domain of an address ('' when there is none). */
export function domainOf(address: string): string {
  return splitAddress(address).domain;
}

/** How a next hop's TLS is handled. */
export type TlsMode =
  /** STARTTLS when offered, without verifying the certificate; plain text when the handshake fails. */
  | 'opportunistic'
  /** STARTTLS required and the certificate verified against the host name. */
  | 'require'
  /** Never TLS. */
  | 'none'
  /** TLS from the first byte (port 465 style). */
  | 'implicit';

/** Where a delivery goes next. */
export type NextHop =
  /** Resolve the MX of `domain` (RFC 5321 §5.1). */
  | { readonly type: 'mx'; readonly domain: string; readonly tls?: TlsMode }
  /** A fixed SMTP host: a smarthost or a static route. */
  | {
      readonly type: 'smtp';
      readonly host: string;
      readonly port?: number;
      readonly tls?: TlsMode;
      readonly auth?: { readonly user: string; readonly pass: string };
    }
  /** Local delivery to a mailbox server over LMTP (RFC 2033), by TCP or by UNIX socket path. */
  | {
      readonly type: 'lmtp';
      readonly host?: string;
      readonly port?: number;
      readonly path?: string;
      readonly tls?: TlsMode;
    }
  /** Local delivery into Maildir folders under `path` (one folder per recipient local part). */
  | { readonly type: 'maildir'; readonly path: string };

/**
 * What intake hands to the queue after DATA (core produces it, every queue backend takes it).
 * Nothing is acknowledged with 250 before the queue has made it durable.
 */
export interface AcceptedMessage {
  readonly envelope: Envelope;
  /**
   * The whole message (headers, empty line, body): in memory when small, partly spooled to disk
   * when large. Read it as a stream; a queue must not join it into one buffer.
   */
  readonly content: ByteSource;
  /** Some byte has the high bit set (needs 8BITMIME onward); undefined when intake did not look. */
  readonly eightBit?: boolean;
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
  /** A queue hook asked to hold (quarantine) the message: queue it held, deliver nothing until released. */
  readonly hold?: string;
}
