// The hook catalogue: every hook Tern fires, its context, what it may return and how it runs.
// One interface (HookContexts + HookResults) so a plugin's hooks are checked by the compiler.
import type { Envelope, EnvelopeRecipient, NextHop, SmtpParams } from './envelope.js';
import type { Headers } from './headers.js';
import type { Logger } from './logger.js';
import type { MessageView } from './message.js';
import type { BounceCategory, SmtpReply } from './reply.js';
import type { AnyResultKey, Results } from './results.js';
import type { Verdict } from './verdict.js';

export type Awaitable<T> = T | Promise<T>;

export type ListenerKind = 'mx' | 'submission' | 'smtps';

export interface ListenerInfo {
  readonly name: string;
  readonly kind: ListenerKind;
  /** The name this listener gives in its banner, EHLO and Received headers. */
  readonly hostname: string;
  readonly port: number;
}

export interface TlsInfo {
  readonly protocol: string;
  readonly cipher: string;
  readonly servername?: string;
}

/** What is known about one SMTP connection. Core fills it in as the session advances. */
export interface SessionInfo {
  readonly id: string;
  readonly listener: ListenerInfo;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** The client came from a configured trusted network (may relay, may use XCLIENT/PROXY). */
  readonly trusted: boolean;
  readonly startedAt: number;
  /** The HELO/EHLO/LHLO argument, once given. */
  readonly helo: string | undefined;
  readonly tls: TlsInfo | undefined;
  /** The authenticated user name, once AUTH succeeded. */
  readonly user: string | undefined;
}

/** One mail transaction (MAIL FROM to end of DATA or RSET). */
export interface TransactionInfo {
  readonly id: string;
  /** The return path; '' is `<>`. */
  readonly mailFrom: string;
  readonly mailParams: SmtpParams;
  /** Recipients accepted so far. */
  readonly recipients: readonly EnvelopeRecipient[];
}

/** The fields every hook gets. */
export interface BaseContext {
  /** This plugin's logger, bound to the plugin and hook names (pino's API). */
  readonly log: Logger;
  readonly hook: HookName;
  /**
   * Fires when the hook should stop: its timeout passed (the reason is a `TimeoutError` naming
   * plugin, hook and timeout), the SMTP client went away while the hook was deciding something for
   * it, or the process is shutting down. Pass it on to what the hook waits for (`fetch(url, {
   * signal })`, DNS, timers); once it fires the runner no longer waits for the hook's answer.
   */
  readonly signal: AbortSignal;
}

export interface SessionContext<S> extends BaseContext {
  readonly session: SessionInfo;
  /** This plugin's per-connection state (from `state.session()`). */
  readonly sessionState: S;
  /**
   * Outcomes plugins publish for later hooks of this session (an SPF result, DNSBL hits, a
   * score): read any key, set the keys this plugin lists in `publishes`. See results.ts.
   */
  readonly results: Results;
}

export interface TransactionContext<S, T> extends SessionContext<S> {
  readonly transaction: TransactionInfo;
  /** This plugin's per-transaction state (from `state.transaction()`), fresh for each MAIL FROM. */
  readonly transactionState: T;
}

export type ConnectContext<S> = SessionContext<S>;

export interface HeloContext<S> extends SessionContext<S> {
  readonly command: 'HELO' | 'EHLO' | 'LHLO';
  readonly hostname: string;
}

export interface AuthContext<S> extends SessionContext<S> {
  readonly method: 'PLAIN' | 'LOGIN';
  readonly username: string;
  readonly password: string;
}

export interface MailFromContext<S, T> extends SessionContext<S> {
  /** The return path; '' is `<>`. */
  readonly address: string;
  readonly params: SmtpParams;
  /** This plugin's state for the transaction that this MAIL FROM opens. */
  readonly transactionState: T;
}

export interface RcptToContext<S, T> extends TransactionContext<S, T> {
  readonly recipient: EnvelopeRecipient;
  readonly params: SmtpParams;
  /** Whether the recipient's domain is one this server receives mail for. */
  readonly isLocalDomain: boolean;
  /** Whether this client may relay (authenticated or from a trusted network). */
  readonly mayRelay: boolean;
}

export interface HeadersContext<S, T> extends TransactionContext<S, T> {
  /** The header block; change it in place. */
  readonly headers: Headers;
}

export interface MessageContext<S, T> extends TransactionContext<S, T> {
  readonly message: MessageView;
  /** The tags the message carries (see Envelope.tags), known only now for SMTP (X-Tern-Tag). */
  readonly tags: readonly string[];
}

export interface QueueContext<S, T> extends TransactionContext<S, T> {
  /** Change headers in place (DKIM prepends its signature here). */
  readonly message: MessageView;
  /** Change recipients or the return path in place. */
  readonly envelope: Envelope;
  /**
   * Queue the message but keep it undelivered until an operator releases it (quarantine). The
   * client still gets 250: the message is durable, just held. The reason shows in queue listings.
   */
  hold(reason: string): void;
}

export interface QueuedContext<S, T> extends TransactionContext<S, T> {
  readonly queueId: string;
  readonly envelope: Envelope;
}

export interface CloseContext<S> extends SessionContext<S> {}

/** Outbound hooks run in the delivery worker, outside any SMTP session. */
export interface DeliveryContext extends BaseContext {
  readonly queueId: string;
  readonly envelope: Envelope;
  /** Delivery attempts made before this one. */
  readonly attempt: number;
}

export interface RouteContext extends DeliveryContext {
  /** The recipient domain being routed. */
  readonly domain: string;
  readonly recipients: readonly EnvelopeRecipient[];
}

export interface BeforeSendContext extends DeliveryContext {
  readonly hop: NextHop;
  readonly recipients: readonly EnvelopeRecipient[];
  /** Change headers in place; the body is read-only here. */
  readonly message: MessageView;
}

export interface RecipientResult {
  readonly recipient: EnvelopeRecipient;
  readonly reply: SmtpReply;
  /** Deferred and bounced results: why, as the bounce classifier sorted the reply. */
  readonly category?: BounceCategory;
}

export interface DeliveredContext extends DeliveryContext {
  readonly hop: NextHop;
  /** The host that accepted, `name[address]:port`. */
  readonly remoteMta: string;
  readonly results: readonly RecipientResult[];
}

export interface DeferredContext extends DeliveryContext {
  readonly results: readonly RecipientResult[];
  /** When the retry schedule would try again. */
  readonly nextAttemptAt: Date;
}

export interface BouncedContext extends DeliveryContext {
  readonly results: readonly RecipientResult[];
  /** Why: a permanent reply, or the message outlived the retry schedule. */
  readonly reason: 'permanent' | 'expired';
}

export interface LifecycleContext extends BaseContext {}

/** A deferred hook may move the next attempt. */
export interface DeferredAdvice {
  readonly retryAt?: Date;
}

/** A bounced hook may suppress the bounce or send it elsewhere. */
export interface BouncedAdvice {
  readonly suppress?: boolean;
  readonly redirectTo?: string;
}

/** Every hook's context, by name. S and T are the plugin's session and transaction state. */
export interface HookContexts<S = unknown, T = unknown> {
  connect: ConnectContext<S>;
  helo: HeloContext<S>;
  auth: AuthContext<S>;
  mailFrom: MailFromContext<S, T>;
  rcptTo: RcptToContext<S, T>;
  headers: HeadersContext<S, T>;
  message: MessageContext<S, T>;
  queue: QueueContext<S, T>;
  queued: QueuedContext<S, T>;
  close: CloseContext<S>;
  route: RouteContext;
  beforeSend: BeforeSendContext;
  delivered: DeliveredContext;
  deferred: DeferredContext;
  bounced: BouncedContext;
  init: LifecycleContext;
  shutdown: LifecycleContext;
}

/** What each hook may return. `void` always means "no opinion". */
export interface HookResults {
  connect: Verdict | void;
  helo: Verdict | void;
  auth: Verdict | void;
  mailFrom: Verdict | void;
  rcptTo: Verdict | void;
  headers: void;
  message: Verdict | void;
  queue: void;
  queued: void;
  close: void;
  route: NextHop | void;
  beforeSend: void;
  delivered: void;
  deferred: DeferredAdvice | void;
  bounced: BouncedAdvice | void;
  init: void;
  shutdown: void;
}

export type HookName = keyof HookContexts;

/**
 * How each hook runs:
 * - verdict: in order, stops at the first verdict that is not `continue`;
 * - first: in order, stops at the first defined result (route);
 * - transform: in order, each sees the previous one's changes;
 * - advise: in order, later advice overrides earlier (deferred, bounced);
 * - observe: all at once; results and failures never change the outcome.
 */
export const HOOK_KINDS = {
  connect: 'verdict',
  helo: 'verdict',
  auth: 'verdict',
  mailFrom: 'verdict',
  rcptTo: 'verdict',
  message: 'verdict',
  headers: 'transform',
  queue: 'transform',
  beforeSend: 'transform',
  route: 'first',
  deferred: 'advise',
  bounced: 'advise',
  queued: 'observe',
  delivered: 'observe',
  close: 'observe',
  init: 'observe',
  shutdown: 'observe',
} as const satisfies Record<HookName, 'verdict' | 'first' | 'transform' | 'advise' | 'observe'>;

export type HookKind = (typeof HOOK_KINDS)[HookName];

/**
 * What each hook runs inside: an SMTP session only (before MAIL FROM, or at its end), a mail
 * transaction of a session, a delivery attempt, or the plugin's lifetime. Session and
 * transaction hooks carry `results`; transaction results can be set in transaction hooks only.
 */
export const HOOK_SCOPES = {
  connect: 'session',
  helo: 'session',
  auth: 'session',
  close: 'session',
  mailFrom: 'transaction',
  rcptTo: 'transaction',
  headers: 'transaction',
  message: 'transaction',
  queue: 'transaction',
  queued: 'transaction',
  route: 'delivery',
  beforeSend: 'delivery',
  delivered: 'delivery',
  deferred: 'delivery',
  bounced: 'delivery',
  init: 'lifecycle',
  shutdown: 'lifecycle',
} as const satisfies Record<HookName, 'session' | 'transaction' | 'delivery' | 'lifecycle'>;

export const HOOK_NAMES = Object.keys(HOOK_KINDS) as HookName[];

export type HookHandler<K extends HookName, S = unknown, T = unknown> = (
  ctx: HookContexts<S, T>[K],
) => Awaitable<HookResults[K]>;

/** `order` places a hook before or after the others of its stage; `timeout` overrides the plugin's. */
export interface HookOptions {
  readonly order?: 'pre' | 'post';
  readonly timeout?: number;
}

export type HookSpec<K extends HookName, S = unknown, T = unknown> =
  | HookHandler<K, S, T>
  | (HookOptions & { readonly handler: HookHandler<K, S, T> });

export type PluginHooks<S, T> = { readonly [K in HookName]?: HookSpec<K, S, T> };

export interface PluginMeta<S, T> {
  /** Unique, shown in logs and metrics. */
  readonly name: string;
  /** Runs this plugin's hooks before (`pre`) or after (`post`) plugins without it. */
  readonly enforce?: 'pre' | 'post';
  /** Per-hook timeout in milliseconds (default 30 000). */
  readonly timeout?: number;
  /** Factories for this plugin's own state, created lazily per connection and per transaction. */
  readonly state?: { readonly session?: () => S; readonly transaction?: () => T };
  /**
   * The result keys this plugin sets on `ctx.results` (from defineResult). Only it may set them;
   * two plugins of one host declaring the same key is a registration error.
   */
  readonly publishes?: readonly AnyResultKey[];
  /**
   * The plugin's own: what it offers other plugins or tools (Rollup's `api`). Tern never reads it.
   * Any other key that is not a hook is refused when the plugin is registered.
   */
  readonly api?: unknown;
}

// biome-ignore lint/suspicious/noExplicitAny: a plugin list holds plugins of any state types
export type Plugin<S = any, T = any> = PluginMeta<S, T> & PluginHooks<S, T>;

/**
 * Declares a plugin. It only returns its argument: it exists so TypeScript infers the hook
 * contexts and the plugin's state types.
 */
export function definePlugin<S = undefined, T = undefined>(plugin: Plugin<S, T>): Plugin<S, T> {
  return plugin;
}
