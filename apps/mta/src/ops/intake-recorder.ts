// Keeps what happened in each SMTP session (every plugin verdict, with who the client was) in
// memory until its message is queued, when the events go into the message's stored timeline.
// Refusals (a plugin's, or core's own: relay denied, limits, syntax) are also kept in a short list,
// so "why was it rejected?" has an answer without grep.
import type { ReplyEvent } from '@tern/core';
import { HOOK_KINDS, type HookName } from '@tern/plugin-api';
import type { HookEvent } from '@tern/plugin-api/host';
import type { HookVerdictEvent } from '@tern/queue';

/**
 * One refusal, with what is known of the client at that moment: a plugin's verdict (with its plugin
 * and hook), or a 4xx/5xx reply core decided on its own (`by: 'core'`), as /metrics counts them.
 */
export interface Rejection {
  readonly at: number;
  readonly sessionId: string;
  readonly listener?: string;
  readonly remoteAddress?: string;
  readonly helo?: string;
  readonly sender?: string;
  /** The recipient being refused (a plugin's rcptTo) or the last one given; absent for core's refusals. */
  readonly recipient?: string;
  readonly by: 'plugin' | 'core';
  /** The plugin and hook that refused (`by: 'plugin'`). */
  readonly plugin?: string;
  readonly hook?: string;
  /** `reject`, `tempfail`, `disconnect`, `error` or `timeout`; core's replies are `reject` (5xx) or `tempfail` (4xx). */
  readonly outcome: string;
  /** The command refused, as /metrics labels it (`RCPT`, `MAIL`, `OTHER`, `NONE`, ...), once the reply was sent. */
  readonly command?: string;
  readonly code?: number;
  readonly enhanced?: string;
  readonly text?: string;
}

type MutableRejection = { -readonly [K in keyof Rejection]: Rejection[K] };

interface SessionTrace {
  listener?: string;
  remoteAddress?: string;
  helo?: string;
  sender?: string;
  recipient?: string;
  /** connect, helo, auth: part of every message of the session. */
  session: HookVerdictEvent[];
  /** From MAIL FROM on: this transaction only. */
  transaction: HookVerdictEvent[];
  /** A plugin's refusal whose reply to the client has not gone out yet (so it is not listed twice). */
  awaitingReply?: MutableRejection;
  lastSeen: number;
}

const SESSION_HOOKS = new Set(['connect', 'helo', 'auth']);
/** Hooks whose refusal is answered to the client: the verdict hooks, and intake's transforms (a failure is 451). */
const ANSWERED_HOOKS: ReadonlySet<string> = new Set(
  (Object.keys(HOOK_KINDS) as HookName[]).filter(
    (hook) => HOOK_KINDS[hook] === 'verdict' || hook === 'headers' || hook === 'queue',
  ),
);
/** An enhanced status code at the start of a reply line (RFC 3463). */
const ENHANCED = /^([245]\.\d{1,3}\.\d{1,3}) (.*)$/s;
const REFUSALS = new Set(['reject', 'tempfail', 'disconnect', 'error', 'timeout']);

export interface IntakeRecorderOptions {
  /** Events kept per session part (default 100); a client looping on RCPT cannot grow memory. */
  readonly maxEventsPerSession?: number;
  /** Sessions tracked at once (default 10 000); the least recently seen go first. */
  readonly maxSessions?: number;
  /** Refusals kept for the dashboard and the API (default 200). */
  readonly maxRejections?: number;
}

export class IntakeRecorder {
  readonly #sessions = new Map<string, SessionTrace>();
  readonly #rejections: Rejection[] = [];
  readonly #maxEvents: number;
  readonly #maxSessions: number;
  readonly #maxRejections: number;

  constructor(options: IntakeRecorderOptions = {}) {
    this.#maxEvents = options.maxEventsPerSession ?? 100;
    this.#maxSessions = options.maxSessions ?? 10_000;
    this.#maxRejections = options.maxRejections ?? 200;
  }

  /** A session opened (from the listener's SessionObserver, before any connect hook). */
  opened(sessionId: string, listener: string, remoteAddress: string): void {
    const trace = this.#trace(sessionId);
    trace.listener = listener;
    trace.remoteAddress = remoteAddress;
  }

  helo(sessionId: string, helo: string): void {
    this.#trace(sessionId).helo = helo;
  }

  /** A new transaction: its events start afresh (an RSET'd transaction's refusals are not the next message's). */
  mailFrom(sessionId: string, sender: string): void {
    const trace = this.#trace(sessionId);
    trace.sender = sender;
    trace.recipient = undefined;
    trace.transaction = [];
  }

  rcptTo(sessionId: string, recipient: string): void {
    this.#trace(sessionId).recipient = recipient;
  }

  closed(sessionId: string): void {
    this.#sessions.delete(sessionId);
  }

  /** The listener a session came in on, for metrics labels. */
  listenerOf(sessionId: string | undefined): string | undefined {
    return sessionId === undefined ? undefined : this.#sessions.get(sessionId)?.listener;
  }

  /** Records one hook call of a session (delivery hooks have no session and are not intake). */
  record(event: HookEvent, at: number = Date.now()): void {
    if (event.sessionId === undefined) return;
    const trace = this.#trace(event.sessionId);
    const entry: HookVerdictEvent = {
      type: 'hook',
      at,
      plugin: event.plugin,
      hook: event.hook,
      outcome: event.outcome,
      durationMs: Math.round(event.durationMs * 1000) / 1000,
      ...(event.code === undefined ? {} : { code: event.code }),
      ...(event.enhanced === undefined ? {} : { enhanced: event.enhanced }),
      ...(event.text === undefined ? {} : { text: event.text }),
    };
    const list = SESSION_HOOKS.has(event.hook) ? trace.session : trace.transaction;
    if (list.length < this.#maxEvents) list.push(entry);
    if (!REFUSALS.has(event.outcome)) return;
    const rejection: MutableRejection = {
      ...this.#client(at, event.sessionId, trace),
      ...(trace.sender === undefined ? {} : { sender: trace.sender }),
      ...(trace.recipient === undefined ? {} : { recipient: trace.recipient }),
      by: 'plugin',
      plugin: event.plugin,
      hook: event.hook,
      outcome: event.outcome,
      ...(event.code === undefined ? {} : { code: event.code }),
      ...(event.enhanced === undefined ? {} : { enhanced: event.enhanced }),
      ...(event.text === undefined ? {} : { text: event.text }),
    };
    this.#keep(rejection);
    trace.awaitingReply = ANSWERED_HOOKS.has(event.hook) ? rejection : undefined;
  }

  /**
   * Records one 4xx/5xx reply a listener sent (its onReply event). The reply to a plugin's refusal
   * completes that refusal (the command, and the code a failed hook got); any other is core's own.
   */
  reply(event: ReplyEvent, at: number = Date.now()): void {
    const trace = this.#trace(event.sessionId);
    trace.listener ??= event.listener;
    const pending = trace.awaitingReply;
    trace.awaitingReply = undefined;
    const said = ENHANCED.exec(event.text ?? '');
    if (pending) {
      pending.command = event.command;
      if (pending.code === undefined) {
        pending.code = event.code;
        if (said) [, pending.enhanced, pending.text] = said;
      }
      return;
    }
    // Only a recipient or sender of this very command is certain; a core refusal may precede both.
    const inTransaction = event.command === 'RCPT' || event.command === 'DATA' || event.command === 'BDAT';
    this.#keep({
      ...this.#client(at, event.sessionId, trace),
      ...(inTransaction && trace.sender !== undefined ? { sender: trace.sender } : {}),
      by: 'core',
      outcome: event.code >= 500 ? 'reject' : 'tempfail',
      command: event.command,
      code: event.code,
      ...(said ? { enhanced: said[1], text: said[2] } : event.text ? { text: event.text } : {}),
    });
  }

  /** The events to store with a message queued in this session; the transaction's are handed over once. */
  take(sessionId: string | undefined): HookVerdictEvent[] {
    if (sessionId === undefined) return [];
    const trace = this.#sessions.get(sessionId);
    if (!trace) return [];
    const events = [...trace.session, ...trace.transaction];
    trace.transaction = [];
    return events.sort((a, b) => a.at - b.at);
  }

  /** Recent refusals, newest first. */
  rejections(limit = this.#maxRejections): Rejection[] {
    return this.#rejections.slice(-limit).reverse();
  }

  get sessions(): number {
    return this.#sessions.size;
  }

  /** When, which session, and who the client was. */
  #client(
    at: number,
    sessionId: string,
    trace: SessionTrace,
  ): Pick<Rejection, 'at' | 'sessionId' | 'listener' | 'remoteAddress' | 'helo'> {
    return {
      at,
      sessionId,
      ...(trace.listener === undefined ? {} : { listener: trace.listener }),
      ...(trace.remoteAddress === undefined ? {} : { remoteAddress: trace.remoteAddress }),
      ...(trace.helo === undefined ? {} : { helo: trace.helo }),
    };
  }

  #keep(rejection: MutableRejection): void {
    this.#rejections.push(rejection);
    if (this.#rejections.length > this.#maxRejections) this.#rejections.shift();
  }

  #trace(sessionId: string): SessionTrace {
    let trace = this.#sessions.get(sessionId);
    if (trace) {
      // Re-insert so the map's order is least recently seen first.
      this.#sessions.delete(sessionId);
    } else {
      trace = { session: [], transaction: [], lastSeen: 0 };
      // A session whose close we never saw (a crash in core, say) must not stay forever.
      if (this.#sessions.size >= this.#maxSessions) {
        const oldest = this.#sessions.keys().next().value;
        if (oldest !== undefined) this.#sessions.delete(oldest);
      }
    }
    trace.lastSeen = Date.now();
    this.#sessions.set(sessionId, trace);
    return trace;
  }
}
