// One injected message, from a checked request to a queue id: the key's sender domains, the
// suppression list, the idempotency key, then core's intake (the same reading of the bytes and
// the same hooks from `headers` on as SMTP intake), durable before it answers. The HTTP layer
// (routes, status codes on the wire, OpenAPI) sits on top of this.
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { acceptMessage, type IntakeSpool, type MessageSink, readMessage } from '@tern/core';
import {
  type Envelope,
  type Logger,
  rfc5322Date,
  type SessionInfo,
  type SmtpReply,
  type TransactionInfo,
} from '@tern/plugin-api';
import { type PluginHost, StateScope } from '@tern/plugin-api/host';
import {
  type IdempotencyStore,
  MAX_IDEMPOTENCY_KEY,
  messageTagScopes,
  type Suppression,
  type SuppressionStore,
  suppressionScopes,
} from '@tern/queue';
import { type ApiKey, keyMaySend } from './api-keys.js';
import {
  type ComposedMessage,
  type ComposeLimits,
  composeMessage,
  composeRaw,
  DEFAULT_COMPOSE_LIMITS,
  InjectionInputError,
  MessageTooLargeError,
} from './compose.js';

export interface InjectionLimits extends ComposeLimits {
  /** How long an idempotency key holds its queue id (default 24 h). */
  readonly idempotencyWindowMs: number;
  /** How long a request may take to make its message durable (default 30 s). */
  readonly enqueueTimeoutMs: number;
  readonly maxReceivedHeaders: number;
  readonly maxHeaderBytes: number;
}

export const DEFAULT_INJECTION_LIMITS: InjectionLimits = {
  ...DEFAULT_COMPOSE_LIMITS,
  idempotencyWindowMs: 24 * 3600_000,
  enqueueTimeoutMs: 30_000,
  maxReceivedHeaders: 50,
  maxHeaderBytes: 64 * 1024,
};

export interface InjectionDeps {
  /** The plugin host injected mail runs through (asked per request: a reload swaps it). */
  readonly plugins: () => PluginHost;
  readonly sink: MessageSink;
  readonly spool: IntakeSpool;
  readonly suppressions: SuppressionStore | undefined;
  /** The tags with a list of their own (`suppression.tagScopes`), asked per request (a reload changes them). */
  readonly tagScopes?: () => ReadonlySet<string>;
  readonly idempotency: IdempotencyStore | undefined;
  readonly hostname: string;
  readonly log: Logger;
  readonly limits?: Partial<InjectionLimits>;
  /** The ops side's view of each request as a session (its hook verdicts go to the timeline). */
  readonly sessions?: {
    opened(sessionId: string, listener: string, remoteAddress: string): void;
    mailFrom(sessionId: string, sender: string): void;
    closed(sessionId: string): void;
  };
}

export interface InjectionRequestContext {
  readonly key: ApiKey;
  /** The request's body: parsed JSON, or a raw message (message/rfc822) with its query string. */
  readonly body: unknown;
  readonly raw?: { readonly bytes: Buffer; readonly query: URLSearchParams };
  readonly idempotencyKey?: string | undefined;
  readonly remoteAddress: string;
}

/** What the request gets: the HTTP status and the JSON body. */
export type InjectionOutcome =
  | {
      readonly status: 201;
      readonly body: { queueId: string; recipients: readonly string[]; tags: readonly string[] };
    }
  | { readonly status: 200; readonly body: { queueId: string; duplicate: true } }
  | { readonly status: InjectionErrorStatus; readonly body: InjectionError };

type InjectionErrorStatus = 400 | 403 | 409 | 413 | 422 | 429 | 503;

export interface InjectionError {
  /**
   * A stable code: invalid_request, too_large, sender_not_allowed, recipient_suppressed,
   * idempotency_in_progress, idempotency_mismatch, rejected (a plugin's 5xx), temporarily_refused
   * (a plugin's 4xx, e.g. a rate limit), unavailable (the store cannot take it now).
   */
  readonly code: string;
  readonly error: string;
  readonly field?: string;
  readonly suppressed?: readonly { recipient: string; scope: string; since: string; source: string }[];
  readonly reply?: SmtpReply;
}

const NO_TAG_SCOPES: ReadonlySet<string> = new Set();

const fail = (status: InjectionErrorStatus, body: InjectionError): InjectionOutcome => ({
  status,
  body,
});

/** Handles one request; never throws for what the client sent or for a refusal by a plugin. */
export async function injectMessage(
  deps: InjectionDeps,
  request: InjectionRequestContext,
): Promise<InjectionOutcome> {
  const limits = { ...DEFAULT_INJECTION_LIMITS, ...deps.limits };
  let composed: ComposedMessage;
  try {
    composed = request.raw
      ? composeRaw(request.raw.bytes, request.raw.query, limits)
      : await composeMessage(request.body, limits);
  } catch (error) {
    if (error instanceof MessageTooLargeError) return fail(413, { code: 'too_large', error: error.message });
    if (!(error instanceof InjectionInputError)) throw error;
    return fail(400, {
      code: 'invalid_request',
      error: error.message,
      ...(error.field === '' ? {} : { field: error.field }),
    });
  }
  const { envelope } = composed;
  if (!keyMaySend(request.key, envelope.mailFrom)) {
    return fail(403, {
      code: 'sender_not_allowed',
      error: `API key ${request.key.id} may not send from ${envelope.mailFrom} (its domains: ${request.key.domains.join(', ')})`,
      field: 'from',
    });
  }
  const idempotencyKey = request.idempotencyKey;
  if (
    idempotencyKey !== undefined &&
    (idempotencyKey === '' || idempotencyKey.length > MAX_IDEMPOTENCY_KEY || /[\s]/.test(idempotencyKey))
  ) {
    return fail(400, {
      code: 'invalid_request',
      error: `Idempotency-Key: 1 to ${MAX_IDEMPOTENCY_KEY} characters without spaces`,
      field: 'Idempotency-Key',
    });
  }

  if (deps.suppressions) {
    // The tags are known up front here: their scopes are checked with the sender's.
    const tagged = messageTagScopes(composed.tags, deps.tagScopes?.() ?? NO_TAG_SCOPES);
    const scopes = suppressionScopes(envelope.mailFrom, tagged);
    const found: { recipient: string; entry: Suppression }[] = [];
    for (const recipient of new Set(envelope.recipients.map((r) => r.toLowerCase()))) {
      const entry = await deps.suppressions.find(recipient, scopes);
      if (entry) found.push({ recipient, entry });
    }
    if (found.length > 0) {
      return fail(422, {
        code: 'recipient_suppressed',
        error: `${found.length} recipient(s) are suppressed: ${found.map((f) => f.recipient).join(', ')}`,
        suppressed: found.map(({ recipient, entry }) => ({
          recipient,
          scope: entry.scope,
          since: new Date(entry.createdAt).toISOString(),
          source: entry.category === undefined ? entry.source : `${entry.source}: ${entry.category}`,
        })),
      });
    }
  }

  // The key is the API key's own: two applications cannot collide, or learn each other's ids.
  const claimKey = idempotencyKey === undefined ? undefined : `${request.key.id}:${idempotencyKey}`;
  // Hashing the request (up to the size limit) is only worth it when there is a key to compare under.
  const fingerprint = claimKey === undefined ? '' : requestFingerprint(request, composed);
  if (claimKey !== undefined) {
    if (!deps.idempotency)
      return fail(503, { code: 'unavailable', error: 'this queue backend keeps no idempotency keys' });
    const claim = await deps.idempotency.claim(claimKey, fingerprint, limits.enqueueTimeoutMs * 2);
    if (claim.state === 'done') return { status: 200, body: { queueId: claim.queueId, duplicate: true } };
    if (claim.state === 'pending') {
      return fail(409, {
        code: 'idempotency_in_progress',
        error: 'a request with this Idempotency-Key is being handled; retry later',
      });
    }
    if (claim.state === 'mismatch') {
      return fail(422, {
        code: 'idempotency_mismatch',
        error: 'this Idempotency-Key was used for a different request',
      });
    }
  }
  let outcome: InjectionOutcome;
  try {
    outcome = await intake(deps, limits, request, composed);
  } catch (error) {
    if (claimKey !== undefined) await deps.idempotency?.release(claimKey);
    throw error;
  }
  if (claimKey !== undefined) {
    if (outcome.status === 201) {
      await deps.idempotency?.complete(
        claimKey,
        fingerprint,
        outcome.body.queueId,
        limits.idempotencyWindowMs,
      );
    } else await deps.idempotency?.release(claimKey);
  }
  return outcome;
}

async function intake(
  deps: InjectionDeps,
  limits: InjectionLimits,
  request: InjectionRequestContext,
  composed: ComposedMessage,
): Promise<InjectionOutcome> {
  const id = `http-${randomBytes(6).toString('hex')}`;
  // The bytes are read as SMTP DATA is: bare line ends, long lines and the header size are judged the same way.
  const read = await readMessage(Readable.from([composed.message]), {
    bareLineEndings: 'reject',
    longLines: 'reject',
    maxMessageSize: limits.maxMessageBytes,
    maxHeaderBytes: limits.maxHeaderBytes,
    spool: deps.spool,
  });
  if (!read.ok) return refusal(read.reply);
  deps.sessions?.opened(id, 'http', request.remoteAddress);
  deps.sessions?.mailFrom(id, composed.envelope.mailFrom);
  try {
    const now = Date.now();
    // Injected mail is submitted mail: a session of its own, authenticated by the API key.
    const session: SessionInfo = {
      id,
      listener: { name: 'http', kind: 'submission', hostname: deps.hostname, port: 0 },
      remoteAddress: request.remoteAddress,
      remotePort: 0,
      localAddress: '',
      localPort: 0,
      trusted: false,
      startedAt: now,
      helo: undefined,
      tls: undefined,
      user: request.key.id,
    };
    const transaction: TransactionInfo = {
      id,
      mailFrom: composed.envelope.mailFrom,
      mailParams: {},
      recipients: composed.envelope.recipients.map((address) => ({ address })),
    };
    const envelope: Envelope = {
      mailFrom: transaction.mailFrom,
      recipients: transaction.recipients.map((r) => ({ ...r })),
      ...(composed.tags.length > 0 ? { tags: [...composed.tags] } : {}),
      apiKey: request.key.id,
    };
    const plugins = deps.plugins();
    const release = plugins.retain();
    const scope = new StateScope(id);
    try {
      const result = await acceptMessage({
        plugins,
        scope,
        session,
        transaction,
        envelope,
        headers: read.headers,
        body: read.body,
        eightBit: read.eightBit,
        received: (date) =>
          `from ${request.remoteAddress} (API key ${request.key.id}) by ${deps.hostname} with HTTP id ${id}; ${rfc5322Date(date)}`,
        addMissingIds: true,
        hostname: deps.hostname,
        maxReceivedHeaders: limits.maxReceivedHeaders,
        sink: deps.sink,
        enqueueTimeoutMs: limits.enqueueTimeoutMs,
        log: deps.log.child({ session: id, apiKey: request.key.id }),
        source: {
          listener: 'http',
          remoteAddress: request.remoteAddress,
          sessionId: id,
          user: request.key.id,
        },
      });
      if (!result.queued) {
        scope.end();
        return refusal(result.reply);
      }
      void result.observing.finally(() => scope.end());
      const tags = envelope.tags ?? [];
      return {
        status: 201,
        body: { queueId: result.queueId, recipients: composed.envelope.recipients, tags },
      };
    } finally {
      release();
    }
  } finally {
    deps.sessions?.closed(id);
    await read.release();
  }
}

/** What an Idempotency-Key is bound to: the JSON body, or the raw message's hash with its envelope. */
function requestFingerprint(
  request: InjectionRequestContext,
  composed: Awaited<ReturnType<typeof composeMessage>>,
): string {
  return createHash('sha256')
    .update(
      request.raw
        ? JSON.stringify([
            composed.envelope,
            composed.tags,
            createHash('sha256').update(request.raw.bytes).digest('hex'),
          ])
        : JSON.stringify(request.body),
    )
    .digest('base64url');
}

/**
 * A refusal by intake: a plugin's 5xx is final (422), our own failure to make it durable
 * (4.3.x) is 503, and any other 4xx (a rate limit) is 429: the same request may pass later.
 */
function refusal(reply: SmtpReply): InjectionOutcome {
  if (reply.code >= 500) return fail(422, { code: 'rejected', error: reply.text, reply });
  if (reply.enhanced?.startsWith('4.3.')) {
    return fail(503, { code: 'unavailable', error: 'the message could not be queued now; retry later' });
  }
  return fail(429, { code: 'temporarily_refused', error: reply.text, reply });
}
