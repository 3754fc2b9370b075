import type { TLSSocket } from 'node:tls';
import {
  type Envelope,
  type EnvelopeRecipient,
  envidProblem,
  type Logger,
  lazyChild,
  orcptProblem,
  type SessionInfo,
  type SmtpParams,
  type SmtpReply,
  type TlsInfo,
  type TransactionInfo,
  type Verdict,
} from '@tern/plugin-api';
import {
  type ByteSource,
  type HookInput,
  type MessageContent,
  type PluginHost,
  StateScope,
  type VerdictHook,
} from '@tern/plugin-api/host';
import type {
  SMTPServerAddress,
  SMTPServerAuthentication,
  SMTPServerAuthenticationResponse,
  SMTPServerDataStream,
  SMTPServerSession,
} from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { acceptMessage, refusalOf } from './accept.js';
import { CommandStream, type CommandViolation, verbOf } from './command-stream.js';
import { confirmedHostname, type HostResolver } from './dns.js';
import { readMessage } from './intake.js';
import type { ReplyCommand, ReplyEvent, SessionObserver } from './listener.js';
import { deadlinesOf, type ResolvedListenerOptions } from './options.js';
import { receivedValue } from './received.js';
import { checkRecipient } from './relay.js';
import {
  badDsnParameterReply,
  CoreReplies,
  hasEnhancedCode,
  replyError,
  serverEnhancedCode,
  serverErrorText,
} from './replies.js';
import type { MessageSink } from './sink.js';
import type { ConnectionAdapter, TernConnection } from './smtp-server-internals.js';
import type { IntakeSpool } from './spool.js';
import type { UserStore } from './users.js';

/** What a session needs from its listener. */
export interface ListenerRuntime {
  readonly options: ResolvedListenerOptions;
  readonly plugins: PluginHost;
  readonly sink: MessageSink;
  readonly users: UserStore | undefined;
  readonly resolver: HostResolver;
  /** Where message bodies wait until the queue has them (shared by every listener of the process). */
  readonly spool: IntakeSpool;
  readonly log: Logger;
  readonly onReply: ((event: ReplyEvent) => void) | undefined;
  readonly onSession: SessionObserver | undefined;
  /** The listener is shutting down: idle sessions get 421 at their next command. */
  readonly closing: boolean;
  /** Keeps a background task (observe hooks) for close() to wait on. */
  track(task: Promise<unknown>): void;
  /** Called once when the connection is gone. */
  released(session: SmtpSession): void;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

// ESMTP parameters we advertise (SIZE, 8BITMIME, SMTPUTF8, DSN) plus AUTH= (RFC 4954 §5). Anything
// else is refused 555 instead of being silently ignored as smtp-server would.
const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID', 'AUTH', 'REQUIRETLS']);
const RCPT_PARAMS = new Set(['NOTIFY', 'ORCPT']);
// Commands smtp-server implements that a production MTA must not answer (sendmail jokes, XFORWARD).
const ALWAYS_DISABLED = ['WIZ', 'SHELL', 'KILL', 'XFORWARD'];
/** The session's disabled commands by which of STARTTLS (1), XCLIENT (2) and AUTH (4) are off too. */
const DISABLED_COMMANDS: (string[] | undefined)[] = [];
// Longest wait after failed AUTH attempts, whatever maxAuthFailures is.
const MAX_AUTH_DELAY_MS = 60_000;
/** Characters of a reply passed to onReply listeners (a reply may quote what the client sent). */
const MAX_REPLY_EVENT_TEXT = 200;

const VIOLATION_REPLIES: Record<CommandViolation, SmtpReply> = {
  'bare-lf': CoreReplies.bareLineEndingCommand,
  control: CoreReplies.controlInCommand,
  'too-long': CoreReplies.lineTooLong,
};

const wire = (reply: SmtpReply): string => `${reply.enhanced} ${reply.text}`;

// smtp-server's own methods, which TernConnection replaces by calls to its session (the adapter).
const {
  send: smtpSend,
  _sendGreeting: smtpSendGreeting,
  handler_HELO: smtpHelo,
  handler_EHLO: smtpEhlo,
  handler_XCLIENT: smtpXclient,
  handler_QUIT: smtpQuit,
} = SMTPConnection.prototype;
const CONTINUE: Verdict = { kind: 'continue' };
/** A session's message intake before its first DATA: nothing to wait for. */
const SETTLED: Promise<unknown> = Promise.resolve();

export class SmtpSession implements ConnectionAdapter {
  readonly id: string;
  readonly connection: TernConnection;
  /** The address connection limits are counted against (the socket's, or the PROXY header's). */
  readonly limitKey: string;
  readonly info: Mutable<SessionInfo>;
  readonly scope: StateScope;
  readonly #runtime: ListenerRuntime;
  readonly #options: ResolvedListenerOptions;
  readonly #log: Logger;
  #transaction: Mutable<TransactionInfo> | undefined;
  #transactions = 0;
  #clientHostname: string | undefined;
  #esmtp = false;
  #rcptLine = '';
  #errors = 0;
  #authFailures = 0;
  #inData = false;
  #started = false;
  #released = false;
  #holdGreeting = false;
  readonly #plugins: PluginHost;
  /** The command the next reply answers; NONE before the first and for replies to no command. */
  #verb: ReplyCommand = 'NONE';
  #greetingHeld = false;
  /** The banner went out: from now on command lines are ours to judge. */
  #greeted = false;
  /** The last reply was 334: the next line is an AUTH continuation (a credential), not a command. */
  #saslPending = false;
  /** The queued hooks still running (made with the first: most hosts have no queued hooks). */
  #observing: Set<Promise<void>> | undefined;
  /** The message being taken in (DATA to its reply), for close to wait on. */
  #intake: Promise<unknown> = SETTLED;
  /** Gives back this session's hold on its plugin host: after its last hook (see onClose). */
  readonly #releaseHost: () => void;

  constructor(runtime: ListenerRuntime, connection: TernConnection, limitKey: string) {
    this.#runtime = runtime;
    // A session keeps the options and plugins it started with: a reload applies to new connections,
    // so no session sees two plugin lists (or two sets of per-plugin state) in its lifetime.
    this.#options = runtime.options;
    this.#plugins = runtime.plugins;
    // Held for the session's lifetime: plugins replaced by a reload are shut down only after it.
    this.#releaseHost = this.#plugins.retain();
    this.connection = connection;
    this.id = connection.id;
    this.limitKey = limitKey;
    this.scope = new StateScope(this.id);
    // Its records are mostly at info: made only if one is written (a pino child costs microseconds).
    this.#log = lazyChild(runtime.log, { session: this.id });
    const o = this.#options;
    this.info = {
      id: this.id,
      listener: { name: o.name, kind: o.kind, hostname: o.hostname, port: o.port },
      remoteAddress: connection.remoteAddress,
      remotePort: connection.remotePort,
      localAddress: connection.localAddress,
      localPort: connection.localPort,
      trusted: o.trustedNetworks.contains(connection.remoteAddress),
      startedAt: Date.now(),
      helo: undefined,
      tls: undefined,
      user: undefined,
    };
    connection.adapter = this;
    connection._parser = this.createParser(); // the constructor made none; init() pipes the socket to this one
  }

  /** A transaction is open or a message is being received: a graceful shutdown waits for it. */
  get busy(): boolean {
    return this.#transaction !== undefined || this.#inData;
  }

  /** Sends 421 and closes; `force` also drops the socket without waiting for the client. */
  shutdown(force = false): void {
    const connection = this.connection;
    if (!connection._closing && !connection._closed) connection.send(421, wire(CoreReplies.shuttingDown));
    if (force) setImmediate(() => connection._socket.destroy());
  }

  /**
   * Closes the connection when one of its deadlines has passed; the listener's clock calls this.
   * Only time the client owes us counts: a command line or TLS handshake under way, and (under
   * stress, where smtp-server's idle timeout is too long) silence while no reply is pending. The
   * session limit waits for a message being received or decided on to be answered.
   */
  checkDeadlines(now: number, underStress: boolean): void {
    const connection = this.connection;
    const parser = connection._parser;
    if (connection._closing || connection._closed || !(parser instanceof CommandStream)) return;
    const limits = deadlinesOf(this.#options.limits.timeouts, underStress);
    if (connection._upgrading) {
      // Nothing can be written in the middle of a handshake: the connection is just dropped.
      if (now - parser.createdAt < limits.command) return;
      this.#log.info({ deadline: 'tls-handshake', limitMs: limits.command, underStress }, 'deadline passed');
      connection._socket.destroy();
      return;
    }
    let expired: [SmtpReply, string, number] | undefined;
    if (parser.lineStartedAt !== undefined && now - parser.lineStartedAt >= limits.command) {
      expired = [CoreReplies.commandTimeout, 'command', limits.command];
    } else if (!this.#greeted || (parser.awaitingServer && !connection._socket.writableNeedDrain)) {
      return; // the client waits for us (unless it is the one not reading our replies)
    } else if (underStress && now - parser.lastActivityAt >= limits.socket) {
      expired = [CoreReplies.idleTimeout, 'idle', limits.socket];
    } else if (!parser.receivingMessage && now - this.info.startedAt >= limits.session) {
      expired = [CoreReplies.sessionTimeout, 'session', limits.session];
    }
    if (expired === undefined) return;
    const [reply, deadline, limitMs] = expired;
    this.#log.info({ deadline, limitMs, underStress }, 'deadline passed');
    this.#verb = 'NONE';
    connection.send(reply.code, wire(reply)); // smtp-server closes after any 421
  }

  // ---- smtp-server callbacks (dispatched here by the listener) -------------------------------

  /**
   * Without a reverse lookup or a connect hook (the usual trusted relay) the greeting is answered
   * at once: no async function, promise or microtask per connection.
   */
  onConnect(session: SMTPServerSession, callback: (error?: Error | null) => void): Promise<void> | undefined {
    this.#refreshClient(session);
    this.info.tls = tlsInfo(this.connection._socket);
    session.disabledCommands = this.#disabledCommands();
    if (this.#options.reverseLookup || this.#plugins.has('connect')) return this.#connect(callback);
    this.#begin();
    callback(null);
    return undefined;
  }

  async #connect(callback: (error?: Error | null) => void): Promise<void> {
    const o = this.#options;
    if (o.reverseLookup) {
      this.#clientHostname = await confirmedHostname(
        this.#runtime.resolver,
        this.info.remoteAddress,
        o.limits.timeouts.dns,
      );
    }
    this.#begin();
    const verdict = await this.#verdict('connect', { session: this.info });
    const refusal = refusalOf(verdict);
    // smtp-server closes the connection after refusing it, whatever the code.
    callback(refusal ? replyError(refusal.reply) : null);
  }

  /** The session starts (before its connect hooks): logged and told to the SessionObserver. */
  #begin(): void {
    this.#started = true;
    this.#log.info(
      { remote: this.info.remoteAddress, host: this.#clientHostname, trusted: this.info.trusted },
      'connection',
    );
    this.#notify('opened', (observer) => observer.opened(this.info, false));
  }

  onSecure(socket: TLSSocket, session: SMTPServerSession, callback: (error?: Error | null) => void): void {
    // RFC 3207 §4.2: nothing learnt before the handshake carries over (smtp-server forgets HELO and user too).
    this.info.tls = tlsInfo(socket);
    this.info.helo = undefined;
    this.info.user = undefined;
    this.#esmtp = false;
    session.disabledCommands = this.#disabledCommands();
    callback();
  }

  async onAuth(
    auth: SMTPServerAuthentication,
    callback: (error: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): Promise<void> {
    const username = auth.username ?? '';
    if (auth.method === 'XCLIENT') {
      // XCLIENT LOGIN= from a trusted proxy (only trusted clients reach XCLIENT): the proxy vouches.
      return callback(null, { user: username });
    }
    if (auth.method !== 'PLAIN' && auth.method !== 'LOGIN')
      return callback(replyError(CoreReplies.authUnavailable));
    // We do not support acting for another identity (RFC 4616 authzid).
    if (auth.method === 'PLAIN' && auth.authzid && auth.authcid && auth.authzid !== auth.authcid) {
      return this.#authFailed(username, CoreReplies.authzidMismatch, callback);
    }
    const verdict = await this.#verdict('auth', {
      session: this.info,
      method: auth.method,
      username,
      password: auth.password ?? '',
    });
    if (verdict.kind === 'accept') return this.#authSucceeded(username, callback);
    if (verdict.kind === 'reject') return this.#authFailed(username, verdict.reply, callback);
    if (verdict.kind === 'tempfail') return callback(replyError(verdict.reply));
    if (verdict.kind === 'disconnect') {
      callback(replyError(verdict.reply));
      return this.connection.close();
    }
    let valid = false;
    try {
      valid = (await this.#runtime.users?.authenticate(username, auth.password ?? '')) ?? false;
    } catch (error) {
      this.#log.error({ err: error }, 'user store failed');
      return callback(replyError(CoreReplies.authTemporaryFailure));
    }
    if (valid) return this.#authSucceeded(username, callback);
    return this.#authFailed(username, CoreReplies.authFailed, callback);
  }

  async onMailFrom(address: SMTPServerAddress, callback: (error?: Error | null) => void): Promise<void> {
    const o = this.#options;
    if (o.requireTls && !this.connection.secure) return callback(replyError(CoreReplies.tlsRequired));
    if (o.requireAuth && this.info.user === undefined) return callback(replyError(CoreReplies.authRequired));
    const params: SmtpParams = address.args || {};
    if (Object.keys(params).some((key) => !MAIL_PARAMS.has(key))) {
      return callback(replyError(CoreReplies.unknownParameter));
    }
    const envidError = typeof params.ENVID === 'string' ? envidProblem(params.ENVID) : undefined;
    if (envidError !== undefined) return callback(replyError(badDsnParameterReply(envidError)));
    this.#endTransaction();
    this.#notify('mailFrom', (observer) => observer.mailFrom(this.info, address.address));
    const verdict = await this.#verdict('mailFrom', { session: this.info, address: address.address, params });
    const refusal = refusalOf(verdict);
    if (refusal) return this.#refuse(refusal, callback);
    this.#transaction = {
      id: `${this.id}.${++this.#transactions}`,
      mailFrom: address.address,
      mailParams: params,
      recipients: [],
    };
    callback();
  }

  async onRcptTo(address: SMTPServerAddress, callback: (error?: Error | null) => void): Promise<void> {
    const transaction = this.#transaction;
    if (!transaction) return callback(replyError(CoreReplies.badSequence));
    const mayRelay = this.info.trusted || this.info.user !== undefined;
    const decision = checkRecipient({
      address: address.address,
      commandLine: this.#rcptLine,
      mayRelay,
      localDomains: this.#options.localDomains,
    });
    if (!decision.ok) {
      this.#log.info({ rcpt: address.address, reason: decision.reason }, 'relay denied');
      return callback(replyError(decision.reply));
    }
    const params: SmtpParams = address.args || {};
    if (Object.keys(params).some((key) => !RCPT_PARAMS.has(key))) {
      return callback(replyError(CoreReplies.unknownParameter));
    }
    const orcptError = typeof params.ORCPT === 'string' ? orcptProblem(params.ORCPT) : undefined;
    if (orcptError !== undefined) return callback(replyError(badDsnParameterReply(orcptError)));
    const recipient: EnvelopeRecipient = {
      address: decision.address,
      ...(address.dsn?.notify ? { notify: address.dsn.notify as EnvelopeRecipient['notify'] } : {}),
      ...(address.dsn?.orcpt ? { orcpt: address.dsn.orcpt } : {}),
    };
    this.#notify('rcptTo', (observer) => observer.rcptTo(this.info, recipient));
    const verdict = await this.#verdict('rcptTo', {
      session: this.info,
      transaction,
      recipient,
      params,
      isLocalDomain: decision.isLocalDomain,
      mayRelay,
    });
    const refusal = refusalOf(verdict);
    if (refusal) return this.#refuse(refusal, callback);
    // smtp-server keeps one entry per address (compared case-insensitively); so does the envelope.
    const key = recipient.address.toLowerCase();
    transaction.recipients = [
      ...transaction.recipients.filter((r) => r.address.toLowerCase() !== key),
      recipient,
    ];
    callback();
  }

  async onData(
    stream: SMTPServerDataStream,
    callback: (error?: Error | null, message?: string) => void,
  ): Promise<void> {
    const o = this.#options;
    const transaction = this.#transaction;
    this.#inData = true;
    const timer = setTimeout(() => {
      this.#log.info({ timeoutMs: o.limits.timeouts.data }, 'DATA took too long');
      this.connection.send(421, wire(CoreReplies.dataTimeout));
    }, o.limits.timeouts.data);
    try {
      let read: Awaited<ReturnType<typeof readMessage>>;
      try {
        read = await readMessage(stream, {
          bareLineEndings: o.bareLineEndings,
          longLines: o.longLines,
          maxMessageSize: o.limits.maxMessageSize,
          maxHeaderBytes: o.limits.maxHeaderBytes,
          spool: this.#runtime.spool,
        });
      } catch (error) {
        // The stream failed: the client went away mid-message. Nothing is queued.
        this.#log.info({ err: error }, 'DATA aborted');
        return callback(replyError(CoreReplies.connectionLost));
      } finally {
        clearTimeout(timer);
      }
      if (!read.ok) {
        this.#log.info(
          { size: read.size, code: read.reply.code, enhanced: read.reply.enhanced },
          'message refused',
        );
        return callback(replyError(read.reply));
      }
      let reply: SmtpReply;
      try {
        if (!transaction) {
          reply = CoreReplies.badSequence;
        } else {
          if (read.normalized) this.#log.info({ size: read.size }, 'bare CR, bare LF or NUL normalized');
          if (read.wrapped) this.#log.info({ size: read.size }, 'lines over 998 octets wrapped');
          const accepting = this.#accept(transaction, read.headers, read.body, read.eightBit);
          this.#intake = accepting.catch(() => {});
          reply = await accepting;
        }
      } catch (error) {
        this.#log.error({ err: error, transaction: transaction?.id }, 'intake failed');
        reply = CoreReplies.localError;
      } finally {
        // The queue has its own copy now (or the message was refused): free memory and spool file.
        await read.release();
      }
      callback(reply.code >= 400 ? replyError(reply) : null, reply.code >= 400 ? undefined : wire(reply));
    } finally {
      this.#inData = false;
    }
  }

  onClose(): void {
    if (this.#released) return;
    this.#released = true;
    this.#runtime.released(this);
    // Hooks still deciding something for this client are aborted (their ctx.signal fires).
    this.scope.end();
    this.#log.info({ errors: this.#errors, transactions: this.#transactions }, 'closed');
    // Nothing left to wait for (no message being taken in, no queued hooks running) and no close
    // hooks: the usual end of a session, done now rather than through a chain of promises.
    if (!this.#started || (!this.#inData && !this.#observing?.size && !this.#plugins.has('close'))) {
      if (this.#started) this.#closed();
      this.#releaseHost();
      return;
    }
    // close hooks come after this session's message and queued hooks, so a plugin can rely on the order.
    const plugins = this.#plugins;
    const closing = this.#intake
      .then(() => Promise.allSettled([...(this.#observing ?? [])]))
      .then(() => {
        this.#closed();
        return plugins.runObserve('close', { session: this.info }, this.scope);
      });
    this.#runtime.track(closing);
    closing.then(this.#releaseHost, this.#releaseHost);
  }

  // ---- DATA: headers, message, queue, enqueue, queued ----------------------------------------

  async #accept(
    transaction: Mutable<TransactionInfo>,
    headers: MessageContent['headers'],
    body: ByteSource,
    eightBit: boolean,
  ): Promise<SmtpReply> {
    const o = this.#options;
    const result = await acceptMessage({
      plugins: this.#plugins,
      scope: this.scope,
      session: this.info,
      transaction,
      envelope: toEnvelope(transaction),
      headers,
      body,
      eightBit,
      received: (date) =>
        receivedValue({
          helo: this.info.helo,
          clientHostname: this.#clientHostname,
          remoteAddress: this.info.remoteAddress,
          hostname: o.hostname,
          esmtp: this.#esmtp,
          tls: this.info.tls,
          user: this.info.user,
          id: transaction.id,
          recipient: transaction.recipients.length === 1 ? transaction.recipients[0]?.address : undefined,
          date,
        }),
      addMissingIds: o.kind !== 'mx' || this.info.user !== undefined,
      hostname: o.hostname,
      maxReceivedHeaders: o.limits.maxReceivedHeaders,
      sink: this.#runtime.sink,
      enqueueTimeoutMs: o.limits.timeouts.enqueue,
      log: this.#log,
      source: {
        listener: o.name,
        remoteAddress: this.info.remoteAddress,
        sessionId: this.id,
        ...(this.info.helo !== undefined ? { helo: this.info.helo } : {}),
        ...(this.info.user !== undefined ? { user: this.info.user } : {}),
      },
    });
    if (!result.queued) {
      if (result.disconnect) setImmediate(() => this.connection.close());
      return result.reply;
    }
    // Without queued hooks nothing runs after the reply: no promise to keep for close to wait on.
    if (!this.#plugins.has('queued')) return result.reply;
    const observing = result.observing;
    this.#observing ??= new Set();
    const running = this.#observing;
    running.add(observing);
    this.#runtime.track(observing.finally(() => running.delete(observing)));
    return result.reply;
  }

  // ---- helpers --------------------------------------------------------------------------------

  /** The hook's verdict; `continue` at once (no promise to wait for) when no plugin implements it. */
  #verdict<K extends VerdictHook>(hook: K, input: HookInput<K>): Verdict | Promise<Verdict> {
    return this.#plugins.has(hook) ? this.#runVerdict(hook, input) : CONTINUE;
  }

  async #runVerdict<K extends VerdictHook>(hook: K, input: HookInput<K>): Promise<Verdict> {
    return (await this.#plugins.runVerdict(hook, input, this.scope)).verdict;
  }

  #closed(): void {
    this.#notify('closed', (observer) => observer.closed(this.info));
  }

  /** Tells the listener's SessionObserver, if it has one; a throw there is logged, never the session's end. */
  #notify(event: keyof SessionObserver, call: (observer: SessionObserver) => void): void {
    const observer = this.#runtime.onSession;
    if (observer === undefined) return;
    try {
      call(observer);
    } catch (error) {
      this.#log.error({ err: error, event }, 'session observer threw');
    }
  }

  /** Answers a refused smtp-server callback; a disconnect verdict closes after the reply is written. */
  #refuse(refusal: Refusal, callback: (error?: Error | null) => void): void {
    callback(replyError(refusal.reply));
    if (refusal.disconnect) this.connection.close();
  }

  #authSucceeded(
    username: string,
    callback: (error: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): void {
    this.info.user = username;
    this.#log.info({ user: username }, 'authenticated');
    callback(null, { user: username });
  }

  async #authFailed(
    username: string,
    reply: SmtpReply,
    callback: (error: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): Promise<void> {
    const o = this.#options;
    this.#authFailures++;
    this.#log.info({ user: username, failures: this.#authFailures }, 'authentication failed');
    // Slow down guessing: each failure on this connection waits twice as long as the one before.
    const delay = Math.min(o.authFailureDelayMs * 2 ** (this.#authFailures - 1), MAX_AUTH_DELAY_MS);
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    if (this.connection._closed) return;
    if (this.#authFailures >= o.limits.maxAuthFailures) {
      return callback(replyError(CoreReplies.authTooManyFailures)); // smtp-server closes after a 421
    }
    callback(replyError(reply));
  }

  #refreshClient(session: { remoteAddress: string; remotePort: number }): void {
    this.info.remoteAddress = session.remoteAddress;
    this.info.remotePort = session.remotePort;
    this.info.trusted = this.#options.trustedNetworks.contains(session.remoteAddress);
  }

  /** AUTH is offered once the connection is encrypted (or when insecure AUTH is explicitly allowed). */
  #authOffered(): boolean {
    return this.#options.auth && (this.connection.secure || this.#options.allowInsecureAuth);
  }

  /** XCLIENT is judged on the address that connected (after PROXY), never on one XCLIENT set. */
  #xclientAllowed(): boolean {
    return this.#options.xclient && this.#options.trustedNetworks.contains(this.limitKey);
  }

  // smtp-server lets a session replace the server-wide disabledCommands; that also hides a command from EHLO.
  // One list per combination, shared by the sessions (smtp-server only reads it): not one per connection.
  #disabledCommands(): string[] {
    const key =
      (this.#options.tls ? 0 : 1) | (this.#xclientAllowed() ? 0 : 2) | (this.#authOffered() ? 0 : 4);
    let disabled = DISABLED_COMMANDS[key];
    if (disabled === undefined) {
      disabled = [...ALWAYS_DISABLED];
      if (key & 1) disabled.push('STARTTLS');
      if (key & 2) disabled.push('XCLIENT');
      if (key & 4) disabled.push('AUTH');
      DISABLED_COMMANDS[key] = disabled;
    }
    return disabled;
  }

  #endTransaction(): void {
    this.#transaction = undefined;
    this.scope.resetTransaction();
  }

  // ---- what this adapter changes on its SMTPConnection (ConnectionAdapter, called by TernConnection)

  /** Our command-line parser (see command-stream.ts), also for the fresh parser after STARTTLS. */
  createParser(): CommandStream {
    const o = this.#options;
    const parser = new CommandStream({
      maxLineLength: o.limits.maxLineLength,
      bareLineEndings: o.bareLineEndings,
    });
    parser.oncommand = (command, callback) => this.#onCommand(parser, command, callback);
    parser.on('error', () => this.connection.send(421, wire(CoreReplies.localError421)));
    return parser;
  }

  /** Every reply: exactly one enhanced code; error replies are counted towards maxErrors. */
  send(code: number, data?: string | string[] | null, context?: string | false): void {
    const connection = this.connection;
    let sent = data;
    if (typeof data === 'string' && hasEnhancedCode(code, data)) smtpSend.call(connection, code, data, false);
    else if (code >= 400 && !Array.isArray(data)) {
      sent = serverErrorText(code, data ?? '', serverEnhancedCode(code, context));
      smtpSend.call(connection, code, sent, false);
    } else smtpSend.call(connection, code, data, context);
    this.#saslPending = code === 334;
    this.#countError(code);
    if (code >= 400 && this.#runtime.onReply) {
      const line = (Array.isArray(sent) ? sent[0] : sent) ?? '';
      try {
        this.#runtime.onReply({
          listener: this.#options.name,
          sessionId: this.id,
          code,
          command: this.#verb,
          text: line.length > MAX_REPLY_EVENT_TEXT ? `${line.slice(0, MAX_REPLY_EVENT_TEXT)}…` : line,
        });
      } catch (error) {
        this.#log.error({ err: error }, 'reply listener threw');
      }
    }
  }

  /**
   * HELO/EHLO run the helo hooks before smtp-server answers; without helo hooks it answers at once
   * (no promise per connection). Syntax errors are smtp-server's to answer (501, same rules as its
   * isAcceptableHeloHostname): hooks and the SessionObserver only see a name it will accept.
   */
  helo(command: 'HELO' | 'EHLO', line: Buffer, callback: () => void): void {
    const parts = line.toString('latin1').trim().split(/\s+/);
    const hostname = parts[1] ?? '';
    if (parts.length !== 2 || hostname.length > 300 || /[\x00-\x1f\x7f-\x9f]/.test(hostname)) {
      (command === 'HELO' ? smtpHelo : smtpEhlo).call(this.connection, line, callback);
      return;
    }
    this.#notify('helo', (observer) => observer.helo(this.info, hostname));
    if (this.#plugins.has('helo')) this.#guard(this.#heloHooks(command, hostname, line, callback), callback);
    else this.#heloReply(command, hostname, line, callback);
  }

  /** Every session reset (RSET, HELO/EHLO, STARTTLS, XCLIENT, end of DATA) ends our transaction too. */
  resetSession(): void {
    this.#endTransaction();
  }

  /** XCLIENT: the new greeting is held until the connect hooks have judged the forwarded client. */
  sendGreeting(): void {
    const connection = this.connection;
    this.#greeted = true;
    if (connection._parser instanceof CommandStream) connection._parser.answered();
    if (this.#holdGreeting) this.#greetingHeld = true;
    else smtpSendGreeting.call(connection);
  }

  xclient(line: Buffer, callback: () => void): void {
    const connection = this.connection;
    this.#holdGreeting = true;
    this.#greetingHeld = false;
    smtpXclient.call(connection, line, () => {
      this.#holdGreeting = false;
      if (!this.#greetingHeld) return callback(); // refused or failed: smtp-server already answered
      this.#guard(
        this.#afterXclient(() => smtpSendGreeting.call(connection), callback),
        callback,
      );
    });
  }

  /**
   * QUIT: the 221 is the last word, so the socket is closed once the kernel holds it (it still
   * sends the 221, then FIN) instead of half-closed until the client's FIN. A client that closes
   * with SO_LINGER 0 (Postfix's smtp-source) answers that wait with a reset, which node turns
   * into an ECONNRESET error with a formatted stack: about a tenth of a new connection's cost.
   * Not on TLS (the client gets its close_notify from end()), nor while the 221 is still queued
   * in node (a client not reading): smtp-server's half-close then applies as before.
   * smtp-server's close() would also end(), unpipe, resume and arm a timer for the half-close:
   * all undone by the destroy, so a plain connection skips them (the parser still stops at once).
   */
  quit(line: Buffer, callback: () => void): void {
    const connection = this.connection;
    const socket = connection._socket;
    if (connection.secure) {
      smtpQuit.call(connection, line, callback);
      return;
    }
    connection.send(221, 'Bye');
    if (socket.writableLength > 0 || socket.destroyed || connection._closing) connection.close();
    else {
      connection._closing = true;
      if (connection._parser) connection._parser.isClosed = true;
      socket.destroy();
    }
    callback();
  }

  /** Runs an async handler; a bug in it answers 451 4.3.0 instead of hanging or crashing. */
  #guard(task: Promise<void>, callback: () => void): void {
    task.catch((error: unknown) => {
      this.#log.error({ err: error }, 'command handler failed');
      this.connection.send(451, wire(CoreReplies.localError));
      callback();
    });
  }

  #countError(code: number): void {
    const connection = this.connection;
    if (code < 400 || code === 421 || connection._closing || connection._closed) return;
    this.#errors++;
    if (this.#errors >= this.#options.limits.maxErrors) {
      this.#log.info({ errors: this.#errors }, 'too many errors');
      smtpSend.call(connection, 421, wire(CoreReplies.tooManyErrors), false); // smtp-server closes after any 421
    }
  }

  #onCommand(parser: CommandStream, command: Buffer, callback?: () => void): void {
    const connection = this.connection;
    const violation = parser.violation;
    parser.violation = undefined;
    // Before the greeting and during a TLS handshake smtp-server answers (421) or drops the bytes itself.
    if (connection._upgrading || !this.#greeted) {
      connection._onCommand(command, callback);
      return;
    }
    // The verb being answered, read once per command line: the refusal checks use it, and so do
    // reply events (an AUTH continuation line keeps AUTH, and is never read: it may be a password).
    if (!this.#saslPending) this.#verb = verbOf(command);
    else if (violation !== undefined) {
      // A broken continuation line ends the AUTH exchange: smtp-server gets the client's way of
      // cancelling one (RFC 4954 §4, "*") and answers 501 itself.
      connection._onCommand(Buffer.from('*'), callback);
      return;
    }
    const refusal = this.#commandRefusal(command, violation);
    if (refusal === undefined) {
      connection._onCommand(command, callback);
      return;
    }
    connection.send(refusal.code, wire(refusal));
    if (callback) setImmediate(() => whenWritable(connection._socket, callback));
  }

  /** Why a command line must not reach smtp-server, if it must not. Remembers RCPT lines for the relay policy. */
  #commandRefusal(command: Buffer, violation: CommandViolation | undefined): SmtpReply | undefined {
    const o = this.#options;
    if (violation !== undefined) return VIOLATION_REPLIES[violation];
    if (this.#runtime.closing && !this.busy) return CoreReplies.shuttingDown;
    if (this.#saslPending) return undefined; // an AUTH continuation line
    const name = this.#verb;
    if (name === 'AUTH') {
      if (!o.auth) return CoreReplies.authUnavailable;
      if (!this.connection.secure && !o.allowInsecureAuth) return CoreReplies.tlsRequired;
    } else if (name === 'XCLIENT') {
      if (o.xclient && !this.#xclientAllowed()) return CoreReplies.xclientDenied;
    } else if (name === 'RCPT') {
      this.#rcptLine = command.toString('latin1');
    }
    return undefined;
  }

  async #heloHooks(
    command: 'HELO' | 'EHLO',
    hostname: string,
    line: Buffer,
    callback: () => void,
  ): Promise<void> {
    const connection = this.connection;
    const verdict = await this.#runVerdict('helo', { session: this.info, command, hostname });
    const refusal = refusalOf(verdict);
    if (refusal) {
      connection.send(refusal.reply.code, wire(refusal.reply));
      if (refusal.disconnect) connection.close();
      return callback();
    }
    this.#heloReply(command, hostname, line, callback);
  }

  /** smtp-server's HELO or EHLO reply; the name is the session's once smtp-server took it. */
  #heloReply(command: 'HELO' | 'EHLO', hostname: string, line: Buffer, callback: () => void): void {
    const connection = this.connection;
    (command === 'HELO' ? smtpHelo : smtpEhlo).call(connection, line, callback);
    if (connection.hostNameAppearsAs === hostname.toLowerCase()) {
      this.info.helo = hostname;
      this.#esmtp = command === 'EHLO';
    }
  }

  async #afterXclient(sendGreeting: () => void, callback: () => void): Promise<void> {
    const connection = this.connection;
    this.#refreshClient(connection);
    this.info.helo = undefined;
    this.#esmtp = false;
    const user = connection.session.user;
    this.info.user = typeof user === 'string' && user !== '' ? user : undefined;
    const name = connection.session.xClient?.get('NAME');
    // smtp-server validated NAME as a host name; the trusted proxy did the DNS work for it.
    this.#clientHostname = typeof name === 'string' && name !== '' ? name.toLowerCase() : undefined;
    if (this.#clientHostname === undefined && this.#options.reverseLookup) {
      this.#clientHostname = await confirmedHostname(
        this.#runtime.resolver,
        this.info.remoteAddress,
        this.#options.limits.timeouts.dns,
      );
    }
    connection.session.disabledCommands = this.#disabledCommands();
    this.#log.info({ remote: this.info.remoteAddress, user: this.info.user }, 'XCLIENT');
    this.#notify('opened', (observer) => observer.opened(this.info, true));
    const refusal = refusalOf(await this.#verdict('connect', { session: this.info }));
    if (refusal) {
      connection.send(refusal.reply.code, wire(refusal.reply));
      connection.close();
    } else {
      sendGreeting();
    }
    callback();
  }
}

type Refusal = NonNullable<ReturnType<typeof refusalOf>>;

/** Calls `next` once the socket has written out what it holds: a client that never reads cannot make replies pile up. */
function whenWritable(socket: SMTPConnection['_socket'], next: () => void): void {
  if (socket.writableNeedDrain && !socket.destroyed) socket.once('drain', next);
  else next();
}

function tlsInfo(socket: unknown): TlsInfo | undefined {
  // `servername` is set by node on server-side TLS sockets but missing from @types/node.
  const tls = socket as Partial<TLSSocket> & { servername?: unknown };
  if (typeof tls.getCipher !== 'function' || typeof tls.getProtocol !== 'function') return undefined;
  const cipher = tls.getCipher();
  const protocol = tls.getProtocol();
  if (!cipher || !protocol) return undefined;
  const servername = typeof tls.servername === 'string' ? tls.servername : undefined;
  return { protocol, cipher: cipher.name, ...(servername ? { servername } : {}) };
}

function toEnvelope(transaction: TransactionInfo): Envelope {
  const params = transaction.mailParams;
  const envelope: Envelope = {
    mailFrom: transaction.mailFrom,
    recipients: transaction.recipients.map((recipient) => ({ ...recipient })),
  };
  if (params.SMTPUTF8 === true) envelope.smtputf8 = true;
  if (typeof params.BODY === 'string')
    envelope.body = params.BODY.toUpperCase() === '8BITMIME' ? '8BITMIME' : '7BIT';
  if (typeof params.ENVID === 'string') envelope.envid = params.ENVID;
  if (typeof params.RET === 'string') envelope.ret = params.RET.toUpperCase() === 'HDRS' ? 'HDRS' : 'FULL';
  // smtp-server takes REQUIRETLS only on a TLS session (530 otherwise), where we offer it.
  if (params.REQUIRETLS === true) envelope.requireTls = true;
  return envelope;
}
