// The HTTP injection listener: POST /v1/messages (JSON, or a raw message as message/rfc822) for
// applications holding an API key, and GET /v1/openapi.json. A listener of its own, apart from the
// admin API: applications and operators hold different secrets and sit on different networks.
// Every answer is JSON with a stable `code`; nothing internal reaches the client.
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '@tern/plugin-api';
import { QueueUnavailableError } from '@tern/queue';
import { parseListen } from '../ops/admin-server.js';
import type { ApiKey, ApiKeyStore } from './api-keys.js';
import { DEFAULT_INJECTION_LIMITS, type InjectionDeps, injectMessage } from './inject.js';
import { openApiDocument } from './openapi.js';

/** What a request came as (a closed set, for metrics). */
export type InjectionSource = 'json' | 'raw' | 'none';

export interface InjectionServerOptions {
  /** `host:port` (port 0 picks a free one). */
  readonly listen: string;
  /** HTTPS with this PEM key and certificate. */
  readonly tls?: { readonly key: string; readonly cert: string };
  readonly keys: ApiKeyStore;
  readonly deps: InjectionDeps;
  /** Whether the queue store takes writes now (a request gets 503 at once when not). */
  readonly writable?: () => boolean;
  /** Requests whose bodies are read at once (default 16). */
  readonly maxConcurrentRequests?: number;
  /** The whole request must arrive within this (default 120 000 ms). */
  readonly requestTimeoutMs?: number;
  /** Each answered request: how it came and its `code` (or `queued` / `duplicate`). */
  readonly onResult?: (source: InjectionSource, result: string) => void;
  readonly logger: Logger;
}

export interface InjectionServer {
  /** `http(s)://host:port` as clients reach it. */
  readonly url: string;
  close(): Promise<void>;
}

/** What a JSON body may add to the message it carries: field names, quoting, base64's 4/3. */
const JSON_OVERHEAD = 256 * 1024;

/** A refusal with its status, stable code and text. */
class HttpFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The largest request body for a message size limit: base64 grows bytes by 4/3. */
export function bodyLimits(maxMessageBytes: number): { json: number; raw: number } {
  return { json: Math.ceil(maxMessageBytes / 3) * 4 + JSON_OVERHEAD, raw: maxMessageBytes };
}

export async function startInjectionServer(options: InjectionServerOptions): Promise<InjectionServer> {
  const { host, port } = parseListen(options.listen, 'config.http.listen');
  const log = options.logger.child({ component: 'http' });
  const maxMessageBytes = options.deps.limits?.maxMessageBytes ?? DEFAULT_INJECTION_LIMITS.maxMessageBytes;
  const limits = bodyLimits(maxMessageBytes);
  const maxConcurrent = options.maxConcurrentRequests ?? 16;
  let inFlight = 0;
  const scheme = options.tls ? 'https' : 'http';
  let document: string | undefined;

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    let source: InjectionSource = 'none';
    handle(req, res, (s) => {
      source = s;
    })
      .then((result) => options.onResult?.(source, result))
      .catch((error: unknown) => {
        leaveBody(req, res);
        if (error instanceof HttpFailure) {
          send(res, error.status, { code: error.code, error: error.message }, error.headers);
          options.onResult?.(source, error.code);
          return;
        }
        if (error instanceof QueueUnavailableError) {
          log.warn({ err: error }, 'injection refused: the queue store is unavailable');
          send(
            res,
            503,
            { code: 'unavailable', error: 'the queue cannot take messages now; retry later' },
            {
              'retry-after': '5',
            },
          );
          options.onResult?.(source, 'unavailable');
          return;
        }
        log.error({ err: error, method: req.method, url: req.url }, 'injection request failed');
        send(res, 500, { code: 'internal', error: 'internal error; see the tern log' });
        options.onResult?.(source, 'internal');
      });
  };

  async function handle(
    req: IncomingMessage,
    res: ServerResponse,
    sourced: (source: InjectionSource) => void,
  ): Promise<string> {
    const url = new URL(req.url ?? '/', 'http://injection');
    const method = req.method ?? 'GET';
    if (url.pathname === '/v1/openapi.json') {
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed(method, 'GET');
      document ??= JSON.stringify(openApiDocument({ maxMessageBytes }));
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-cache' });
      res.end(method === 'HEAD' ? undefined : document);
      return 'openapi';
    }
    if (url.pathname !== '/v1/messages')
      throw new HttpFailure(404, 'not_found', `no such endpoint: ${url.pathname}`);
    if (method !== 'POST') throw methodNotAllowed(method, 'POST');

    const key = await authenticate(req);
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    const raw = type === 'message/rfc822';
    if (type !== 'application/json' && !raw) {
      throw new HttpFailure(
        415,
        'unsupported_media_type',
        'send the message as application/json, or as message/rfc822 with mailFrom and to in the query',
      );
    }
    sourced(raw ? 'raw' : 'json');
    const limit = raw ? limits.raw : limits.json;
    const declared = Number(req.headers['content-length'] ?? Number.NaN);
    if (declared > limit) throw tooLarge(limit);
    if (options.writable && !options.writable()) {
      throw new HttpFailure(503, 'unavailable', 'the queue cannot take messages now; retry later', {
        'retry-after': '5',
      });
    }
    if (inFlight >= maxConcurrent) {
      throw new HttpFailure(503, 'busy', 'too many requests in progress; retry shortly', {
        'retry-after': '1',
      });
    }
    inFlight += 1;
    try {
      // An Expect: 100-continue client sends the body only now, after the checks above passed.
      if (expectsContinue(req)) {
        res.writeContinue();
        continued.add(req);
      }
      const bytes = await readBody(req, limit);
      let body: unknown;
      if (!raw) {
        if (url.search !== '') {
          throw new HttpFailure(400, 'invalid_request', 'a JSON request takes no query parameters');
        }
        try {
          body = JSON.parse(bytes.toString('utf8'));
        } catch {
          throw new HttpFailure(400, 'invalid_request', 'the body is not valid JSON');
        }
      }
      const idempotencyKey = req.headers['idempotency-key'];
      const outcome = await injectMessage(options.deps, {
        key,
        body,
        ...(raw ? { raw: { bytes, query: url.searchParams } } : {}),
        ...(typeof idempotencyKey === 'string' ? { idempotencyKey } : {}),
        remoteAddress: req.socket.remoteAddress ?? '',
      });
      const retry: Record<string, string> =
        outcome.status === 503 || outcome.status === 429 || outcome.status === 409
          ? { 'retry-after': '5' }
          : {};
      send(res, outcome.status, outcome.body, retry);
      if (outcome.status === 201) return 'queued';
      if (outcome.status === 200) return 'duplicate';
      return outcome.body.code;
    } finally {
      inFlight -= 1;
    }
  }

  async function authenticate(req: IncomingMessage): Promise<ApiKey> {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const challenge = { 'www-authenticate': 'Bearer realm="tern"' };
    if (!match) {
      throw new HttpFailure(
        401,
        'unauthorized',
        'send Authorization: Bearer <API key> (tern apikey add)',
        challenge,
      );
    }
    const key = await options.keys.authenticate(match[1] as string);
    if (!key) throw new HttpFailure(401, 'unauthorized', 'unknown or revoked API key', challenge);
    return key;
  }

  const server: Server = options.tls
    ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handler)
    : createHttpServer(handler);
  // Our own answer to Expect: 100-continue: a body too large or unauthorised is never sent.
  server.on('checkContinue', handler);
  server.requestTimeout = options.requestTimeoutMs ?? 120_000;
  server.headersTimeout = Math.min(60_000, server.requestTimeout);
  server.maxHeadersCount = 100;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (error) => log.error({ err: error }, 'injection server error'));
  // A client resetting its connection is not ours to crash on.
  server.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${scheme}://${shownHost}:${address.port}`;
  log.info({ url }, 'HTTP injection listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        // Requests being handled finish (their messages may be on the way to the queue); a client
        // that never finishes sending is cut off after a while.
        const cutOff = setTimeout(() => server.closeAllConnections(), 10_000);
        server.close(() => {
          clearTimeout(cutOff);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}

/** Bytes of a refused body read and dropped, so the client can read our answer; beyond it, the connection closes. */
const DRAIN_BYTES = 16 * 1024 * 1024;

/** The body, at most `limit` bytes; a larger one is refused (413) as soon as it passes the limit. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      stop();
      chunks.length = 0;
      drain(req, size);
      reject(tooLarge(limit));
    };
    const onEnd = (): void => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    const onError = (error: Error): void => {
      stop();
      reject(error);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/**
 * Reads and drops the rest of a refused body: a client still sending would otherwise have its
 * connection reset before it reads the 413. Bounded: past DRAIN_BYTES the connection is closed.
 */
function drain(req: IncomingMessage, alreadyRead = 0): void {
  let dropped = alreadyRead;
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > DRAIN_BYTES) req.socket.destroy();
  });
  req.resume();
}

function tooLarge(limit: number): HttpFailure {
  return new HttpFailure(413, 'too_large', `the request body is larger than ${limit} bytes`);
}

/** Requests answered 100 Continue: their clients send the body. */
const continued = new WeakSet<IncomingMessage>();

function expectsContinue(req: IncomingMessage): boolean {
  return req.headers.expect?.toLowerCase() === '100-continue';
}

/**
 * Before a refusal: a body not read yet is dropped as it comes (bounded), so the connection can
 * carry the next request; a client waiting for 100 Continue sends none, and its connection closes
 * after the answer (where its next request would start cannot be known).
 */
function leaveBody(req: IncomingMessage, res: ServerResponse): void {
  if (req.complete || req.readableFlowing) return;
  if (expectsContinue(req) && !continued.has(req)) res.shouldKeepAlive = false;
  else drain(req);
}

function methodNotAllowed(method: string, allow: string): HttpFailure {
  return new HttpFailure(405, 'method_not_allowed', `${method} is not allowed here; use ${allow}`, { allow });
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) return;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(JSON.stringify(body));
}
