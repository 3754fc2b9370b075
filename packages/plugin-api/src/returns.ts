// What hooks return, checked before it is used: a next hop without a host, a reject with a 2xx
// code or advice of the wrong shape is a bug in the plugin, reported as a hook failure, never
// quietly replaced by a default. Each check returns the problem in words, or undefined when fine.
import type { NextHop } from './envelope.js';
import type { BouncedAdvice, DeferredAdvice } from './hooks.js';
import { isValidReply } from './reply.js';
import type { Verdict } from './verdict.js';

const VERDICT_CLASSES: Readonly<Record<Verdict['kind'], readonly number[]>> = {
  continue: [],
  accept: [2],
  reject: [5],
  tempfail: [4],
  disconnect: [4, 5],
};

/** A verdict: a known kind, and a well-formed reply whose class fits it (reject 5xx, tempfail 4xx, ...). */
export function verdictProblem(value: unknown): string | undefined {
  if (!isRecord(value))
    return `${describe(value)} is not a verdict (use accept, reject, tempfail, disconnect)`;
  const kind = value.kind;
  if (typeof kind !== 'string' || !Object.hasOwn(VERDICT_CLASSES, kind)) {
    return `verdict kind ${JSON.stringify(kind)} is not one of ${Object.keys(VERDICT_CLASSES).join(', ')}`;
  }
  const classes = VERDICT_CLASSES[kind as Verdict['kind']];
  if (kind === 'continue' || (kind === 'accept' && value.reply === undefined)) return undefined;
  const reply = value.reply;
  if (!isRecord(reply)) return `a ${kind} verdict needs a reply { code, enhanced, text }`;
  const { code, enhanced, text } = reply;
  if (typeof code !== 'number' || !classes.includes(Math.floor(code / 100))) {
    return `a ${kind} verdict needs a ${classes.map((c) => `${c}xx`).join(' or ')} code, not ${String(code)}`;
  }
  if (typeof enhanced !== 'string' || !isValidReply(code, enhanced)) {
    return `reply ${code} ${String(enhanced)}: the enhanced code must be n.n.n with the class of the code`;
  }
  if (typeof text !== 'string' || /[\r\n]/.test(text)) {
    return 'the reply text must be one line of text (build verdicts with the helpers, which make it so)';
  }
  return undefined;
}

const TLS_MODES = new Set(['opportunistic', 'require', 'none', 'implicit']);
const HOP_KEYS: Readonly<Record<NextHop['type'], readonly string[]>> = {
  mx: ['type', 'domain', 'tls'],
  smtp: ['type', 'host', 'port', 'tls', 'auth'],
  lmtp: ['type', 'host', 'port', 'path', 'tls'],
  maildir: ['type', 'path'],
};

/** A next hop: a known type with the fields that type needs, and nothing it does not know. */
export function nextHopProblem(value: unknown): string | undefined {
  if (!isRecord(value))
    return `${describe(value)} is not a next hop ({ type: 'mx' | 'smtp' | 'lmtp' | 'maildir', ... })`;
  const type = value.type;
  if (typeof type !== 'string' || !Object.hasOwn(HOP_KEYS, type)) {
    return `next hop type ${JSON.stringify(type)} is not one of ${Object.keys(HOP_KEYS).join(', ')}`;
  }
  const allowed = HOP_KEYS[type as NextHop['type']];
  const extra = Object.keys(value).find((k) => !allowed.includes(k));
  if (extra !== undefined)
    return `a ${type} hop has no field ${JSON.stringify(extra)} (it has ${allowed.join(', ')})`;
  if (value.tls !== undefined && !TLS_MODES.has(value.tls as string)) {
    return `tls ${JSON.stringify(value.tls)} is not one of ${[...TLS_MODES].join(', ')}`;
  }
  if (value.port !== undefined && !isPort(value.port)) return `port ${String(value.port)} is not a TCP port`;
  switch (type) {
    case 'mx':
      return isName(value.domain) ? undefined : 'an mx hop needs a domain';
    case 'smtp': {
      if (!isName(value.host)) return 'an smtp hop needs a host';
      const auth = value.auth;
      if (
        auth !== undefined &&
        (!isRecord(auth) || typeof auth.user !== 'string' || typeof auth.pass !== 'string')
      ) {
        return 'auth must be { user, pass } strings';
      }
      return undefined;
    }
    case 'lmtp':
      if (value.host !== undefined && !isName(value.host))
        return 'an lmtp host must be a host name or address';
      if (value.path !== undefined && !isPath(value.path)) return 'an lmtp path must be a socket path';
      return undefined;
    default:
      return isPath(value.path) ? undefined : 'a maildir hop needs a path';
  }
}

/** Advice from a deferred hook: nothing, or `{ retryAt: Date }`. */
export function deferredAdviceProblem(value: unknown): string | undefined {
  const shape = adviceShape(value, ['retryAt']);
  if (shape) return shape;
  const { retryAt } = value as DeferredAdvice;
  if (retryAt !== undefined && !(retryAt instanceof Date && Number.isFinite(retryAt.getTime()))) {
    return `retryAt must be a Date, not ${describe(retryAt)}`;
  }
  return undefined;
}

/** Advice from a bounced hook: nothing, or `{ suppress?: boolean, redirectTo?: address }`. */
export function bouncedAdviceProblem(value: unknown): string | undefined {
  const shape = adviceShape(value, ['suppress', 'redirectTo']);
  if (shape) return shape;
  const { suppress, redirectTo } = value as BouncedAdvice;
  if (suppress !== undefined && typeof suppress !== 'boolean')
    return `suppress must be true or false, not ${describe(suppress)}`;
  if (
    redirectTo !== undefined &&
    (typeof redirectTo !== 'string' || !/^[^\s<>@]+@[^\s<>@]+$/.test(redirectTo))
  ) {
    return `redirectTo must be a mail address (local@domain), not ${describe(redirectTo)}`;
  }
  return undefined;
}

function adviceShape(value: unknown, keys: readonly string[]): string | undefined {
  if (!isRecord(value)) return `${describe(value)} is not advice ({ ${keys.join(', ')} })`;
  const extra = Object.keys(value).find((k) => !keys.includes(k));
  return extra === undefined
    ? undefined
    : `advice has no field ${JSON.stringify(extra)} (it has ${keys.join(', ')})`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isName(value: unknown): boolean {
  return typeof value === 'string' && /^[A-Za-z0-9.\-_:[\]]+$/.test(value);
}

function isPath(value: unknown): boolean {
  return typeof value === 'string' && value !== '' && !value.includes('\0');
}

function isPort(value: unknown): boolean {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 65_535;
}

/** A returned value in a few words, for the log line (never the value of a secret field). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (value instanceof Date) return 'a Date';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return 'an object';
  return String(value);
}
