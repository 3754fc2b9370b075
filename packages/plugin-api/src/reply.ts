// SMTP replies in one place: basic codes (RFC 5321) with enhanced status codes (RFC 3463).

/** A complete SMTP reply: basic code, enhanced status code and human text. */
export interface SmtpReply {
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
}

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})$/;

/** True when `enhanced` is a well-formed RFC 3463 code whose class matches the basic code's class. */
export function isValidReply(code: number, enhanced: string): boolean {
  if (!Number.isInteger(code) || code < 200 || code > 599) return false;
  const match = ENHANCED.exec(enhanced);
  return match !== null && match[1] === String(code)[0];
}

/** Builds a reply, throwing on an impossible pairing such as 550 with 4.x.x: that is a bug in the caller. */
export function smtpReply(code: number, enhanced: string, text: string): SmtpReply {
  if (!isValidReply(code, enhanced)) {
    throw new TypeError(
      `invalid SMTP reply ${code} ${enhanced}: the enhanced code must be n.n.n with the class of the code`,
    );
  }
  // A reply text must stay one line: a CR or LF would let text inject a second reply.
  return { code, enhanced, text: text.replace(/[\r\n]+/g, ' ') };
}

/** The wire form, e.g. `550 5.7.1 Relaying denied`. */
export function formatReply(reply: SmtpReply): string {
  return `${reply.code} ${reply.enhanced} ${reply.text}`;
}

/**
 * Why a recipient was not delivered, as a closed set every part of Tern speaks (log lines, timelines,
 * metric labels, DSNs, webhooks, suppression rules). The bounce classifier in @tern/queue picks one
 * from a failure reply; `transient` is a temporary failure without a known cause, `unknown` a
 * permanent one.
 */
export const BOUNCE_CATEGORIES = [
  'bad-mailbox',
  'inactive',
  'quota',
  'dns',
  'routing',
  'policy',
  'spam-block',
  'content',
  'transient',
  'unknown',
] as const;

export type BounceCategory = (typeof BOUNCE_CATEGORIES)[number];

/** Narrows a string (from a config, a stored record, a query) to a category. */
export function isBounceCategory(value: unknown): value is BounceCategory {
  return typeof value === 'string' && (BOUNCE_CATEGORIES as readonly string[]).includes(value);
}

/** Replies Tern itself gives; plugins build their own with the verdict helpers. */
export const Replies = {
  ok: smtpReply(250, '2.0.0', 'OK'),
  /** Something inside Tern failed (a hook threw or timed out, the queue was unreachable). Never leaks detail. */
  localError: smtpReply(451, '4.3.0', 'Temporary local problem, please try again later'),
  relayDenied: smtpReply(554, '5.7.1', 'Relay access denied'),
  authRequired: smtpReply(530, '5.7.0', 'Authentication required'),
  tlsRequired: smtpReply(530, '5.7.0', 'Must issue a STARTTLS command first'),
  authFailed: smtpReply(535, '5.7.8', 'Authentication credentials invalid'),
  badSyntax: smtpReply(501, '5.5.4', 'Syntax error in parameters or arguments'),
  badSequence: smtpReply(503, '5.5.1', 'Bad sequence of commands'),
  badAddress: smtpReply(553, '5.1.3', 'Bad destination mailbox address syntax'),
  badSender: smtpReply(553, '5.1.7', 'Bad sender mailbox address syntax'),
  tooManyRecipients: smtpReply(452, '4.5.3', 'Too many recipients'),
  messageTooBig: smtpReply(552, '5.3.4', 'Message size exceeds fixed maximum message size'),
  bareLineEnding: smtpReply(550, '5.6.0', 'Message contains bare CR, bare LF or NUL; use CRLF line endings'),
  loopDetected: smtpReply(554, '5.4.6', 'Too many Received headers: mail loop detected'),
  lineTooLong: smtpReply(500, '5.5.2', 'Line too long'),
  tooManyErrors: smtpReply(421, '4.7.0', 'Too many errors, closing connection'),
  tooManyConnections: smtpReply(421, '4.7.0', 'Too many connections, try again later'),
  shuttingDown: smtpReply(421, '4.3.2', 'Service shutting down, try again later'),
} as const satisfies Record<string, SmtpReply>;
