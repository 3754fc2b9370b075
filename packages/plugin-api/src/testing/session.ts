// The intake side of the test kit: drives plugins through the SMTP stages of one connection
// without a socket, with the runner core uses, so a plugin's tests exercise the real ordering,
// timeouts, checks, state and results.
import { randomUUID } from 'node:crypto';
import type { Envelope, EnvelopeRecipient, SmtpParams } from '../envelope.js';
import { domainOf, parseTagFields, TAG_HEADER } from '../envelope.js';
import { HookFailure } from '../errors.js';
import type { ListenerInfo, Plugin, SessionInfo, TlsInfo, TransactionInfo } from '../hooks.js';
import { MessageContent } from '../message.js';
import { Replies } from '../reply.js';
import type { ResultsReader } from '../results.js';
import { type HookInput, StateScope } from '../runner.js';
import { reject, type Verdict } from '../verdict.js';
import { PluginTestHost, type TestHostOptions, testQueueId } from './base.js';

export interface TestSessionOptions extends TestHostOptions {
  readonly remoteAddress?: string;
  readonly listener?: Partial<ListenerInfo>;
  readonly trusted?: boolean;
  readonly tls?: TlsInfo;
  /** Domains treated as local for `isLocalDomain` in rcptTo (default: `example.test`). */
  readonly localDomains?: readonly string[];
}

export interface DataResult {
  /**
   * The message stage's verdict (continue when every plugin let it through), or the 451 4.3.0
   * tempfail core answers when a headers or queue hook failed or queue hooks removed every recipient.
   */
  readonly verdict: Verdict;
  /** The message after the headers and queue transforms. */
  readonly message: MessageContent;
  readonly envelope: Envelope;
  /** The reason a queue hook gave for holding the message (quarantine), if one did. */
  readonly held: string | undefined;
}

/** What core answers when a hook failed: never a detail of the failure. */
const localError: Verdict = { kind: 'tempfail', reply: Replies.localError };

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export class PluginTestSession extends PluginTestHost {
  readonly session: SessionInfo;
  readonly #info: Mutable<SessionInfo>;
  readonly #scope: StateScope;
  readonly #localDomains: Set<string>;
  #transaction: Mutable<TransactionInfo> | undefined;

  constructor(plugins: Plugin | readonly Plugin[], options: TestSessionOptions = {}) {
    super(plugins, options);
    const id = randomUUID();
    this.#info = {
      id,
      listener: { name: 'test', kind: 'mx', hostname: 'mx.tern.test', port: 25, ...options.listener },
      remoteAddress: options.remoteAddress ?? '192.0.2.1',
      remotePort: 40000,
      localAddress: '127.0.0.1',
      localPort: 25,
      trusted: options.trusted ?? false,
      startedAt: Date.now(),
      helo: undefined,
      tls: options.tls,
      user: undefined,
    };
    this.session = this.#info;
    this.#scope = new StateScope(id);
    this.#localDomains = new Set((options.localDomains ?? ['example.test']).map((d) => d.toLowerCase()));
  }

  /** What the plugins published on `ctx.results` so far, for the session and its open transaction. */
  get results(): ResultsReader {
    return this.#scope.results.reader();
  }

  async connect(): Promise<Verdict> {
    return (await this.host.runVerdict('connect', { session: this.session }, this.#scope)).verdict;
  }

  async helo(hostname: string, command: 'HELO' | 'EHLO' | 'LHLO' = 'EHLO'): Promise<Verdict> {
    this.#info.helo = hostname;
    return (await this.host.runVerdict('helo', { session: this.session, hostname, command }, this.#scope))
      .verdict;
  }

  /** Runs the auth hook; an accept marks the session authenticated as `username`. */
  async auth(username: string, password: string, method: 'PLAIN' | 'LOGIN' = 'PLAIN'): Promise<Verdict> {
    const outcome = await this.host.runVerdict(
      'auth',
      { session: this.session, method, username, password },
      this.#scope,
    );
    if (outcome.verdict.kind === 'accept') this.#info.user = username;
    return outcome.verdict;
  }

  async mailFrom(address: string, params: SmtpParams = {}): Promise<Verdict> {
    this.#scope.resetTransaction();
    const outcome = await this.host.runVerdict(
      'mailFrom',
      { session: this.session, address, params },
      this.#scope,
    );
    if (outcome.verdict.kind === 'continue' || outcome.verdict.kind === 'accept') {
      this.#transaction = { id: randomUUID(), mailFrom: address, mailParams: params, recipients: [] };
    }
    return outcome.verdict;
  }

  async rcptTo(address: string, params: SmtpParams = {}): Promise<Verdict> {
    const transaction = this.#requireTransaction('rcptTo');
    const recipient: EnvelopeRecipient = { address };
    const outcome = await this.host.runVerdict(
      'rcptTo',
      {
        session: this.session,
        transaction,
        recipient,
        params,
        isLocalDomain: this.#localDomains.has(domainOf(address)),
        mayRelay: this.session.trusted || this.session.user !== undefined,
      },
      this.#scope,
    );
    if (outcome.verdict.kind === 'continue' || outcome.verdict.kind === 'accept') {
      transaction.recipients = [...transaction.recipients, recipient];
    }
    return outcome.verdict;
  }

  /**
   * Runs headers (transform), message (verdict) and, unless refused, queue (transform), as core
   * does after DATA: a failing transform answers 451 4.3.0 (tempfail) as it would in Tern, and
   * `failures()` says which plugin and hook.
   */
  async data(raw: string | Buffer): Promise<DataResult> {
    const transaction = this.#requireTransaction('data');
    const message = MessageContent.parse(raw);
    const base = { session: this.session, transaction };
    const envelope: Envelope = { mailFrom: transaction.mailFrom, recipients: [...transaction.recipients] };
    let held: string | undefined;
    const result = (verdict: Verdict): DataResult => ({ verdict, message, envelope, held });
    // As core: X-Tern-Tag is removed, and its tags taken from trusted or authenticated clients.
    const tagFields = message.headers.getAll(TAG_HEADER);
    if (tagFields.length > 0) {
      message.headers.remove(TAG_HEADER);
      if (this.session.trusted || this.session.user !== undefined) {
        const parsed = parseTagFields(tagFields);
        if ('problem' in parsed) return result(reject(550, '5.6.0', parsed.problem));
        envelope.tags = parsed.tags;
      }
    }
    if (!(await this.#transforms('headers', { ...base, headers: message.headers })))
      return result(localError);
    const tags = envelope.tags ?? [];
    const { verdict } = await this.host.runVerdict('message', { ...base, message, tags }, this.#scope);
    if (verdict.kind !== 'continue' && verdict.kind !== 'accept') return result(verdict);
    const hold = (reason: string): void => {
      held = reason;
    };
    if (!(await this.#transforms('queue', { ...base, message, envelope, hold }))) return result(localError);
    return result(envelope.recipients.length === 0 ? localError : verdict);
  }

  /** Runs a transform stage; false when a hook failed (the runner has logged it). */
  async #transforms<K extends 'headers' | 'queue'>(hook: K, input: HookInput<K>): Promise<boolean> {
    try {
      await this.host.runTransform(hook, input, this.#scope);
      return true;
    } catch (error) {
      if (error instanceof HookFailure) return false;
      throw error;
    }
  }

  /**
   * Runs the queued hooks, as after the queue made the message durable and the client got its 250
   * (`queueId` defaults to a new one in the queue's format), and ends the transaction.
   */
  async queued(queueId: string = testQueueId(), envelope?: Envelope): Promise<void> {
    const transaction = this.#requireTransaction('queued');
    await this.host.runObserve(
      'queued',
      {
        session: this.session,
        transaction,
        queueId,
        envelope: envelope ?? { mailFrom: transaction.mailFrom, recipients: [...transaction.recipients] },
      },
      this.#scope,
    );
    this.#transaction = undefined;
    this.#scope.resetTransaction();
  }

  /**
   * The client goes away: hooks still deciding something for it are aborted (their `ctx.signal`
   * fires), then the close hooks run.
   */
  async close(): Promise<void> {
    this.#scope.end();
    await this.host.runObserve('close', { session: this.session }, this.#scope);
  }

  #requireTransaction(stage: string): Mutable<TransactionInfo> {
    if (!this.#transaction) throw new Error(`${stage}: call mailFrom() first (and have it accepted)`);
    return this.#transaction;
  }
}

/** Starts a test session over these plugins, as a client connecting to a listener would. */
export function testPlugins(
  plugins: Plugin | readonly Plugin[],
  options?: TestSessionOptions,
): PluginTestSession {
  return new PluginTestSession(plugins, options);
}
