// Core's SMTP replies and the bridge to smtp-server's reply writer: every error reply leaves with
// exactly one RFC 3463 enhanced status code and a text that says nothing about our internals.
import { type SmtpReply, smtpReply } from '@tern/plugin-api';
import { Replies } from '@tern/plugin-api/host';

/** Replies core gives on top of the shared ones in @tern/plugin-api. */
export const CoreReplies = {
  ...Replies,
  bareLineEndingCommand: smtpReply(500, '5.5.2', 'Command line must end with CRLF'),
  controlInCommand: smtpReply(500, '5.5.2', 'Command line contains a bare CR or NUL'),
  authUnavailable: smtpReply(502, '5.5.1', 'AUTH not available'),
  authTooManyFailures: smtpReply(421, '4.7.0', 'Too many failed authentication attempts, closing connection'),
  authTemporaryFailure: smtpReply(454, '4.7.0', 'Temporary authentication failure'),
  authzidMismatch: smtpReply(535, '5.7.8', 'Authorization identity must match the authentication identity'),
  xclientDenied: smtpReply(550, '5.7.0', 'XCLIENT not allowed'),
  unknownParameter: smtpReply(555, '5.5.4', 'MAIL FROM/RCPT TO parameter not recognized'),
  headerTooBig: smtpReply(552, '5.3.4', 'Message header block exceeds fixed maximum size'),
  dataTimeout: smtpReply(421, '4.4.2', 'Timeout waiting for the end of DATA, closing connection'),
  commandTimeout: smtpReply(
    421,
    '4.4.2',
    'Timeout waiting for the end of the command line, closing connection',
  ),
  idleTimeout: smtpReply(421, '4.4.2', 'Timeout waiting for a command, closing connection'),
  sessionTimeout: smtpReply(421, '4.4.2', 'Connection time limit reached, closing connection'),
  localError421: smtpReply(421, '4.3.0', 'Local error, closing connection'),
  connectionLost: smtpReply(451, '4.4.2', 'Connection lost during DATA'),
  lineTooLongInMessage: smtpReply(
    550,
    '5.6.0',
    'Message has a line longer than 998 octets (RFC 5322 2.1.1); use a transfer encoding such as quoted-printable',
  ),
  insufficientStorage: smtpReply(451, '4.3.1', 'Insufficient system storage, please try again later'),
} as const satisfies Record<string, SmtpReply>;

/** A DSN parameter (ENVID, ORCPT) that is malformed or too long (RFC 3461 §4): a syntax error in a parameter. */
export function badDsnParameterReply(problem: string): SmtpReply {
  return smtpReply(501, '5.5.4', problem);
}

/** The success reply after DATA, once the sink has made the message durable. */
export function queuedReply(queueId: string): SmtpReply {
  return smtpReply(250, '2.0.0', `queued as ${queueId}`);
}

/** An SMTP reply as smtp-server's callbacks expect an error: `responseCode` and the text `n.n.n text`. */
export interface ReplyError extends Error {
  readonly responseCode: number;
  readonly reply: SmtpReply;
}

export function replyError(reply: SmtpReply): ReplyError {
  const error = new Error(`${reply.enhanced} ${reply.text}`) as Error & {
    responseCode: number;
    reply: SmtpReply;
  };
  error.responseCode = reply.code;
  error.reply = reply;
  return error;
}

// What smtp-server's reply writer (3.21.6) means by the contexts it passes with its error
// replies, and its enhanced code for each error reply code otherwise (RFC 3463). Owned here so
// the enhanced codes of every reply, core's and smtp-server's, are decided in one module.
const SERVER_CONTEXT_CODES: Readonly<Record<string, string>> = {
  NOT_AUTHORIZED: '5.7.0',
  TOO_MANY_RECIPIENTS: '4.5.3',
  MESSAGE_TOO_BIG: '5.3.4',
  SENDER_SYNTAX_ERROR: '5.1.7',
  MAILBOX_SYNTAX_ERROR: '5.1.3',
};
const SERVER_CODE_CODES: Readonly<Record<number, string>> = {
  420: '4.4.2',
  421: '4.4.2',
  450: '4.2.1',
  451: '4.3.0',
  452: '4.2.2',
  454: '4.7.0',
  500: '5.5.2',
  501: '5.5.4',
  502: '5.5.1',
  503: '5.5.1',
  504: '5.5.4',
  521: '5.3.2',
  523: '5.3.4',
  530: '5.7.0',
  535: '5.7.8',
  538: '5.7.0',
  550: '5.1.1',
  551: '5.1.6',
  552: '5.2.2',
  553: '5.1.3',
  554: '5.6.0',
  555: '5.5.4',
  556: '5.1.10',
  557: '5.7.1',
  558: '5.2.3',
};
// smtp-server names the command as the context of some replies; HELO and EHLO replies carry no code.
const UNCODED_CONTEXTS = new Set(['HELO', 'EHLO', 'LHLO']);

/**
 * The enhanced code for one of smtp-server's error replies, from the `context` it passed to its
 * reply writer; empty when there is none, and serverErrorText falls back to the class. Its
 * `false` ("no code", on HELO/EHLO syntax errors) is overruled: every error reply gets one.
 */
export function serverEnhancedCode(code: number, context: unknown): string {
  if (typeof context !== 'string') return SERVER_CODE_CODES[code] ?? '';
  if (UNCODED_CONTEXTS.has(context)) return '';
  return SERVER_CONTEXT_CODES[context] ?? SERVER_CODE_CODES[code] ?? '';
}

const LEADING_ENHANCED = /^([245])\.\d{1,3}\.\d{1,3}(?: |$)/;

/** True when `text` already starts with an enhanced code of the same class as `code`. */
export function hasEnhancedCode(code: number, text: string): boolean {
  const match = LEADING_ENHANCED.exec(text);
  return match !== null && match[1] === String(code)[0];
}

// smtp-server maps every 421 to 4.4.2 (timeout). Its 421s mean different things; these say which.
const SERVER_421: readonly [RegExp, string][] = [
  [/timeout/i, '4.4.2'],
  [/shutting down/i, '4.3.2'],
  [/too many|too soon|not allowed|HTTP/i, '4.7.0'],
];

/**
 * Rewrites one of smtp-server's own error texts into `n.n.n text`. `enhanced` is what
 * smtp-server's table would give for the reply's context (empty where it gives none, as on
 * HELO/EHLO replies); the class fallback covers the rest.
 */
export function serverErrorText(code: number, text: string, enhanced: string): string {
  const clean = text.replace(/^Error:\s*/i, '').trim() || 'Error';
  const chosen =
    (code === 421 ? SERVER_421.find(([pattern]) => pattern.test(clean))?.[1] : undefined) ??
    (enhanced !== '' && enhanced[0] === String(code)[0] ? enhanced : `${String(code)[0]}.0.0`);
  return `${chosen} ${clean}`;
}
