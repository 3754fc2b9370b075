// A listener: one smtp-server instance configured from ListenerOptions, with connection limits,
// PROXY gating, graceful shutdown, and one SmtpSession per connection.
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import {
  type EnvelopeRecipient,
  type ListenerKind,
  type Logger,
  normalizeIp,
  type SessionInfo,
  type SmtpReply,
  within,
} from '@tern/plugin-api';
import type { PluginHost } from '@tern/plugin-api/host';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import type { SmtpVerb } from './command-stream.js';
import { type HostResolver, systemResolver } from './dns.js';
import {
  DUAL_STACK_WILDCARD,
  deadlinesOf,
  IPV4_WILDCARD,
  type ListenerOptions,
  type ListenerTls,
  type ResolvedListenerOptions,
  resolveListenerOptions,
  stressLevel,
} from './options.js';
import { CoreReplies, replyError } from './replies.js';
import { type ListenerRuntime, SmtpSession } from './session.js';
import { sessionId } from './session-id.js';
import type { MessageSink } from './sink.js';
import { missingSmtpServerInternals, TernConnection } from './smtp-server-internals.js';
import { IntakeSpool } from './spool.js';
import type { UserStore } from './users.js';

export interface ListenerDeps {
  readonly plugins: PluginHost;
  readonly sink: MessageSink;
  readonly logger: Logger;
  /** The built-in authenticator, asked when every auth hook says continue. */
  readonly users?: UserStore;
  /** DNS for the client's host name (default: the system resolver). */
  readonly resolver?: HostResolver;
  /** Called for every 4xx/5xx reply sent, whoever decided it (core or a plugin): for metrics. */
  readonly onReply?: (event: ReplyEvent) => void;
  /** Told of each session's start, HELO name, transactions, recipients and end: the app's own bookkeeping (see SessionObserver). */
  readonly onSession?: SessionObserver;
  /**
   * Where message bodies wait until the queue has them. Give every listener of a process the
   * same one, so they share its memory budget (default: one shared spool with default settings).
   */
  readonly spool?: IntakeSpool;
}

let sharedSpool: IntakeSpool | undefined;

/** The spool of listeners created without one: one per process, so they still share a budget. */
function defaultSpool(): IntakeSpool {
  sharedSpool ??= new IntakeSpool();
  return sharedSpool;
}

/**
 * The command a reply answers: a known verb (an AUTH continuation line counts as AUTH), `OTHER`
 * for any other word a client sent, `NONE` for replies to no command (a refused greeting, a
 * timeout). A closed set, so it can label a metric whatever clients send.
 */
export type ReplyCommand = SmtpVerb | 'OTHER' | 'NONE';

/** One error reply sent to a client. */
export interface ReplyEvent {
  readonly listener: string;
  readonly sessionId: string;
  readonly code: number;
  readonly command: ReplyCommand;
  /** The reply's first line after the code, enhanced code first (`5.7.1 Relay access denied`), at most 200 characters. */
  readonly text?: string;
}

/**
 * The app's own view of each session, called synchronously by the session instead of through
 * the plugin runner: a plugin's connect, helo and close hooks would cost every new connection three
 * hook calls (a context, a state lookup, an event, promises) for what is bookkeeping, and its
 * mailFrom and rcptTo hooks every message two more (and the code of the runner to warm up). Each call
 * comes where a `pre` plugin's hook would run; a listener that throws is logged, never fatal.
 */
export interface SessionObserver {
  /** A session begins, before its connect hooks; again (`xclient` true) once XCLIENT named another client. */
  opened(session: SessionInfo, xclient: boolean): void;
  /** HELO or EHLO with a name smtp-server accepts, before the helo hooks. */
  helo(session: SessionInfo, hostname: string): void;
  /** MAIL FROM passed core's checks (TLS, AUTH, parameters): a transaction begins, before the mailFrom hooks. */
  mailFrom(session: SessionInfo, address: string): void;
  /** RCPT TO passed core's checks (relay policy, parameters), before the rcptTo hooks. */
  rcptTo(session: SessionInfo, recipient: EnvelopeRecipient): void;
  /** The session ended (after its message's queued hooks, before its close hooks). */
  closed(session: SessionInfo): void;
}

export interface ListenerAddress {
  readonly host: string;
  readonly port: number;
}

export interface CloseOptions {
  /** Let open transactions finish (default true); idle connections get 421 4.3.2 at once either way. */
  readonly graceful?: boolean;
  /** How long a graceful close waits before dropping what is left (default 30 s). */
  readonly timeoutMs?: number;
}

export interface Listener {
  readonly name: string;
  readonly kind: ListenerKind;
  readonly options: ResolvedListenerOptions;
  /** Where it listens, once `listen()` resolved. */
  readonly address: ListenerAddress | undefined;
  /** Open SMTP connections. */
  readonly connections: number;
  /** Open connections have reached `limits.stressThreshold` of maxConnections: the stress timeouts apply. */
  readonly underStress: boolean;
  listen(): Promise<ListenerAddress>;
  /**
   * Applies new options and plugins to connections accepted from now on; open sessions finish with
   * what they started with. Host, port, kind and certificates need a restart: they are returned
   * (by field name) and left as they were.
   */
  reconfigure(options: ListenerOptions, plugins?: PluginHost): { readonly needsRestart: readonly string[] };
  /** Stops accepting, lets open transactions finish (graceful), then closes; resolves when every connection is gone. */
  close(options?: CloseOptions): Promise<void>;
}

/** Creates a listener; throws ListenerConfigError for bad options. Nothing binds until `listen()`. */
function sameSni(a: ListenerTls['sni'], b: ListenerTls['sni']): boolean {
  const keys = new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})]);
  return [...keys].every((k) => a?.[k]?.key === b?.[k]?.key && a?.[k]?.cert === b?.[k]?.cert);
}

export function createListener(options: ListenerOptions, deps: ListenerDeps): Listener {
  assertCompatible();
  return new SmtpListener(resolveListenerOptions(options, deps.logger), deps);
}

let compatible = false;

/**
 * The start-up check: an smtp-server release that renamed a private member the adapter relies on
 * (see smtp-server-internals.ts) must fail here, not silently lose a hardening.
 */
function assertCompatible(): void {
  if (compatible) return;
  const missing = missingSmtpServerInternals();
  if (missing.length > 0) {
    throw new Error(
      `@tern/core: the installed smtp-server lacks ${missing.join(', ')}; this core was built against smtp-server 3.21.6 (install exactly that version)`,
    );
  }
  compatible = true;
}

/** smtp-server with our connection set-up and PROXY gating. */
class TernSmtpServer extends SMTPServer {
  readonly #listener: SmtpListener;

  constructor(options: SMTPServerOptions, listener: SmtpListener) {
    super(options);
    this.#listener = listener;
  }

  override connect(socket: Socket | TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    this.#listener.accept(this, socket, socketOptions ?? {});
  }

  // smtp-server's useProxy takes exact addresses; trusted networks are CIDR blocks.
  override _expectsProxyHeader(socket: Socket): boolean {
    return this.#listener.expectsProxyHeader(socket);
  }

  // smtp-server makes every connection's id with randomBytes and a BigInt, then waits a
  // setImmediate before connect(), even when no PROXY header is expected (ignoredHosts is unused).
  override _handleProxy(socket: Socket, callback: Parameters<SMTPServer['_handleProxy']>[1]): void {
    if (this.#listener.expectsProxyHeader(socket)) super._handleProxy(socket, callback);
    else callback(null, { id: sessionId() });
  }
}

class SmtpListener implements Listener, ListenerRuntime {
  options: ResolvedListenerOptions;
  plugins: PluginHost;
  readonly sink: MessageSink;
  readonly users: UserStore | undefined;
  readonly resolver: HostResolver;
  readonly spool: IntakeSpool;
  readonly log: Logger;
  readonly onReply: ((event: ReplyEvent) => void) | undefined;
  readonly onSession: SessionObserver | undefined;
  closing = false;
  readonly #server: TernSmtpServer;
  readonly #sessions = new Map<string, SmtpSession>();
  readonly #perAddress = new Map<string, number>();
  readonly #tasks = new Set<Promise<unknown>>();
  #onEmpty: (() => void)[] = [];
  #address: ListenerAddress | undefined;
  #closed: Promise<void> | undefined;
  /** The deadline clock: runs while connections are open (see #tick). */
  #clock: NodeJS.Timeout | undefined;
  #underStress = false;

  constructor(options: ResolvedListenerOptions, deps: ListenerDeps) {
    this.options = options;
    this.plugins = deps.plugins;
    this.sink = deps.sink;
    this.users = deps.users;
    this.resolver = deps.resolver ?? systemResolver;
    this.spool = deps.spool ?? defaultSpool();
    this.onReply = deps.onReply;
    this.onSession = deps.onSession;
    this.log = deps.logger.child({ listener: options.name });
    this.#server = new TernSmtpServer(this.#serverOptions(), this);
    // Without an 'error' listener a client's TCP reset would crash the process.
    this.#server.on('error', (error: Error & { code?: string }) => {
      this.log.debug({ err: error, code: error.code }, 'connection error');
    });
    this.#server.server.on('connection', (socket: Socket) => this.#guardHandshake(socket));
  }

  get name(): string {
    return this.options.name;
  }

  get kind(): ListenerKind {
    return this.options.kind;
  }

  get address(): ListenerAddress | undefined {
    return this.#address;
  }

  get connections(): number {
    return this.#sessions.size;
  }

  get underStress(): boolean {
    return this.#sessions.size >= stressLevel(this.options.limits);
  }

  async listen(): Promise<ListenerAddress> {
    const { host, port, name } = this.options;
    try {
      this.#address = await bindWithFallback(host, (at) => this.#bind(at, port), this.log);
    } catch (error) {
      const { code, message } = error as NodeJS.ErrnoException;
      throw new Error(`listener ${name}: cannot listen on ${host}:${port}: ${code ?? message}`);
    }
    this.log.info(
      { host: this.#address.host, port: this.#address.port, kind: this.options.kind },
      'listening',
    );
    return this.#address;
  }

  /** One try to bind; a failed try leaves the server free to try again. */
  #bind(host: string, port: number): Promise<ListenerAddress> {
    return new Promise((resolve, reject) => {
      const net = this.#server.server;
      net.once('error', reject);
      this.#server.listen(port, host, () => {
        net.removeListener('error', reject);
        const bound = net.address();
        resolve({ host, port: typeof bound === 'object' && bound ? bound.port : port });
      });
    });
  }

  reconfigure(options: ListenerOptions, plugins?: PluginHost): { readonly needsRestart: readonly string[] } {
    const next = resolveListenerOptions(options, this.log);
    const old = this.options;
    const needsRestart = (['name', 'kind', 'host', 'port'] as const).filter(
      (k) => next[k] !== old[k],
    ) as string[];
    if (
      next.tls?.key !== old.tls?.key ||
      next.tls?.cert !== old.tls?.cert ||
      !sameSni(next.tls?.sni, old.tls?.sni)
    ) {
      needsRestart.push('tls');
    }
    // What cannot change in place keeps its old value; everything else applies to new sessions.
    this.options = { ...next, name: old.name, kind: old.kind, host: old.host, port: old.port, tls: old.tls };
    if (plugins) this.plugins = plugins;
    // smtp-server reads its options object on each use (SIZE, recipients, timeouts, XCLIENT).
    Object.assign(this.#server.options, this.#serverOptions());
    if (this.#clock !== undefined) this.#startClock(); // the new deadlines may want a faster tick
    this.log.info({ needsRestart }, 'reconfigured');
    return { needsRestart };
  }

  close(options: CloseOptions = {}): Promise<void> {
    this.#closed ??= this.#close(options.graceful ?? true, options.timeoutMs ?? 30_000);
    return this.#closed;
  }

  async #close(graceful: boolean, timeoutMs: number): Promise<void> {
    this.closing = true;
    const net = this.#server.server;
    const stopped = new Promise<void>((resolve) => {
      if (!net.listening) return resolve();
      net.close(() => resolve());
    });
    // Sockets still in a PROXY header or an implicit TLS handshake have no session to finish.
    for (const socket of this.#server._pendingSockets.values()) socket.destroy();
    for (const session of this.#sessions.values()) {
      if (!graceful || !session.busy) session.shutdown(!graceful);
    }
    const deadline = setTimeout(
      () => {
        for (const session of this.#sessions.values()) session.shutdown(true);
      },
      graceful ? timeoutMs : 0,
    );
    await stopped;
    // smtp-server reports a closed connection one tick after its socket closed; wait for every
    // session to be released so its close hooks are tracked before we wait for the hooks.
    if (this.#sessions.size > 0) {
      // Never hang a shutdown on a session smtp-server lost.
      await within(new Promise<void>((resolve) => this.#onEmpty.push(resolve)), 5000);
    }
    clearTimeout(deadline);
    await Promise.allSettled([...this.#tasks]);
    this.log.info('closed');
  }

  // ---- ListenerRuntime ------------------------------------------------------------------------

  track(task: Promise<unknown>): void {
    const settled = task.catch(() => {}).finally(() => this.#tasks.delete(settled));
    this.#tasks.add(settled);
  }

  released(session: SmtpSession): void {
    this.#sessions.delete(session.id);
    if (this.#sessions.size === 0) {
      clearInterval(this.#clock);
      this.#clock = undefined;
      for (const wake of this.#onEmpty.splice(0)) wake();
    }
    const left = (this.#perAddress.get(session.limitKey) ?? 1) - 1;
    if (left <= 0) this.#perAddress.delete(session.limitKey);
    else this.#perAddress.set(session.limitKey, left);
  }

  // ---- smtp-server hooks ----------------------------------------------------------------------

  expectsProxyHeader(socket: Socket): boolean {
    return this.options.proxy && this.options.trustedNetworks.contains(socket.remoteAddress ?? '');
  }

  /** Replaces SMTPServer.connect (3.21.6 body plus limits and our adapter). */
  accept(server: TernSmtpServer, socket: Socket | TLSSocket, socketOptions: SMTPConnectionOptions): void {
    const address = normalizeIp(socketOptions.remoteAddress ?? socket.remoteAddress ?? '');
    const limits = this.options.limits;
    const refusal: SmtpReply | undefined = this.closing
      ? CoreReplies.shuttingDown
      : this.#sessions.size >= limits.maxConnections ||
          (this.#perAddress.get(address) ?? 0) >= limits.maxConnectionsPerIp
        ? CoreReplies.tooManyConnections
        : undefined;
    if (refusal) {
      this.log.info({ remote: address, code: refusal.code }, 'connection refused');
      refuseSocket(socket, refusal);
      return;
    }
    const connection = new TernConnection(server, socket, socketOptions);
    server.connections.add(connection);
    // smtp-server also forwards each connection's 'connect' event to the server: nothing here listens.
    connection.on('error', (error: Error) => server.emit('error', error));
    const session = new SmtpSession(this, connection, address);
    this.#sessions.set(session.id, session);
    this.#perAddress.set(address, (this.#perAddress.get(address) ?? 0) + 1);
    if (this.#clock === undefined) this.#startClock();
    // smtp-server's init() waits a fixed 100 ms before the banner to catch clients that talk
    // first. That caps a client opening one connection per message at 10 messages a second, so
    // the wait is ours to set: greetingDelayMs, and none for trusted networks (our own apps).
    const delay = this.options.trustedNetworks.contains(address) ? 0 : this.options.greetingDelayMs;
    connection._setListeners(() => {
      if (delay === 0) connection.connectionReady();
      else setTimeout(() => connection.connectionReady(), delay).unref();
    });
    // Released when the socket closes, after smtp-server's own close handling: smtp-server reports
    // the close an immediate later, after the next accept, so a client reconnecting at once found
    // its previous connection still counted against maxConnectionsPerIp (and got 421).
    socket.on('close', () => session.onClose());
  }

  /**
   * Every connection's deadlines are checked on one clock per listener rather than with timers
   * per connection: the stress state is read once per tick and applies to every session at once,
   * open ones included, which is what makes the shorter limits bite when a flood begins.
   */
  #tick(): void {
    const underStress = this.underStress;
    if (underStress !== this.#underStress) {
      this.#underStress = underStress;
      const { maxConnections } = this.options.limits;
      if (underStress) {
        this.log.warn(
          { connections: this.#sessions.size, maxConnections },
          'under stress: shorter timeouts apply until connections fall below the threshold',
        );
      } else this.log.info({ connections: this.#sessions.size, maxConnections }, 'stress over');
    }
    const now = Date.now();
    for (const session of this.#sessions.values()) session.checkDeadlines(now, underStress);
  }

  /** Ticks at a tenth of the shortest deadline, from 20 ms to 1 s: each is kept to within 10 %. */
  #startClock(): void {
    clearInterval(this.#clock);
    const { command, session, stress } = this.options.limits.timeouts;
    const shortest = Math.min(command, session, stress.socket, stress.command, stress.session);
    const tickMs = Math.min(1000, Math.max(20, Math.floor(shortest / 10)));
    this.#clock = setInterval(() => this.#tick(), tickMs).unref();
  }

  /**
   * A socket that must first send a PROXY header or finish an implicit TLS handshake has no
   * session yet; smtp-server only times it out when idle, which a trickling client never is. It
   * gets the command deadline, from the moment it was accepted.
   */
  #guardHandshake(socket: Socket): void {
    // smtp-server's own 'connection' listener ran first and registered the socket if it is guarded.
    const pending = this.#server._pendingSockets;
    if (!pending.has(socket)) return;
    const limitMs = deadlinesOf(this.options.limits.timeouts, this.underStress).command;
    const timer = setTimeout(() => {
      const top = pending.get(socket); // the TLS socket once a handshake started: destroy from the top
      if (!top) return;
      this.log.info({ remote: socket.remoteAddress, limitMs }, 'no SMTP session in time: dropped');
      top.destroy();
    }, limitMs).unref();
    socket.once('close', () => clearTimeout(timer));
  }

  #serverOptions(): SMTPServerOptions {
    const o = this.options;
    const tls = o.tls;
    const minVersion = tls?.minVersion ?? 'TLSv1.2';
    return {
      name: o.hostname,
      heloResponse: '%s Hello %s',
      secure: o.kind === 'smtps',
      ...(tls
        ? {
            key: tls.key,
            cert: tls.cert,
            minVersion,
            sniOptions: Object.fromEntries(
              Object.entries(tls.sni ?? {}).map(([servername, pair]) => [
                servername,
                { ...pair, minVersion },
              ]),
            ),
          }
        : { hideSTARTTLS: true }),
      size: o.limits.maxMessageSize,
      // Bounds the sockets still in a PROXY header or an implicit TLS handshake; sessions are counted by accept().
      maxClients: o.limits.maxConnections,
      maxRecipients: o.limits.maxRecipients,
      maxCommandLength: o.limits.maxLineLength,
      socketTimeout: o.limits.timeouts.socket,
      authMethods: ['PLAIN', 'LOGIN'],
      // AUTH requirements are enforced by the session (530 at MAIL), so smtp-server's own gate is off.
      authOptional: true,
      allowInsecureAuth: o.allowInsecureAuth,
      disabledCommands: ['WIZ', 'SHELL', 'KILL', 'XFORWARD', ...(tls ? [] : ['STARTTLS'])],
      hideENHANCEDSTATUSCODES: false,
      hideDSN: false,
      // Offered on TLS sessions only (smtp-server's rule): the message then keeps the flag (RFC 8689).
      hideREQUIRETLS: false,
      useXClient: o.xclient,
      useXForward: false,
      // The session does its own forward-confirmed lookup with a timeout and a resolver we can point at a test DNS.
      disableReverseLookup: true,
      logger: false,
      onConnect: (session, callback) =>
        this.#dispatch(session, callback, (s) => s.onConnect(session, callback)),
      onSecure: (socket, session, callback) =>
        this.#dispatch(session, callback, (s) => s.onSecure(socket as TLSSocket, session, callback)),
      onAuth: (auth, session, callback) => this.#dispatch(session, callback, (s) => s.onAuth(auth, callback)),
      onMailFrom: (address, session, callback) =>
        this.#dispatch(session, callback, (s) => s.onMailFrom(address, callback)),
      onRcptTo: (address, session, callback) =>
        this.#dispatch(session, callback, (s) => s.onRcptTo(address, callback)),
      onData: (stream, session, callback) =>
        this.#dispatch(
          session,
          callback,
          (s) => s.onData(stream, callback),
          () => stream.resume(),
        ),
      // Usually released already, at the socket's close (see accept).
      onClose: (session) => {
        this.#sessions.get(session.id)?.onClose();
      },
    };
  }

  /**
   * Hands an smtp-server callback to its session. A bug in the session answers 451 4.3.0 (nothing
   * internal in the text) instead of hanging the client.
   */
  #dispatch(
    session: SMTPServerSession,
    callback: (error?: Error | null) => void,
    run: (s: SmtpSession) => Promise<void> | void,
    orphan?: () => void,
  ): void {
    const target = this.#sessions.get(session.id);
    if (!target) {
      orphan?.();
      callback(replyError(CoreReplies.localError));
      return;
    }
    let task: Promise<void> | void;
    try {
      task = run(target); // undefined when it answered at once (onConnect without hooks, say)
    } catch (error) {
      this.#sessionFailed(error, callback);
      return;
    }
    task?.catch((error: unknown) => this.#sessionFailed(error, callback));
  }

  #sessionFailed(error: unknown, callback: (error?: Error | null) => void): void {
    this.log.error({ err: error }, 'session callback failed');
    callback(replyError(CoreReplies.localError));
  }
}

/** What binding `::` fails with on a machine without IPv6 (a kernel without it, or none configured). */
const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EPROTONOSUPPORT']);

/**
 * Binds with `bind`. The dual-stack wildcard `::` falls back to IPv4's `0.0.0.0`, with a warning,
 * when the machine has no IPv6; any other failure (a port in use, say) is the caller's to report.
 */
export async function bindWithFallback<T>(
  host: string,
  bind: (host: string) => Promise<T>,
  log: Logger,
): Promise<T> {
  try {
    return await bind(host);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (host !== DUAL_STACK_WILDCARD || code === undefined || !NO_IPV6.has(code)) throw error;
    log.warn(
      { host, fallback: IPV4_WILDCARD, code },
      `no IPv6 on this machine (${code}): listening on IPv4 only (${IPV4_WILDCARD})`,
    );
    return bind(IPV4_WILDCARD);
  }
}

/** Answers a connection we will not serve and drops it, without creating an SMTP session. */
function refuseSocket(socket: Socket, reply: SmtpReply): void {
  socket.on('error', () => {});
  socket.end(`${reply.code} ${reply.enhanced} ${reply.text}\r\n`);
  setTimeout(() => socket.destroy(), 1000).unref();
}
