// The intake pipeline after the body is read, one for every way mail comes in (an SMTP
// transaction, and HTTP injection in apps/mta): loop check, our Received field, a missing
// Message-ID and Date for submitted mail, the `headers` transform, the `message` verdict, the
// `queue` transform (hold, DKIM), durable enqueue within a deadline, then the `queued` hooks.
import { randomUUID } from 'node:crypto';
import {
  type Envelope,
  type Headers,
  type Logger,
  parseTagFields,
  rfc5322Date,
  type SessionInfo,
  type SmtpReply,
  smtpReply,
  TAG_HEADER,
  type TransactionInfo,
  type Verdict,
  withTimeout,
} from '@tern/plugin-api';
import { type ByteSource, MessageContent, type PluginHost, type StateScope } from '@tern/plugin-api/host';
import { CoreReplies, queuedReply } from './replies.js';
import type { IncomingMessage, MessageSink } from './sink.js';

/** The header field that tags a message at intake (plugin-api's; re-exported for core's users). */
export { TAG_HEADER };

/** The message hook's tags for a message without any: one frozen array, not one per message. */
const NO_TAGS: readonly string[] = Object.freeze([]);

/** The `queued` stage of a host without queued hooks: settled already. */
const NOTHING_TO_OBSERVE: Promise<void> = Promise.resolve();

export interface AcceptInput {
  readonly plugins: PluginHost;
  readonly scope: StateScope;
  readonly session: SessionInfo;
  readonly transaction: TransactionInfo;
  /** The envelope to queue (from the transaction; the queue hooks may change its recipients). */
  readonly envelope: Envelope;
  /** The message's header block: changed in place (Received, hooks). */
  readonly headers: Headers;
  readonly body: ByteSource;
  /** A byte with the high bit set was seen. */
  readonly eightBit: boolean;
  /** The value of the Received field this MTA prepends, for the moment of acceptance. */
  readonly received: (now: Date) => string;
  /** RFC 6409 §8.2–8.3: add a missing Message-ID and Date (submitted or injected mail). */
  readonly addMissingIds: boolean;
  /** Our name, for a Message-ID we add. */
  readonly hostname: string;
  /** More Received fields than this is a loop. */
  readonly maxReceivedHeaders: number;
  readonly sink: MessageSink;
  readonly enqueueTimeoutMs: number;
  readonly log: Logger;
  /** Where the message came from, for its timeline. */
  readonly source: NonNullable<IncomingMessage['source']>;
}

export type Acceptance =
  | {
      readonly queued: true;
      readonly queueId: string;
      /** `250 2.0.0 queued as <id>`. */
      readonly reply: SmtpReply;
      /** The `queued` hooks, started after the queue has the message. */
      readonly observing: Promise<void>;
    }
  | {
      readonly queued: false;
      readonly reply: SmtpReply;
      /** A `message` hook asked to close the connection after the reply. */
      readonly disconnect: boolean;
    };

/** The reply of a verdict that stops the stage, or undefined for continue and accept. */
export function refusalOf(verdict: Verdict): { reply: SmtpReply; disconnect: boolean } | undefined {
  if (verdict.kind === 'continue' || verdict.kind === 'accept') return undefined;
  return { reply: verdict.reply, disconnect: verdict.kind === 'disconnect' };
}

/** Runs the pipeline; never throws for a refusal or a failure (those are replies, 451 when ours). */
export async function acceptMessage(input: AcceptInput): Promise<Acceptance> {
  const { headers, plugins, scope, log } = input;
  const refused = (reply: SmtpReply, disconnect = false): Acceptance => ({
    queued: false,
    reply,
    disconnect,
  });
  const received = headers.count('received');
  if (received > input.maxReceivedHeaders) {
    log.info({ received }, 'mail loop suspected');
    return refused(CoreReplies.loopDetected);
  }
  // Tags by header (X-Tern-Tag): taken from authenticated or trusted clients, and never sent on.
  const tagFields = headers.getAll(TAG_HEADER);
  if (tagFields.length > 0) {
    headers.remove(TAG_HEADER);
    if (input.session.trusted || input.session.user !== undefined) {
      const parsed = parseTagFields(tagFields, input.envelope.tags);
      if ('problem' in parsed) return refused(smtpReply(550, '5.6.0', parsed.problem));
      input.envelope.tags = parsed.tags;
    }
  }
  const now = new Date();
  headers.prepend('Received', input.received(now));
  if (input.addMissingIds) {
    if (!headers.has('message-id')) headers.append('Message-ID', `<${randomUUID()}@${input.hostname}>`);
    if (!headers.has('date')) headers.append('Date', rfc5322Date(now));
  }
  // Each hook input is written out in full: on Node 20 a property added after a spread
  // (`{ ...base, headers }`) costs a new hidden class, several microseconds per message.
  const { session, transaction } = input;
  // A stage no plugin implements is skipped: no context, no promise to wait for.
  if (plugins.has('headers')) {
    try {
      await plugins.runTransform('headers', { session, transaction, headers }, scope);
    } catch {
      return refused(CoreReplies.localError); // the runner logged the failing plugin and hook
    }
  }
  const message = new MessageContent(headers, input.body);
  if (plugins.has('message')) {
    const refusal = refusalOf(
      (
        await plugins.runVerdict(
          'message',
          { session, transaction, message, tags: input.envelope.tags ?? NO_TAGS },
          scope,
        )
      ).verdict,
    );
    if (refusal) return refused(refusal.reply, refusal.disconnect);
  }
  const envelope = input.envelope;
  let hold: string | undefined;
  if (plugins.has('queue')) {
    try {
      const holdMessage = (reason: string): void => {
        hold = reason;
      };
      await plugins.runTransform(
        'queue',
        { session, transaction, message, envelope, hold: holdMessage },
        scope,
      );
    } catch {
      return refused(CoreReplies.localError);
    }
  }
  if (envelope.recipients.length === 0) {
    log.error(
      { transaction: input.transaction.id },
      'queue hooks removed every recipient; refusing the message',
    );
    return refused(CoreReplies.localError);
  }
  // RFC 8689 §3: read once the queue hooks are done with the headers; REQUIRETLS wins over it.
  if (!envelope.requireTls && tlsRequiredNo(message.headers.get('TLS-Required')))
    envelope.tlsRequiredNo = true;
  const incoming: IncomingMessage = {
    envelope,
    content: message.source(),
    eightBit: input.eightBit,
    receivedAt: now.getTime(),
    source: input.source,
    ...(headers.get('message-id') !== undefined ? { messageId: headers.get('message-id') as string } : {}),
    ...(hold !== undefined ? { hold } : {}),
  };
  let queueId: string;
  try {
    queueId = await enqueueWithin(input.sink, incoming, input.enqueueTimeoutMs);
  } catch (error) {
    log.error({ err: error, transaction: input.transaction.id }, 'enqueue failed; answering 451');
    return refused(CoreReplies.localError);
  }
  log.info(
    {
      queueId,
      transaction: input.transaction.id,
      size: incoming.content.size,
      recipients: envelope.recipients.length,
    },
    'queued',
  );
  // Contexts are built now, before the reply lets the next transaction reset its state; the hooks
  // themselves run after the caller has answered.
  const observing = plugins.has('queued')
    ? plugins.runObserve('queued', { session, transaction, queueId, envelope }, scope)
    : NOTHING_TO_OBSERVE;
  return { queued: true, queueId, reply: queuedReply(queueId), observing };
}

/** A `TLS-Required: No` header field (RFC 8689 §3): the only value it defines, compared case-insensitively. */
function tlsRequiredNo(value: string | undefined): boolean {
  return value !== undefined && value.trim().toLowerCase() === 'no';
}

/** The sink's queue id, or a rejection when it fails, hangs past `timeoutMs` or answers nonsense. */
async function enqueueWithin(
  sink: MessageSink,
  message: IncomingMessage,
  timeoutMs: number,
): Promise<string> {
  const queueId = await withTimeout(() => sink.enqueue(message), timeoutMs, 'enqueue did not finish');
  if (typeof queueId !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(queueId)) {
    throw new Error(`enqueue resolved with an unusable queue id: ${JSON.stringify(queueId)}`);
  }
  return queueId;
}
