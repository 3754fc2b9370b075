// The closed verdict union that verdict hooks return, and the helpers that build it.
import { type SmtpReply, smtpReply } from './reply.js';

export type ContinueVerdict = { readonly kind: 'continue' };
export type AcceptVerdict = { readonly kind: 'accept'; readonly reply?: SmtpReply };
export type RejectVerdict = { readonly kind: 'reject'; readonly reply: SmtpReply };
export type TempfailVerdict = { readonly kind: 'tempfail'; readonly reply: SmtpReply };
export type DisconnectVerdict = { readonly kind: 'disconnect'; readonly reply: SmtpReply };

export type Verdict = ContinueVerdict | AcceptVerdict | RejectVerdict | TempfailVerdict | DisconnectVerdict;

export type VerdictKind = Verdict['kind'];

const CONTINUE: ContinueVerdict = Object.freeze({ kind: 'continue' });

/** Let the next hook decide. Returning nothing from a hook means the same. */
export function next(): ContinueVerdict {
  return CONTINUE;
}

/** Accept this stage now; later hooks of the same stage are skipped. */
export function accept(text?: string, code = 250, enhanced = '2.0.0'): AcceptVerdict {
  return text === undefined ? { kind: 'accept' } : { kind: 'accept', reply: smtpReply(code, enhanced, text) };
}

/** Refuse permanently: a 5xx code with a 5.x.x enhanced code. */
export function reject(code = 550, enhanced = '5.7.1', text = 'Rejected'): RejectVerdict {
  if (code < 500 || code > 599) throw new TypeError(`reject() takes a 5xx code, got ${code}`);
  return { kind: 'reject', reply: smtpReply(code, enhanced, text) };
}

/** Refuse for now: a 4xx code with a 4.x.x enhanced code; the client will retry. */
export function tempfail(code = 451, enhanced = '4.7.1', text = 'Try again later'): TempfailVerdict {
  if (code < 400 || code > 499) throw new TypeError(`tempfail() takes a 4xx code, got ${code}`);
  return { kind: 'tempfail', reply: smtpReply(code, enhanced, text) };
}

/** Answer and close the connection (421 by default). */
export function disconnect(code = 421, enhanced = '4.7.0', text = 'Closing connection'): DisconnectVerdict {
  if (code < 400 || code > 599) throw new TypeError(`disconnect() takes a 4xx or 5xx code, got ${code}`);
  return { kind: 'disconnect', reply: smtpReply(code, enhanced, text) };
}

const KINDS = new Set<string>(['continue', 'accept', 'reject', 'tempfail', 'disconnect']);

/** True for a well-formed verdict (used to catch hooks that return something else). */
export function isVerdict(value: unknown): value is Verdict {
  return (
    typeof value === 'object' && value !== null && KINDS.has((value as { kind?: unknown }).kind as string)
  );
}
