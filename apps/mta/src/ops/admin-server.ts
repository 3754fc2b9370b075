// The admin HTTP API (node:http, JSON): queue summary and listing, one message with its timeline,
// operator actions, /metrics for Prometheus and the dashboard page. Every /api route needs
// `Authorization: Bearer <token>`; it listens on loopback unless the config says otherwise.
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { nextHopSchema } from '@tern/delivery';
import { durationMs, type Logger, type NextHop } from '@tern/plugin-api';
import {
  DEFAULT_SUPPRESSION_PAGE,
  isQueueId,
  isQueueOperations,
  type JobStateFilter,
  MAX_SUPPRESSION_PAGE,
  type MessageDetails,
  OperationInputError,
  type QueueBackend,
  type QueueHealth,
  type QueueOperations,
  suppressionAddress,
  suppressionEntry,
  suppressionScope,
} from '@tern/queue';
import { z } from 'zod';
import type { PlatformEvents } from '../events.js';
import { UnknownWebhookEndpoint, type WebhookDispatcher } from '../webhooks/dispatcher.js';
import { envelopeEvents, operatorBounceEvents, suppressionEvent } from '../webhooks/producers.js';
import type { ActivityLog, DeliveryActivity } from './activity.js';
import { DASHBOARD_HTML } from './dashboard.js';
import type { IntakeRecorder } from './intake-recorder.js';
import type { TernMetrics } from './metrics.js';

export interface AdminServerOptions {
  /** `host:port` (port 0 picks a free one). */
  readonly listen: string;
  readonly token: string;
  readonly metricsAuth: boolean;
  readonly queue: QueueBackend;
  /** Reporting-MTA of operator bounces. */
  readonly hostname: string;
  readonly metrics: TernMetrics;
  readonly activity: ActivityLog;
  readonly recorder: IntakeRecorder;
  readonly logger: Logger;
  /** Reads the config file again and applies it (as SIGHUP does); absent when tern has no config file. */
  readonly reload?: () => Promise<unknown>;
  /** Begins a drain (as SIGUSR2 does); false when whoever started tern handles no drain. */
  readonly drain?: () => boolean;
  /** Listeners expected and bound, for `/readyz` (absent: listeners are not judged). */
  readonly listening?: () => Listening;
  /** A domain's TLS-RPT report for a UTC day as the daily run would send it (absent: reports are off). */
  readonly tlsReport?: (domain: string, day: string) => Promise<unknown>;
  /** The traffic shaping in force: back-off actions, egress sources and their warm-up. */
  readonly shaping?: () => unknown;
  /** The MTA's platform events: an operator's hold and suppression emit here. */
  readonly events?: () => PlatformEvents | undefined;
  /** The webhook dispatcher (/api/webhooks). */
  readonly webhooks?: () => WebhookDispatcher | undefined;
}

export interface AdminServer {
  /** `http://host:port` as clients reach it. */
  readonly url: string;
  close(): Promise<void>;
}

/** A request the API refuses, with its status and a message for the person who sent it. */
class HttpError extends Error {
  readonly status: number;
  readonly extra: Record<string, unknown> | undefined;
  constructor(status: number, message: string, extra?: Record<string, unknown>) {
    super(message);
    this.status = status;
    this.extra = extra;
  }
}

const MAX_BODY_BYTES = 64 * 1024;
const DOMAIN = /^[a-z0-9.-]+$|^\[[0-9a-f.:]+\]$/i;
const STATES = new Set<JobStateFilter>(['scheduled', 'deferred', 'active', 'held']);

const bounceBody = z.strictObject({ reason: z.string().max(300).optional() });
const rerouteBody = z.strictObject({
  hop: z.union([nextHopSchema, z.null()]),
  domain: z.string().regex(DOMAIN, 'a recipient domain like example.com').optional(),
});
const destinationRerouteBody = z.strictObject({ hop: z.union([nextHopSchema, z.null()]) });
const suspendBody = z.union([
  z.strictObject({
    for: z.union([z.number(), z.string()]),
  }),
  z.strictObject({ until: z.union([z.number(), z.string()]) }),
]);

export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { host, port } = parseListen(options.listen);
  const expected = Buffer.from(`Bearer ${options.token}`);
  const log = options.logger.child({ component: 'admin' });
  const operations = isQueueOperations(options.queue) ? options.queue : undefined;

  const authorized = (req: IncomingMessage): boolean => {
    const given = Buffer.from(req.headers.authorization ?? '');
    return given.length === expected.length && timingSafeEqual(given, expected);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (error instanceof HttpError)
        return send(res, error.status, { error: error.message, ...error.extra });
      if (error instanceof OperationInputError || error instanceof RangeError) {
        return send(res, 400, { error: (error as Error).message });
      }
      log.error({ err: error, method: req.method, url: req.url }, 'admin request failed');
      send(res, 500, { error: 'internal error; see the tern log' });
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const method = req.method ?? 'GET';
    const path = url.pathname;

    if (method === 'GET' && (path === '/' || path === '/dashboard')) {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'no-store',
        // One self-contained page: nothing loads from anywhere else.
        'content-security-policy':
          "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        'x-content-type-options': 'nosniff',
        'x-frame-options': 'DENY',
      });
      res.end(DASHBOARD_HTML);
      return;
    }
    if (method === 'GET' && path === '/metrics') {
      if (options.metricsAuth && !authorized(req)) throw unauthorized();
      const { contentType, body } = await options.metrics.render();
      res.writeHead(200, { 'content-type': contentType });
      res.end(body);
      return;
    }
    // Probes for load balancers and orchestrators: no token, nothing but a verdict.
    if (method === 'GET' && path === '/healthz') return send(res, 200, { ok: true });
    if (method === 'GET' && path === '/readyz') {
      const { ready, problems } = readiness(options.queue, options.listening?.());
      return send(res, ready ? 200 : 503, { ready, ...(ready ? {} : { problems }) });
    }
    if (!path.startsWith('/api/')) throw new HttpError(404, `no such page: ${path}`);
    if (!authorized(req)) throw unauthorized();

    const parts = path.split('/').slice(2).map(decodeSegment); // after /api/
    const [resource, id, action, extra] = parts;
    if (extra !== undefined) throw notFound(path);

    if (resource === 'health' && id === undefined && method === 'GET') {
      return send(res, 200, { ok: true, queue: options.queue.kind, store: storeHealth(options.queue) });
    }
    if (resource === 'reload' && id === undefined) {
      if (method !== 'POST') throw methodNotAllowed(method, path);
      if (!options.reload) throw new HttpError(409, 'this tern was started without a config file to reload');
      try {
        return send(res, 200, await options.reload());
      } catch (error) {
        // A bad config changes nothing; say why, as `tern check-config` would.
        throw new HttpError(
          400,
          `reload refused, still running the previous config: ${(error as Error).message}`,
        );
      }
    }
    if (resource === 'shaping' && id === undefined && method === 'GET') {
      return send(res, 200, options.shaping?.() ?? { backoffs: [] });
    }
    if (resource === 'drain' && id === undefined) {
      if (method !== 'POST') throw methodNotAllowed(method, path);
      if (!options.drain?.()) {
        throw new HttpError(409, 'this tern was not started by `tern start`: drain it yourself');
      }
      return send(res, 202, {
        draining: true,
        note: 'no new connections; active deliveries finish, queued mail stays for the other nodes; then tern exits 0',
      });
    }
    if (resource === 'activity' && id === undefined && method === 'GET') {
      const limit = intParam(url, 'limit', 50, 200);
      return send(res, 200, {
        deliveries: options.activity.recent(
          limit,
          new Set<DeliveryActivity['kind']>(['delivered', 'deferred']),
        ),
        bounces: options.activity.recent(limit, new Set<DeliveryActivity['kind']>(['bounced'])),
        rejections: options.recorder.rejections(limit),
      });
    }

    if (resource === 'tls-reports' && id !== undefined && action === undefined) {
      if (method !== 'GET') throw methodNotAllowed(method, path);
      if (!options.tlsReport)
        throw new HttpError(409, 'TLS reports are off: set delivery.tlsReports in the config');
      if (!/^[a-z0-9.-]+$/i.test(id)) throw new HttpError(400, `${id} is not a domain like example.com`);
      const day = url.searchParams.get('date') ?? '';
      if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) throw new HttpError(400, 'date: give a UTC day as YYYY-MM-DD');
      return send(res, 200, await options.tlsReport(id.toLowerCase(), day));
    }
    if (resource === 'suppressions') {
      return send(
        res,
        ...(await suppressionRoute(options.queue, req, url, method, path, id, action, options.events?.())),
      );
    }
    if (resource === 'webhooks') {
      const webhooks = options.webhooks?.();
      if (id === undefined) {
        if (method !== 'GET') throw methodNotAllowed(method, path);
        return send(res, 200, { endpoints: webhooks ? await webhooks.status() : [] });
      }
      if (action !== 'test') throw notFound(path);
      if (method !== 'POST') throw methodNotAllowed(method, path);
      try {
        if (!webhooks) throw new UnknownWebhookEndpoint(id);
        return send(res, 200, await webhooks.test(id));
      } catch (error) {
        if (!(error instanceof UnknownWebhookEndpoint)) throw error;
        const known = webhooks?.names ?? [];
        throw new HttpError(
          404,
          `no webhook endpoint ${id}${known.length > 0 ? ` (configured: ${known.join(', ')})` : ': config.webhooks.endpoints is empty'}`,
        );
      }
    }

    const ops = requireOperations(operations, options.queue);
    if (resource === 'queue') {
      if (method !== 'GET') throw methodNotAllowed(method, path);
      // Fresh, not the metrics' cached copy: an operator checks the effect of an action here.
      if (id === 'summary' && action === undefined) return send(res, 200, await ops.summary());
      if (id === 'history' && action === undefined)
        return send(res, 200, { samples: options.activity.history() });
      if (id === undefined) return send(res, 200, await ops.listJobs(filterOf(url)));
      throw notFound(path);
    }
    if (resource === 'messages' && id !== undefined) {
      const queueId = await resolveMessage(ops, id);
      if (action === undefined) {
        if (method === 'GET') return send(res, 200, await detailsOf(ops, queueId));
        if (method === 'DELETE') {
          await queued(ops, queueId);
          if (!(await ops.remove(queueId))) throw gone(queueId);
          return send(res, 200, { queueId, deleted: true });
        }
        throw methodNotAllowed(method, path);
      }
      if (method !== 'POST') throw methodNotAllowed(method, path);
      const body = await readJson(req);
      switch (action) {
        case 'retry': {
          const details = await queued(ops, queueId);
          if (details.held) throw new HttpError(409, `message ${queueId} is held: release it first`);
          return send(res, 200, { queueId, jobs: await ops.retryNow(queueId) });
        }
        case 'hold': {
          const details = await queued(ops, queueId);
          const inFlight = details.jobs.filter((j) => j.state === 'active').length;
          const held = await ops.hold(queueId);
          const events = options.events?.();
          if (held > 0 && events && details.envelope) {
            for (const event of envelopeEvents('held', queueId, details.envelope, 'operator'))
              events.emit(event);
          }
          return send(res, 200, { queueId, held, inFlight });
        }
        case 'release':
          await queued(ops, queueId);
          return send(res, 200, { queueId, released: await ops.release(queueId) });
        case 'bounce': {
          const { reason } = parse(bounceBody, body ?? {});
          const details = await queued(ops, queueId);
          const result = await ops.bounceNow(queueId, {
            reportingMta: options.hostname,
            ...(reason === undefined ? {} : { reason }),
          });
          if (result.ok) {
            const events = options.events?.();
            if (events?.listening && details.envelope) {
              for (const event of operatorBounceEvents(queueId, details, reason)) events.emit(event);
            }
            return send(res, 200, { queueId, ...result });
          }
          if (result.reason === 'active') {
            throw new HttpError(
              409,
              `message ${queueId} is being delivered right now; it is held now: bounce it again once the attempt ends`,
            );
          }
          throw gone(queueId);
        }
        case 'reroute': {
          const { hop, domain } = parse(rerouteBody, body);
          const details = await queued(ops, queueId);
          if (domain !== undefined && !details.jobs.some((j) => j.domain === domain.toLowerCase())) {
            throw new HttpError(404, `message ${queueId} has no job for ${domain}`);
          }
          return send(res, 200, { queueId, jobs: await ops.reroute(queueId, hop as NextHop | null, domain) });
        }
        default:
          throw notFound(path);
      }
    }
    if (resource === 'destinations' && id !== undefined && action !== undefined) {
      if (method !== 'POST') throw methodNotAllowed(method, path);
      if (!DOMAIN.test(id)) throw new HttpError(400, `${id}: not a domain name like example.com`);
      const domain = id.toLowerCase();
      const body = await readJson(req);
      switch (action) {
        case 'suspend': {
          const until = untilOf(parse(suspendBody, body));
          await ops.suspend(domain, until);
          return send(res, 200, { domain, suspendedUntil: until });
        }
        case 'resume':
          return send(res, 200, { domain, due: await ops.resume(domain) });
        case 'reroute': {
          const { hop } = parse(destinationRerouteBody, body);
          await ops.rerouteDestination(domain, hop as NextHop | null);
          return send(res, 200, { domain, nextHop: hop });
        }
        default:
          throw notFound(path);
      }
    }
    throw notFound(path);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (error) => log.error({ err: error }, 'admin server error'));
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shownHost}:${address.port}`;
  log.info({ url }, 'admin API listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Entries one POST may add (an import sends batches). */
export const MAX_SUPPRESSION_BATCH = 1000;
const SUPPRESSION_BODY_BYTES = 1024 * 1024;

/**
 * /api/suppressions: GET lists (scope, search, limit, cursor), POST adds one entry or
 * `{ entries: [...] }`, GET or DELETE /api/suppressions/<scope>/<address> reads or removes one.
 */
async function suppressionRoute(
  queue: QueueBackend,
  req: IncomingMessage,
  url: URL,
  method: string,
  path: string,
  scopeSegment: string | undefined,
  addressSegment: string | undefined,
  events: PlatformEvents | undefined,
): Promise<[number, unknown]> {
  const list = queue.suppressions;
  if (list === undefined)
    throw new HttpError(503, `the ${queue.kind} queue backend keeps no suppression list`);
  if (scopeSegment === undefined) {
    if (method === 'GET') {
      const known = new Set(['scope', 'search', 'limit', 'cursor']);
      for (const key of url.searchParams.keys()) {
        if (!known.has(key))
          throw new HttpError(400, `unknown parameter ${key}: use scope, search, limit or cursor`);
      }
      const scope = url.searchParams.get('scope');
      const search = url.searchParams.get('search');
      const cursor = url.searchParams.get('cursor');
      const page = await list.list({
        ...(scope === null ? {} : { scope: suppressionScope(scope) }),
        ...(search === null ? {} : { search }),
        ...(cursor === null ? {} : { cursor }),
        limit: intParam(url, 'limit', DEFAULT_SUPPRESSION_PAGE, MAX_SUPPRESSION_PAGE),
      });
      return [200, { ...page, total: await list.count() }];
    }
    if (method !== 'POST') throw methodNotAllowed(method, path);
    const body = await readJson(req, SUPPRESSION_BODY_BYTES);
    const batch = typeof body === 'object' && body !== null && 'entries' in body;
    const inputs = batch ? (body as { entries: unknown }).entries : [body];
    if (!Array.isArray(inputs) || inputs.length === 0 || inputs.length > MAX_SUPPRESSION_BATCH) {
      throw new HttpError(400, `entries: a list of 1 to ${MAX_SUPPRESSION_BATCH} entries`);
    }
    const now = Date.now();
    const entries = inputs.map((input, i) =>
      suppressionEntry(input, { source: 'manual', now }, batch ? `entries[${i}]` : ''),
    );
    const added = await list.add(entries);
    for (const entry of entries) events?.emit(suppressionEvent(entry, 'operator', now));
    return [201, { added, ...(batch ? {} : { entry: entries[0] }) }];
  }
  if (addressSegment === undefined) throw notFound(path);
  const scope = suppressionScope(scopeSegment);
  const address = suppressionAddress(addressSegment);
  if (method === 'GET') {
    const entry = await list.find(address, [scope]);
    if (entry === undefined) throw new HttpError(404, `${address} is not suppressed for ${scope}`);
    return [200, entry];
  }
  if (method === 'DELETE') {
    if (!(await list.remove(scope, address)))
      throw new HttpError(404, `${address} is not suppressed for ${scope}`);
    return [200, { scope, address, removed: true }];
  }
  throw methodNotAllowed(method, path);
}

/** How many listeners this process should have, and which are bound. */
export interface Listening {
  readonly expected: number;
  readonly bound: readonly string[];
  /** A drain for a rolling restart has begun: the node is on its way out. */
  readonly draining?: boolean;
}

/** The store's health as the API and the dashboard show it (the backend's, its error clipped). */
export function storeHealth(queue: QueueBackend): QueueHealth {
  const health = queue.health();
  return health.lastError === undefined ? health : { ...health, lastError: health.lastError.slice(0, 500) };
}

/**
 * Ready for traffic: the store takes writes and every listener is bound. A load balancer or an
 * orchestrator takes this node out while it is not (`/readyz` answers 503 with the reasons).
 */
export function readiness(
  queue: QueueBackend,
  listening: Listening | undefined,
): { ready: boolean; problems: string[] } {
  const problems: string[] = [];
  const store = queue.health();
  if (!store.writable) {
    problems.push(
      `the ${queue.kind} queue store cannot write since ${new Date(store.since).toISOString()}${store.lastError ? `: ${store.lastError.slice(0, 200)}` : ''}`,
    );
  }
  if (listening?.draining) problems.push('draining: no new mail; finishing active deliveries before exit');
  if (listening && listening.bound.length < listening.expected) {
    problems.push(`${listening.bound.length} of ${listening.expected} listener(s) bound`);
  }
  return { ready: problems.length === 0, problems };
}

/** `host:port` or `[v6]:port` of a listen setting (`field` names it in the error). */
export function parseListen(listen: string, field = 'config.admin.listen'): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!match) throw new RangeError(`${field}: ${JSON.stringify(listen)} is not host:port`);
  return { host: (match[1] ?? match[2]) as string, port: Number(match[3]) };
}

function requireOperations(ops: QueueOperations | undefined, queue: QueueBackend): QueueOperations {
  if (!ops) {
    throw new HttpError(
      503,
      `the ${queue.kind} queue backend does not offer operator operations in this version`,
    );
  }
  return ops;
}

/** A queue id, or the queue id of the one message with this Message-ID. */
async function resolveMessage(ops: QueueOperations, id: string): Promise<string> {
  if (isQueueId(id)) return id;
  if (!id.includes('@')) {
    throw new HttpError(400, `${id}: neither a queue id (21 letters and digits) nor a Message-ID (with @)`);
  }
  const found = await ops.findByMessageId(id);
  if (found.length === 0) throw new HttpError(404, `no message with Message-ID ${id}`);
  if (found.length > 1) {
    throw new HttpError(409, `${found.length} messages carry Message-ID ${id}: use a queue id`, {
      queueIds: found,
    });
  }
  return found[0] as string;
}

async function detailsOf(ops: QueueOperations, queueId: string): Promise<MessageDetails> {
  const details = await ops.details(queueId);
  if (!details)
    throw new HttpError(
      404,
      `no message ${queueId} (never queued here, or finished longer ago than the timeline is kept)`,
    );
  return details;
}

/** The message's details; 409 when it is no longer in the queue. */
async function queued(ops: QueueOperations, queueId: string): Promise<MessageDetails> {
  const details = await detailsOf(ops, queueId);
  if (details.state === 'finished') throw gone(queueId);
  return details;
}

function gone(queueId: string): HttpError {
  return new HttpError(
    409,
    `message ${queueId} is no longer in the queue (delivered, bounced or deleted); see its timeline`,
  );
}

function filterOf(url: URL): Parameters<QueueOperations['listJobs']>[0] {
  const known = new Set(['state', 'domain', 'sender', 'recipient', 'limit', 'cursor']);
  for (const key of url.searchParams.keys()) {
    if (!known.has(key))
      throw new HttpError(
        400,
        `unknown filter ${key}: use state, domain, sender, recipient, limit or cursor`,
      );
  }
  const get = (name: string): string | undefined => url.searchParams.get(name) ?? undefined;
  const state = get('state');
  if (state !== undefined && !STATES.has(state as JobStateFilter)) {
    throw new HttpError(400, `state: ${state} is not one of scheduled, deferred, active, held`);
  }
  const domain = get('domain');
  const sender = get('sender');
  const recipient = get('recipient');
  const cursor = get('cursor');
  return {
    ...(state === undefined ? {} : { state: state as JobStateFilter }),
    ...(domain === undefined ? {} : { domain }),
    ...(sender === undefined ? {} : { sender }),
    ...(recipient === undefined ? {} : { recipient }),
    ...(cursor === undefined ? {} : { cursor }),
    limit: intParam(url, 'limit', 100, 1000),
  };
}

function intParam(url: URL, name: string, fallback: number, max: number): number {
  const text = url.searchParams.get(name);
  if (text === null) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new HttpError(400, `${name}: ${text} must be a whole number from 1 to ${max}`);
  }
  return value;
}

function untilOf(body: z.infer<typeof suspendBody>): number {
  if ('for' in body) return Date.now() + durationMs(body.for, 'for', { positive: true });
  const until = typeof body.until === 'number' ? body.until : Date.parse(body.until);
  if (!Number.isFinite(until))
    throw new HttpError(400, `until: ${String(body.until)} is not a date (ISO 8601 or ms)`);
  if (until <= Date.now()) throw new HttpError(400, 'until: a suspension must end in the future');
  return until;
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
  throw new HttpError(400, `${where}${issue?.message ?? 'invalid body'}`);
}

async function readJson(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(413, `request body above ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return undefined;
  if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
    throw new HttpError(415, 'send the body as application/json');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'the body is not valid JSON');
  }
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, `bad URL encoding in ${segment}`);
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(text);
}

function unauthorized(): HttpError {
  return new HttpError(401, 'missing or wrong token: send Authorization: Bearer <config.admin token>');
}

function notFound(path: string): HttpError {
  return new HttpError(404, `no such endpoint: ${path}`);
}

function methodNotAllowed(method: string, path: string): HttpError {
  return new HttpError(405, `${method} is not allowed on ${path}`);
}
