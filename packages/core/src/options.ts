// Listener configuration: the typed options, every default in one place, and the validation that
// turns a bad value into an error naming the listener and the field.
import { type ListenerKind, type Logger, NetworkList, parseWith, TernError } from '@tern/plugin-api';
import type { z } from 'zod';
import { type listenerLimitsSchema, listenerSchema } from './schema.js';

export type BareLineEndingPolicy = 'reject' | 'normalize';

/**
 * Lines over 998 octets in a message (RFC 5322 §2.1.1). `reject`: 550 5.6.0 at the end of DATA.
 * `wrap`: body lines are broken with CRLF every 998 octets before any hook sees the message (so a
 * DKIM signature covers what is relayed); header lines over the limit are refused either way.
 */
export type LongLinePolicy = 'reject' | 'wrap';

/** A PEM key and certificate pair. */
export interface KeyPair {
  readonly key: string;
  readonly cert: string;
}

export interface ListenerTls extends KeyPair {
  /** Certificates by server name (SNI); clients asking for another name get the default pair. */
  readonly sni?: Readonly<Record<string, KeyPair>>;
  /** Oldest TLS version accepted (default TLSv1.2). */
  readonly minVersion?: 'TLSv1.2' | 'TLSv1.3';
}

export interface ListenerTimeouts {
  /** Idle time allowed while the client owes us input, in ms (RFC 5321 §4.5.3.2.7: 5 minutes). */
  readonly socket: number;
  /** Time allowed for the whole DATA phase, from 354 to the final dot, in ms. */
  readonly data: number;
  /** Time the sink may take to make a message durable before the client gets 451 4.3.0, in ms. */
  readonly enqueue: number;
  /** Time allowed for the reverse and forward lookups of a client address, in ms. */
  readonly dns: number;
  /**
   * Time allowed to receive one complete command line, from its first byte to its CRLF, in ms
   * (Postfix's smtpd_per_record_deadline): every byte resets the idle timeout, so without it a client
   * trickling a line byte by byte would keep its connection for ever. Also bounds a PROXY header,
   * the TLS handshake of an smtps listener and the one after STARTTLS. Over it: 421 4.4.2 and close.
   */
  readonly command: number;
  /**
   * Longest a connection may stay open, however busy, in ms. Past it the client gets 421 4.4.2 and
   * is closed at the first moment it is not sending or waiting for a message.
   */
  readonly session: number;
  /**
   * The shorter limits that apply while the listener is under stress (see `limits.stressThreshold`),
   * as Postfix does in overload; each is used only when below its normal value.
   */
  readonly stress: StressTimeouts;
}

/** Timeouts of a listener under stress, in ms (Postfix: `smtpd_timeout = ${stress?{10}:{300}}s`). */
export interface StressTimeouts {
  /** Idle time allowed while the client owes us input. */
  readonly socket: number;
  /** Time allowed to receive one command line (or PROXY header, or TLS handshake). */
  readonly command: number;
  /** Longest a connection may stay open. */
  readonly session: number;
}

export interface ListenerLimits {
  /** Largest message accepted, in bytes; advertised in EHLO SIZE. Over it: 552 5.3.4. */
  readonly maxMessageSize: number;
  /** Recipients per transaction; the next one gets 452 4.5.3. Never below 100 (RFC 5321 §4.5.3.1.8). */
  readonly maxRecipients: number;
  /** Longest command line in bytes, CRLF excluded. Longer lines get 500 5.5.2 and are not executed. */
  readonly maxLineLength: number;
  /** Open SMTP connections on this listener; the next one gets 421 4.7.0. */
  readonly maxConnections: number;
  /** Open SMTP connections from one client address; the next one gets 421 4.7.0. */
  readonly maxConnectionsPerIp: number;
  /** Error replies (4xx/5xx) one connection may collect before it gets 421 4.7.0 and is closed. */
  readonly maxErrors: number;
  /** Failed AUTH attempts per connection before 421 4.7.0 and close. */
  readonly maxAuthFailures: number;
  /** Received headers a message may carry when it arrives; more is a loop: 554 5.4.6. */
  readonly maxReceivedHeaders: number;
  /** Size of the header block in bytes; larger gets 552 5.3.4. */
  readonly maxHeaderBytes: number;
  /**
   * Share of maxConnections (above 0, at most 1) open at which the listener is under stress and
   * `timeouts.stress` apply to every connection on it, new and open.
   */
  readonly stressThreshold: number;
  readonly timeouts: ListenerTimeouts;
}

export interface ListenerOptions {
  /** Unique name, used in logs and in `source.listener` of queued messages. */
  readonly name: string;
  /** mx: port 25 from the Internet; submission: port 587 with STARTTLS and AUTH; smtps: port 465, TLS from the first byte. */
  readonly kind: ListenerKind;
  /**
   * Address to bind (default `::`: every IPv6 and IPv4 address, dual-stack; on a machine without
   * IPv6, `::` falls back to `0.0.0.0` with a warning).
   */
  readonly host?: string;
  /** Port to bind (default by kind: 25, 587, 465); 0 picks a free one. */
  readonly port?: number;
  /** The name in the banner, the EHLO reply and Received headers. */
  readonly hostname: string;
  readonly tls?: ListenerTls;
  /** Domains (and explicitly listed address literals such as `[192.0.2.1]`) this listener receives mail for. */
  readonly localDomains?: readonly string[];
  /** CIDR blocks (IPv4 or IPv6) whose clients may relay and, when enabled, use XCLIENT and PROXY. */
  readonly trustedNetworks?: readonly string[];
  /** No AUTH and no MAIL before STARTTLS (default: true for submission and smtps, false for mx). */
  readonly requireTls?: boolean;
  /** No MAIL before AUTH (default: true for submission and smtps, false for mx). */
  readonly requireAuth?: boolean;
  /** Offer AUTH PLAIN and LOGIN (default: true for submission and smtps, false for mx). */
  readonly auth?: boolean;
  /** Offer AUTH on connections without TLS (default false: passwords never cross the wire in clear). */
  readonly allowInsecureAuth?: boolean;
  /** What to do with bare CR, bare LF and NUL (default reject). */
  readonly bareLineEndings?: BareLineEndingPolicy;
  /** What to do with lines over 998 octets (default reject; see LongLinePolicy). */
  readonly longLines?: LongLinePolicy;
  /** Expect a PROXY protocol v1 header from clients in trustedNetworks (default false). */
  readonly proxy?: boolean;
  /** Accept XCLIENT from clients in trustedNetworks (default false). */
  readonly xclient?: boolean;
  /** Look up (and forward-confirm) the client's host name for Received headers (default true). */
  readonly reverseLookup?: boolean;
  /** Delay before answering the first failed AUTH, in ms; each further failure doubles it (default 1000). */
  readonly authFailureDelayMs?: number;
  /**
   * Wait before the banner, in ms: a client that talks before it is an early talker (a spam bot)
   * and is refused. Default 100 on mx listeners, 0 on submission and smtps; always 0 for trusted networks.
   */
  readonly greetingDelayMs?: number;
  readonly limits?: Partial<Omit<ListenerLimits, 'timeouts'>> & {
    readonly timeouts?: Partial<Omit<ListenerTimeouts, 'stress'>> & {
      readonly stress?: Partial<StressTimeouts>;
    };
  };
}

const MIB = 1024 * 1024;

/** Every address, IPv6 and IPv4 (IPv4 clients appear as `::ffff:a.b.c.d`, which intake normalises). */
export const DUAL_STACK_WILDCARD = '::';
/** Every IPv4 address: where `::` binds instead on a machine without IPv6. */
export const IPV4_WILDCARD = '0.0.0.0';

/** Every default of a listener, in one place. Kind-dependent ones are under `byKind`. */
export const LISTENER_DEFAULTS = {
  host: DUAL_STACK_WILDCARD,
  bareLineEndings: 'reject',
  longLines: 'reject',
  proxy: false,
  xclient: false,
  reverseLookup: true,
  allowInsecureAuth: false,
  authFailureDelayMs: 1000,
  byKind: {
    mx: { port: 25, requireTls: false, requireAuth: false, auth: false, greetingDelayMs: 100 },
    submission: { port: 587, requireTls: true, requireAuth: true, auth: true, greetingDelayMs: 0 },
    smtps: { port: 465, requireTls: true, requireAuth: true, auth: true, greetingDelayMs: 0 },
  },
  limits: {
    maxMessageSize: 25 * MIB,
    maxRecipients: 1000,
    // RFC 5321 §4.5.3.1.4 says 512 octets, but AUTH PLAIN lines with long passwords and MAIL
    // FROM with every ESMTP parameter exceed it in practice; 4096 bounds memory just as well.
    maxLineLength: 4096,
    maxConnections: 1000,
    maxConnectionsPerIp: 20,
    maxErrors: 10,
    maxAuthFailures: 5,
    maxReceivedHeaders: 100,
    maxHeaderBytes: MIB,
    stressThreshold: 0.8,
    timeouts: {
      socket: 5 * 60_000,
      data: 10 * 60_000,
      enqueue: 30_000,
      dns: 5_000,
      // A line is at most maxLineLength bytes, which any real client sends in one write.
      command: 60_000,
      // Long enough for a peer pushing a large batch over one connection; it then reconnects.
      session: 60 * 60_000,
      stress: { socket: 10_000, command: 10_000, session: 5 * 60_000 },
    },
  },
} as const satisfies {
  byKind: Record<
    ListenerKind,
    { port: number; requireTls: boolean; requireAuth: boolean; auth: boolean; greetingDelayMs: number }
  >;
  limits: ListenerLimits;
  [key: string]: unknown;
};

/** RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients per transaction. */
export const MIN_RECIPIENTS = 100;

/** Options with every default filled in and every value checked. */
export interface ResolvedListenerOptions {
  readonly name: string;
  readonly kind: ListenerKind;
  readonly host: string;
  readonly port: number;
  readonly hostname: string;
  readonly tls: ListenerTls | undefined;
  /** Lower-case ASCII (IDNA) forms of the local domains and address literals. */
  readonly localDomains: ReadonlySet<string>;
  readonly trustedNetworks: NetworkList;
  readonly requireTls: boolean;
  readonly requireAuth: boolean;
  readonly auth: boolean;
  readonly allowInsecureAuth: boolean;
  readonly bareLineEndings: BareLineEndingPolicy;
  readonly longLines: LongLinePolicy;
  readonly proxy: boolean;
  readonly xclient: boolean;
  readonly reverseLookup: boolean;
  readonly authFailureDelayMs: number;
  readonly greetingDelayMs: number;
  readonly limits: ListenerLimits;
}

/** A listener option that cannot work; the message names the listener and the field. */
export class ListenerConfigError extends TernError {
  readonly field: string;
  constructor(listener: string, field: string, problem: string) {
    super('TERN_ERR_LISTENER_CONFIG', `listener ${listener}: ${field}: ${problem}`);
    this.field = field;
  }
}

/** Fills in defaults and validates; throws ListenerConfigError. Warns (does not fail) when a limit is raised to its legal minimum. */
export function resolveListenerOptions(options: ListenerOptions, logger?: Logger): ResolvedListenerOptions {
  const name = typeof options.name === 'string' && options.name !== '' ? options.name : '(unnamed)';
  const fail = (field: string, problem: string): never => {
    throw new ListenerConfigError(name, field, problem);
  };
  if (name === '(unnamed)') fail('name', 'must be a non-empty string');
  const given = parseWith(listenerSchema, options, fail, '');
  if (given.hostname === undefined) fail('hostname', 'must be a fully qualified host name, got undefined');
  const byKind = LISTENER_DEFAULTS.byKind[given.kind];
  const tls = options.tls;
  if (tls !== undefined) {
    if (typeof tls.key !== 'string' || !tls.key.includes('PRIVATE KEY'))
      fail('tls.key', 'must be a PEM private key');
    if (typeof tls.cert !== 'string' || !tls.cert.includes('CERTIFICATE'))
      fail('tls.cert', 'must be a PEM certificate');
    for (const [servername, pair] of Object.entries(tls.sni ?? {})) {
      if (typeof pair?.key !== 'string' || typeof pair.cert !== 'string') {
        fail(`tls.sni.${servername}`, 'must be { key, cert } PEM strings');
      }
    }
  }
  if (given.kind === 'smtps' && tls === undefined)
    fail('tls', 'an smtps listener needs a key and certificate');
  const requireTls = given.requireTls ?? byKind.requireTls;
  if (requireTls && tls === undefined) fail('tls', 'requireTls is set, so a key and certificate are needed');

  const limits = resolveLimits(given.limits ?? {});
  if (limits.maxRecipients < MIN_RECIPIENTS) {
    logger?.warn(
      { listener: name, configured: limits.maxRecipients, used: MIN_RECIPIENTS },
      `listener ${name}: limits.maxRecipients raised to ${MIN_RECIPIENTS} (RFC 5321 4.5.3.1.8 requires at least 100)`,
    );
  }
  return {
    name,
    kind: given.kind,
    host: given.host ?? LISTENER_DEFAULTS.host,
    port: given.port ?? byKind.port,
    hostname: given.hostname as string,
    tls,
    localDomains: new Set(given.localDomains ?? []),
    trustedNetworks: NetworkList.parse(given.trustedNetworks ?? []),
    requireTls,
    requireAuth: given.requireAuth ?? byKind.requireAuth,
    auth: given.auth ?? byKind.auth,
    allowInsecureAuth: given.allowInsecureAuth ?? LISTENER_DEFAULTS.allowInsecureAuth,
    bareLineEndings: given.bareLineEndings ?? LISTENER_DEFAULTS.bareLineEndings,
    longLines: given.longLines ?? LISTENER_DEFAULTS.longLines,
    proxy: given.proxy ?? LISTENER_DEFAULTS.proxy,
    xclient: given.xclient ?? LISTENER_DEFAULTS.xclient,
    reverseLookup: given.reverseLookup ?? LISTENER_DEFAULTS.reverseLookup,
    authFailureDelayMs: given.authFailureDelayMs ?? LISTENER_DEFAULTS.authFailureDelayMs,
    greetingDelayMs: given.greetingDelayMs ?? byKind.greetingDelayMs,
    limits: { ...limits, maxRecipients: Math.max(limits.maxRecipients, MIN_RECIPIENTS) },
  };
}

/** The limits with every default filled in; `given` has passed listenerLimitsSchema. */
function resolveLimits(given: z.output<typeof listenerLimitsSchema>): ListenerLimits {
  const defaults = LISTENER_DEFAULTS.limits;
  const { timeouts = {}, ...counts } = given;
  return {
    ...defaults,
    ...counts,
    timeouts: {
      ...defaults.timeouts,
      ...timeouts,
      stress: { ...defaults.timeouts.stress, ...timeouts.stress },
    },
  } as ListenerLimits;
}

/** The time limits in force on a connection (see ListenerTimeouts), in ms. */
export interface Deadlines {
  readonly socket: number;
  readonly command: number;
  readonly session: number;
}

/** The normal deadlines, or under stress the shorter of each normal and stress pair. */
export function deadlinesOf(timeouts: ListenerTimeouts, underStress: boolean): Deadlines {
  const { socket, command, session, stress } = timeouts;
  if (!underStress) return { socket, command, session };
  return {
    socket: Math.min(socket, stress.socket),
    command: Math.min(command, stress.command),
    session: Math.min(session, stress.session),
  };
}

/** How many open connections put a listener under stress. */
export function stressLevel(limits: ListenerLimits): number {
  return Math.max(1, Math.ceil(limits.stressThreshold * limits.maxConnections));
}
