// Keeps what happened in each SMTP session (every plugin verdict, with who the client was) in
// memory until its message is queued, when the events go into the message's stored timeline.
// Refusals are also kept in a short list, so "why was it rejected?" has an answer without grep.
import type { HookEvent } from '@tern/plugin-api/host';
import type { HookVerdictEvent } from '@tern/queue';

/** One refusal by a plugin, with what is known of the client at that moment. */
export interface Rejection {
  readonly at: number;
  readonly sessionId: string;
  readonly listener?: string;
  readonly remoteAddress?: string;
  readonly helo?: string;
  readonly sender?: string;
  /** The recipient being refused (rcptTo) or the last one given. */
  readonly recipient?: string;
  readonly plugin: string;
  readonly hook: string;
  readonly outcome: string;
  readonly code?: number;
  readonly enhanced?: string;
  readonly text?: string;
}

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
  lastSeen: number;
}

const SESSION_HOOKS = new Set(['connect', 'helo', 'auth']);
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

  /** A session opened (from the ops plugin's connect hook, which runs first). */
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
    if (REFUSALS.has(event.outcome)) {
      this.#rejections.push({
        at,
        sessionId: event.sessionId,
        ...(trace.listener === undefined ? {} : { listener: trace.listener }),
        ...(trace.remoteAddress === undefined ? {} : { remoteAddress: trace.remoteAddress }),
        ...(trace.helo === undefined ? {} : { helo: trace.helo }),
        ...(trace.sender === undefined ? {} : { sender: trace.sender }),
        ...(trace.recipient === undefined ? {} : { recipient: trace.recipient }),
        plugin: event.plugin,
        hook: event.hook,
        outcome: event.outcome,
        ...(event.code === undefined ? {} : { code: event.code }),
        ...(event.enhanced === undefined ? {} : { enhanced: event.enhanced }),
        ...(event.text === undefined ? {} : { text: event.text }),
      });
      if (this.#rejections.length > this.#maxRejections) this.#rejections.shift();
    }
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
