// MTA-STS (RFC 8461): a recipient domain's `_mta-sts` TXT record says a policy exists and its id;
// the policy comes over HTTPS from mta-sts.<domain>, validated with the web PKI, bounded in time and
// size, never redirected. Policies are cached in a PolicyStore for max_age and fetched again when the
// id changes; when a fetch fails, the cached policy stays in force (RFC 8461 §3.3, §5.1).
import { request } from 'node:https';
import { checkServerIdentity } from 'node:tls';
import type { Logger } from '@tern/plugin-api';
import type { MxResolver } from './mx.js';
import type { JsonValue, PolicyStore } from './policy-store.js';
import { pkixFailure, type TlsFailureType } from './tls-check.js';

export type MtaStsMode = 'enforce' | 'testing' | 'none';

/** A parsed policy (RFC 8461 §3.2). */
export interface MtaStsPolicy {
  readonly mode: MtaStsMode;
  /** MX patterns: host names, or `*.` and a domain for one left-most label. */
  readonly mx: readonly string[];
  /** Seconds the policy may be cached. */
  readonly maxAge: number;
  /** The policy's lines as fetched (TLS-RPT quotes them as the policy-string). */
  readonly lines: readonly string[];
}

/** Why there is no fresh policy: the TLS-RPT result type and words for people. */
export interface MtaStsProblem {
  readonly type: Extract<
    TlsFailureType,
    'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid'
  >;
  readonly detail: string;
}

/**
 * The policy in force for a domain, if any. `problem` is set when a fetch failed (the cached policy,
 * if there is one, is still in force: RFC 8461 §5.1).
 */
export interface MtaStsLookup {
  readonly policy: MtaStsPolicy | undefined;
  readonly id?: string;
  readonly source?: 'cache' | 'fetched';
  readonly problem?: MtaStsProblem;
}

export interface MtaStsOptions {
  /** HTTPS port of mta-sts.<domain> (default 443; tests use others). */
  readonly port?: number;
  /** The whole fetch, connect to last byte (default 20 000 ms; RFC 8461 §3.3 suggests under a minute). */
  readonly timeoutMs?: number;
  /** Largest policy body accepted (default 64 KiB, as RFC 8461 §3.3 recommends). */
  readonly maxBytes?: number;
}

/** The cache entry kept per domain in the PolicyStore. */
interface CachedPolicy {
  readonly id: string;
  readonly fetchedAt: number;
  readonly policy: MtaStsPolicy;
}

// RFC 8461 §3.2: max_age at most 31557600 seconds (about a year).
const MAX_AGE_LIMIT = 31_557_600;
const ID = /^[A-Za-z0-9]{1,32}$/;
const FIELD = /^([A-Za-z][A-Za-z0-9_.-]{0,31}):[ \t]*(.*?)[ \t]*$/;
const MX_PATTERN = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** The id of the one `v=STSv1` TXT record, or why there is none usable (RFC 8461 §3.1). */
export function parseMtaStsRecord(
  records: readonly string[],
): { readonly ok: true; readonly id: string } | { readonly ok: false; readonly reason: string } {
  const sts = records.filter((r) => /^v=STSv1;/.test(r));
  if (sts.length !== 1) return { ok: false, reason: `${sts.length} TXT records start with v=STSv1;` };
  const fields = new Map<string, string>();
  for (const part of (sts[0] as string).split(';')) {
    const field = part.trim();
    if (field === '') continue;
    const eq = field.indexOf('=');
    if (eq <= 0) return { ok: false, reason: `malformed field ${JSON.stringify(field)}` };
    const key = field.slice(0, eq).trim();
    if (!fields.has(key)) fields.set(key, field.slice(eq + 1).trim());
  }
  const id = fields.get('id');
  if (id === undefined || !ID.test(id))
    return { ok: false, reason: 'no valid id (1 to 32 letters and digits)' };
  return { ok: true, id };
}

/** Parses a policy body (RFC 8461 §3.2); unknown fields are ignored. */
export function parseMtaStsPolicy(
  text: string,
): { readonly ok: true; readonly policy: MtaStsPolicy } | { readonly ok: false; readonly reason: string } {
  const lines = text.split(/\r?\n/).filter((line) => line.trim() !== '');
  const fields = new Map<string, string>();
  const mx: string[] = [];
  for (const line of lines) {
    const match = FIELD.exec(line);
    if (!match) return { ok: false, reason: `malformed line ${JSON.stringify(line.slice(0, 80))}` };
    const key = (match[1] as string).toLowerCase();
    const value = match[2] as string;
    if (key === 'mx') mx.push(value.toLowerCase().replace(/\.$/, ''));
    else if (!fields.has(key)) fields.set(key, value);
  }
  if (fields.get('version') !== 'STSv1') return { ok: false, reason: 'version is not STSv1' };
  const mode = fields.get('mode');
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') {
    return { ok: false, reason: `mode ${JSON.stringify(mode ?? '')} is not enforce, testing or none` };
  }
  const maxAgeText = fields.get('max_age') ?? '';
  const maxAge = Number(maxAgeText);
  if (!/^\d{1,10}$/.test(maxAgeText) || maxAge > MAX_AGE_LIMIT) {
    return {
      ok: false,
      reason: `max_age ${JSON.stringify(maxAgeText)} is not a number of seconds up to ${MAX_AGE_LIMIT}`,
    };
  }
  const bad = mx.find((pattern) => !MX_PATTERN.test(pattern));
  if (bad !== undefined) return { ok: false, reason: `mx ${JSON.stringify(bad)} is not a host name pattern` };
  if (mode !== 'none' && mx.length === 0) return { ok: false, reason: `mode ${mode} without any mx` };
  return { ok: true, policy: { mode, mx, maxAge, lines } };
}

/** RFC 8461 §4.1: an MX host matches a pattern exactly, or `*.domain` by exactly one more left-most label. */
export function mxMatchesPolicy(host: string, patterns: readonly string[]): boolean {
  const name = host.toLowerCase().replace(/\.$/, '');
  return patterns.some((pattern) => {
    if (!pattern.startsWith('*.')) return name === pattern;
    const suffix = pattern.slice(1);
    return (
      name.endsWith(suffix) && !name.slice(0, -suffix.length).includes('.') && name.length > suffix.length
    );
  });
}

/** Finds, fetches and caches MTA-STS policies. */
export class MtaSts {
  readonly #resolver: MxResolver;
  readonly #store: PolicyStore;
  readonly #ca: string | Buffer | (string | Buffer)[] | undefined;
  readonly #port: number;
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  readonly #log: Logger;
  /** Fetches under way, one per domain: concurrent deliveries to a domain share one. */
  readonly #inFlight = new Map<string, Promise<CachedPolicy | MtaStsProblem>>();
  readonly #now: () => number;

  constructor(
    resolver: MxResolver,
    store: PolicyStore,
    options: MtaStsOptions & {
      readonly ca?: string | Buffer | readonly (string | Buffer)[];
      readonly logger: Logger;
      readonly now?: () => number;
    },
  ) {
    this.#resolver = resolver;
    this.#store = store;
    this.#ca = options.ca as string | Buffer | (string | Buffer)[] | undefined;
    this.#port = options.port ?? 443;
    this.#timeoutMs = options.timeoutMs ?? 20_000;
    this.#maxBytes = options.maxBytes ?? 64 * 1024;
    this.#log = options.logger;
    this.#now = options.now ?? Date.now;
  }

  /** The policy in force for `domain` now (RFC 8461 §5.1's steps), with any fetch problem. */
  async lookup(domain: string): Promise<MtaStsLookup> {
    const name = domain.toLowerCase().replace(/\.$/, '');
    const [txt, cached] = await Promise.all([
      this.#resolver.resolveTxt(`_mta-sts.${name}`),
      this.#cached(name),
    ]);
    const record = txt.ok ? parseMtaStsRecord(txt.value) : undefined;
    const fromCache = (problem?: MtaStsProblem): MtaStsLookup =>
      cached
        ? { policy: cached.policy, id: cached.id, source: 'cache', ...(problem ? { problem } : {}) }
        : { policy: undefined, ...(problem ? { problem } : {}) };
    // No usable TXT record (absent, malformed, or the lookup failed): a cached policy stays in force.
    if (!record?.ok) return fromCache();
    // Same id: the cached policy is current; past half its max_age it is fetched again to extend it.
    if (cached && cached.id === record.id) {
      const age = this.#now() - cached.fetchedAt;
      if (age < (cached.policy.maxAge * 1000) / 2) return fromCache();
    }
    const fetched = await this.#fetchShared(name, record.id);
    if ('type' in fetched) {
      this.#log.warn(
        { domain: name, result: fetched.type, reason: fetched.detail },
        'MTA-STS policy fetch failed',
      );
      return fromCache(fetched);
    }
    return { policy: fetched.policy, id: fetched.id, source: 'fetched' };
  }

  async #cached(domain: string): Promise<CachedPolicy | undefined> {
    try {
      const value = (await this.#store.get(storeKey(domain))) as unknown as CachedPolicy | undefined;
      return value?.policy && typeof value.id === 'string' ? value : undefined;
    } catch (error) {
      this.#log.warn({ domain, err: error }, 'MTA-STS policy cache unreadable; going without it');
      return undefined;
    }
  }

  #fetchShared(domain: string, id: string): Promise<CachedPolicy | MtaStsProblem> {
    const running = this.#inFlight.get(domain);
    if (running) return running;
    const fetching = this.#fetchAndStore(domain, id).finally(() => this.#inFlight.delete(domain));
    this.#inFlight.set(domain, fetching);
    return fetching;
  }

  async #fetchAndStore(domain: string, id: string): Promise<CachedPolicy | MtaStsProblem> {
    const fetched = await this.#fetch(domain);
    if ('type' in fetched) return fetched;
    const parsed = parseMtaStsPolicy(fetched.body);
    if (!parsed.ok) {
      return { type: 'sts-policy-invalid', detail: `policy of ${domain} is invalid: ${parsed.reason}` };
    }
    const entry: CachedPolicy = { id, fetchedAt: this.#now(), policy: parsed.policy };
    try {
      await this.#store.set(storeKey(domain), entry as unknown as JsonValue, parsed.policy.maxAge * 1000);
    } catch (error) {
      this.#log.warn(
        { domain, err: error },
        'MTA-STS policy could not be cached; using it for this delivery',
      );
    }
    return entry;
  }

  /** GET https://mta-sts.<domain>/.well-known/mta-sts.txt: 200, text/plain, at most maxBytes, in time. */
  async #fetch(domain: string): Promise<{ body: string } | MtaStsProblem> {
    const host = `mta-sts.${domain}`;
    const addresses = await this.#resolver.resolveAddresses(host);
    if (!addresses.ok) {
      return { type: 'sts-policy-fetch-error', detail: `${host} does not resolve (${addresses.code})` };
    }
    let problem: MtaStsProblem = { type: 'sts-policy-fetch-error', detail: `${host} has no address` };
    // The first two addresses (one of each family, interleaved): enough to get past one broken path.
    for (const address of addresses.value.slice(0, 2)) {
      const result = await this.#get(host, address);
      if (!('type' in result)) return result;
      problem = result;
      // Only a connection that never came up is worth another address; an answer is final.
      if (!result.retry) break;
    }
    return { type: problem.type, detail: problem.detail };
  }

  #get(host: string, address: string): Promise<{ body: string } | (MtaStsProblem & { retry?: boolean })> {
    const url = `https://${host}${this.#port === 443 ? '' : `:${this.#port}`}/.well-known/mta-sts.txt`;
    return new Promise((resolve) => {
      let settled = false;
      const finish = (result: { body: string } | (MtaStsProblem & { retry?: boolean })): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        resolve(result);
      };
      const fail = (
        detail: string,
        type: MtaStsProblem['type'] = 'sts-policy-fetch-error',
        retry = false,
      ): void => finish({ type, detail: `${url}: ${detail}`, retry });
      const req = request({
        host: address,
        port: this.#port,
        path: '/.well-known/mta-sts.txt',
        method: 'GET',
        servername: host,
        headers: { host: this.#port === 443 ? host : `${host}:${this.#port}` },
        // No connection pooling, no HTTP cache (RFC 8461 §3.3), no redirects (node follows none).
        agent: false,
        ...(this.#ca !== undefined ? { ca: this.#ca } : {}),
        rejectUnauthorized: true,
        // The policy host's name, not the address connected to.
        checkServerIdentity: (_name, cert) => checkServerIdentity(host, cert),
      });
      const timer = setTimeout(
        () => fail(`no complete answer within ${this.#timeoutMs} ms`),
        this.#timeoutMs,
      );
      req.once('error', (error: NodeJS.ErrnoException) => {
        const code = error.code ?? '';
        const pkix = pkixFailure(code);
        if (pkix) fail(`certificate not accepted: ${pkix[1]}`, 'sts-webpki-invalid');
        else if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') fail(error.message, 'sts-webpki-invalid');
        else fail(error.message, 'sts-policy-fetch-error', error.syscall !== undefined);
      });
      req.once('response', (response) => {
        const status = response.statusCode ?? 0;
        if (status !== 200) {
          // RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed".
          const where = response.headers.location
            ? ` (to ${response.headers.location}; redirects are not followed)`
            : '';
          fail(`answered HTTP ${status}${where}`);
          return;
        }
        const type = (response.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
        if (type !== 'text/plain') {
          fail(`Content-Type is ${JSON.stringify(type)}, not text/plain`, 'sts-policy-invalid');
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.#maxBytes) {
            fail(`policy larger than ${this.#maxBytes} bytes`);
            return;
          }
          chunks.push(chunk);
        });
        response.once('end', () => finish({ body: Buffer.concat(chunks).toString('utf8') }));
        response.once('error', (error) => fail(error.message));
      });
      req.end();
    });
  }
}

function storeKey(domain: string): string {
  return `mta-sts:${domain}`;
}
