// Every private member of smtp-server that core relies on, in one list, with the check that the
// installed copy still has them. smtp-server has no API for what the adapter does (HELO hooks, our
// own command parser, PROXY by CIDR, the greeting delay), so core is pinned to one version
// (3.21.6) and this list is checked at start-up (listener.ts) and by the canary against the newest
// 3.x (scripts/smtp-server-canary.mjs). What Tern could do itself it does (see replies.ts for
// enhanced codes, session.ts for AUTH continuation tracking and socket drain): none of that is here.
import { Socket } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';

interface Internal {
  /** `Class.member`, as reported when missing. */
  readonly name: string;
  /** A method on the prototype, or a field an instance has after construction. */
  readonly kind: 'method' | 'field';
  /** What core does with it. */
  readonly use: string;
}

const method = (name: string, use: string): Internal => ({ name, kind: 'method', use });
const field = (name: string, use: string): Internal => ({ name, kind: 'field', use });

export const SMTP_SERVER_INTERNALS: readonly Internal[] = [
  method('SMTPServer.connect', 'replaced: connection limits and our session before any byte is read'),
  method('SMTPServer._expectsProxyHeader', 'replaced: PROXY only from trusted networks (CIDR blocks)'),
  method('SMTPServer._handleProxy', 'wrapped: no PROXY header expected: our session id, no setImmediate'),
  field('SMTPServer._pendingSockets', 'sockets still in a PROXY header or TLS handshake: deadline and close'),
  field('SMTPServer.connections', 'the connection set connect() adds to'),
  method('SMTPConnection._setListeners', 'init() without its fixed 100 ms wait: our greeting delay'),
  method('SMTPConnection.connectionReady', 'starts the session after our greeting delay'),
  method(
    'SMTPConnection._createParser',
    'replaced: our CommandStream, also after STARTTLS; none while the constructor runs (TernConnection)',
  ),
  method('SMTPConnection._onCommand', 'runs a command line once our checks passed'),
  method('SMTPConnection._isDisabled', 'replaced: our disabled commands are upper case already'),
  method('SMTPConnection._resetSession', 'wrapped: every reset ends our transaction too'),
  method('SMTPConnection._sendGreeting', 'wrapped: held after XCLIENT until the connect hooks judged'),
  method('SMTPConnection.handler_HELO', 'wrapped: helo hooks run before the reply'),
  method('SMTPConnection.handler_EHLO', 'wrapped: helo hooks run before the reply'),
  method(
    'SMTPConnection.handler_QUIT',
    'wrapped: a plain socket closes once the 221 is written, without the half-close',
  ),
  method('SMTPConnection.handler_XCLIENT', 'wrapped: the connect hooks judge the forwarded client'),
  method('SMTPConnection.send', 'wrapped: one enhanced code per reply, error counting, reply events'),
  method('SMTPConnection.close', 'closes after a disconnect verdict'),
  field('SMTPConnection._parser', 'the current CommandStream, for its deadline times'),
  field('SMTPConnection._socket', 'the current socket: TLS details, drain, forced close'),
  field('SMTPConnection._upgrading', 'a STARTTLS handshake is running: no reply can be written'),
  field('SMTPConnection._closing', 'no reply once the connection is closing'),
  field('SMTPConnection._closed', 'no reply once the connection is closed'),
  // Not underscored, but SMTPConnection itself is no public API.
  field('SMTPConnection.id', 'the session id'),
  field('SMTPConnection.session', 'user, xClient and disabledCommands of the session'),
  field('SMTPConnection.secure', 'TLS is up'),
  field('SMTPConnection.hostNameAppearsAs', 'the HELO name smtp-server accepted'),
  field('SMTPConnection.remoteAddress', 'the client, after PROXY and XCLIENT'),
  field('SMTPConnection.remotePort', 'the client, after PROXY and XCLIENT'),
  field('SMTPConnection.localAddress', 'our end of the connection'),
  field('SMTPConnection.localPort', 'our end of the connection'),
  method('SMTPStream._write', 'replaced: command-line splitting (DATA mode is passed through)'),
  method('SMTPStream._flushData', 'replaced: a line without CRLF never runs'),
  method('SMTPStream.startDataMode', 'wrapped: a message is being received'),
  method('SMTPStream.continue', 'wrapped: the message has been answered'),
  field('SMTPStream._dataMode', 'DATA mode: bytes are message content'),
  field('SMTPStream.isClosed', 'the parser was retired (close, STARTTLS)'),
  method('SMTPStream.oncommand', 'set: where a complete command line goes'),
];

/**
 * What a TernConnection hands to its session (session.ts) where smtp-server would run its own
 * code: the session's methods, reached through the connection's prototype rather than closures
 * assigned to each connection (nine functions and as many new properties per connection before).
 */
export interface ConnectionAdapter {
  /** Our CommandStream (command-stream.ts), also for the fresh parser after STARTTLS. */
  createParser(): SMTPStream;
  /** Every reply; the adapter writes it with smtp-server's own `send` (SMTPConnection.prototype). */
  send(code: number, data?: string | string[] | null, context?: string | false): void;
  /** HELO or EHLO: the helo hooks, then smtp-server's handler. */
  helo(command: 'HELO' | 'EHLO', line: Buffer, callback: () => void): void;
  /** After smtp-server reset its session (RSET, HELO/EHLO, STARTTLS, XCLIENT, end of DATA). */
  resetSession(): void;
  /** The 220 greeting, first and after XCLIENT. */
  sendGreeting(): void;
  xclient(line: Buffer, callback: () => void): void;
  quit(line: Buffer, callback: () => void): void;
}

/**
 * The SMTPConnection of every Tern session. Its constructor makes no parser: smtp-server's builds
 * an SMTPStream only for the session to replace it with a CommandStream before init() pipes the
 * socket to it, a stream's worth of set-up and garbage per connection. The session sets `adapter`
 * and `_parser` right after construction; the canary's real sessions fail if a release starts
 * using the parser or replies inside the constructor.
 */
export class TernConnection extends SMTPConnection {
  /** The session: set right after construction, before any socket event (listener.ts accept). */
  declare adapter: ConnectionAdapter;

  override _createParser(): SMTPStream {
    // Undefined only while the constructor runs: no parser then.
    return this.adapter === undefined ? (false as unknown as SMTPStream) : this.adapter.createParser();
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    this.adapter.send(code, data, context);
  }

  override _sendGreeting(): void {
    this.adapter.sendGreeting();
  }

  override _resetSession(): void {
    super._resetSession();
    this.adapter.resetSession();
  }

  override handler_HELO(command: Buffer, callback: () => void): void {
    this.adapter.helo('HELO', command, callback);
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    this.adapter.helo('EHLO', command, callback);
  }

  override handler_XCLIENT(command: Buffer, callback: () => void): void {
    this.adapter.xclient(command, callback);
  }

  override handler_QUIT(command: Buffer, callback: () => void): void {
    this.adapter.quit(command, callback);
  }

  /**
   * smtp-server trims and upper-cases each entry of a session's disabledCommands on every look-up
   * (two or three per command line); the session's list is ours, already upper case (session.ts).
   */
  override _isDisabled(command: string): boolean {
    const disabled = this.session.disabledCommands;
    return Array.isArray(disabled) ? disabled.includes(command) : super._isDisabled(command);
  }
}

/** The names of SMTP_SERVER_INTERNALS the installed smtp-server lacks (empty when it has them all). */
export function missingSmtpServerInternals(): string[] {
  let instances: Record<string, object>;
  try {
    // Fields exist only on instances: build one of each, listening on nothing.
    const server = new SMTPServer({ logger: false, disableReverseLookup: true, hideSTARTTLS: true });
    instances = {
      SMTPServer: server,
      SMTPConnection: new SMTPConnection(server, new Socket(), {}),
      SMTPStream: new SMTPStream({}),
    };
  } catch (error) {
    return [`a constructor that works as in 3.21.6 (${(error as Error).message})`];
  }
  return SMTP_SERVER_INTERNALS.filter(({ name, kind }) => {
    const [owner = '', member = ''] = name.split('.');
    const instance = instances[owner] as Record<string, unknown> | undefined;
    if (instance === undefined) return true;
    return kind === 'method' ? typeof instance[member] !== 'function' : !(member in instance);
  }).map(({ name }) => name);
}
