// MX resolution per RFC 5321 §5.1 and RFC 7505 (null MX). On node's c-ares resolver by default (tests
// and operators can point it at particular servers, with ports); through validating resolvers whose
// AD bit is trusted when `dns.dnssec` is set, so DANE (RFC 7672 §2.2) knows which answers were secure.
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { SmtpReply } from '@tern/plugin-api';
import { DnsClient, type RecordType } from './dns-client.js';
import { DeliveryReplies } from './reply.js';

/** One mail exchanger of a domain, with the addresses it resolved to (in the order to try them). */
export interface MxHost {
  /** Host name (lower case, no trailing dot), or the domain itself for an implicit MX. */
  readonly name: string;
  readonly preference: number;
  readonly addresses: readonly string[];
  /** True when the domain has no MX and its own A/AAAA records stand in (RFC 5321 §5.1). */
  readonly implicit: boolean;
  /** The address records were DNSSEC-validated (only ever true with `dns.dnssec`). */
  readonly addressesSecure: boolean;
}

/**
 * What a lookup gave: hosts to try in order, or a reply that ends this attempt for every recipient.
 * `secure`: the MX RRset (or, for an implicit MX, the proof that there is none) was DNSSEC-validated.
 */
export type MxResolution =
  | { readonly ok: true; readonly hosts: readonly MxHost[]; readonly secure: boolean }
  | { readonly ok: false; readonly result: 'failed' | 'deferred'; readonly reply: SmtpReply };

/** Which address families to use and which first. IPv4 first by default: IPv6 senders often lack PTR/SPF set-up. */
export type AddressOrder = 'ipv4-first' | 'ipv6-first' | 'ipv4-only' | 'ipv6-only';

export interface DnsOptions {
  /** Name servers as 'ip' or 'ip:port' (default: the system's). */
  readonly servers?: readonly string[];
  /** Per-try timeout in ms (default 5000). */
  readonly timeoutMs?: number;
  /** Tries per query (default 2). */
  readonly tries?: number;
  readonly addressOrder?: AddressOrder;
  /**
   * MX hosts looked up per domain, best preference first (default 10): a domain publishing hundreds
   * of MX records must not make us send hundreds of address queries, and at most `maxAddresses` are tried.
   */
  readonly maxMxHosts?: number;
  /**
   * The servers are DNSSEC-validating resolvers and their AD bit is trusted (default false): every
   * lookup then goes through Tern's own DNS client, and DANE becomes possible. Use a resolver on this
   * machine (loopback): the AD bit of a resolver across a network proves nothing.
   */
  readonly dnssec?: boolean;
  /**
   * Host names whose addresses are kept for their TTL (default 1000; 0: none kept). Node's resolver
   * keeps nothing, so without it every attempt to an MX host or a smarthost by name asks again.
   */
  readonly cacheSize?: number;
}

/** The longest an address answer is kept, whatever its TTL (c-ares' own cache has the same cap). */
export const ADDRESS_CACHE_MAX_TTL_S = 3600;

/** Why a lookup gave nothing: NXDOMAIN and NODATA are answers; everything else may change later. */
export interface LookupFailure {
  readonly ok: false;
  readonly kind: 'nxdomain' | 'nodata' | 'temporary';
  readonly code: string;
  /** NXDOMAIN or NODATA proven by DNSSEC. */
  readonly secure?: boolean;
}

/** A lookup's result; `secure` is true only for an answer a validating resolver vouched for. */
export type Lookup<T> = { readonly ok: true; readonly value: T; readonly secure: boolean } | LookupFailure;

/** An address lookup, with the smallest TTL of its records (seconds) when the source knows it. */
type TimedLookup = Lookup<string[]> & { readonly ttl?: number };

interface MxRecord {
  readonly exchange: string;
  readonly priority: number;
}

/** Where records come from: node's resolver (never secure) or a validating one. */
interface RecordSource {
  mx(name: string): Promise<Lookup<MxRecord[]>>;
  addresses(name: string, family: 4 | 6): Promise<TimedLookup>;
  /** TXT records, each one's strings joined. */
  txt(name: string): Promise<Lookup<string[]>>;
}

/** Resolves destinations: MX lists for domains and addresses for host names. */
export class MxResolver {
  readonly #source: RecordSource;
  readonly #order: AddressOrder;
  readonly #maxMxHosts: number;
  readonly #random: () => number;
  readonly #addresses: AddressCache;
  /** The validating client when `dns.dnssec` is set (DANE's TLSA lookups use it too). */
  readonly validating: DnsClient | undefined;

  constructor(options: DnsOptions = {}, random: () => number = Math.random) {
    const resolver = new Resolver({ timeout: options.timeoutMs ?? 5000, tries: options.tries ?? 2 });
    if (options.servers && options.servers.length > 0) resolver.setServers([...options.servers]);
    if (options.dnssec === true) {
      this.validating = new DnsClient({
        // Without configured servers, the system's (which the operator must make a local validator).
        servers: options.servers && options.servers.length > 0 ? options.servers : resolver.getServers(),
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
        ...(options.tries !== undefined ? { tries: options.tries } : {}),
      });
      this.#source = validatingSource(this.validating);
    } else {
      this.validating = undefined;
      this.#source = caresSource(resolver);
    }
    this.#order = options.addressOrder ?? 'ipv4-first';
    this.#maxMxHosts = options.maxMxHosts ?? 10;
    this.#random = random;
    this.#addresses = new AddressCache(this.#source, options.cacheSize ?? 1000);
  }

  /** TXT records of `name` (each record's strings joined), e.g. `_mta-sts.<domain>`. */
  resolveTxt(name: string): Promise<Lookup<string[]>> {
    return this.#source.txt(name.toLowerCase().replace(/\.$/, ''));
  }

  /**
   * The MX host names of `domain`, most preferred first (no address lookups): for grouping domains
   * by provider. Undefined when the lookup failed or there is no MX.
   */
  async mxNames(domain: string): Promise<string[] | undefined> {
    const mx = await this.#source.mx(domain.toLowerCase().replace(/\.$/, ''));
    if (!mx.ok) return undefined;
    return [...mx.value]
      .sort((a, b) => a.priority - b.priority)
      .map((r) => r.exchange.toLowerCase().replace(/\.$/, ''))
      .filter((name) => name !== '');
  }

  /** The mail exchangers of `domain` in the order to try them. */
  async resolveMx(domain: string): Promise<MxResolution> {
    const name = domain.toLowerCase().replace(/\.$/, '');
    const mx = await this.#source.mx(name);
    if (!mx.ok) {
      if (mx.kind === 'temporary') return deferred(DeliveryReplies.dnsTemporary(name, mx.code));
      if (mx.kind === 'nxdomain') return failed(DeliveryReplies.noSuchDomain(name));
      // NODATA: no MX, so the domain itself is the implicit MX (RFC 5321 §5.1).
      const addresses = await this.resolveAddresses(name);
      if (!addresses.ok) {
        if (addresses.kind === 'temporary')
          return deferred(DeliveryReplies.dnsTemporary(name, addresses.code));
        return failed(
          addresses.kind === 'nxdomain'
            ? DeliveryReplies.noSuchDomain(name)
            : DeliveryReplies.noMailHost(name),
        );
      }
      const host = {
        name,
        preference: 0,
        addresses: addresses.value,
        implicit: true,
        addressesSecure: addresses.secure,
      };
      return { ok: true, hosts: [host], secure: mx.secure === true };
    }

    const records = mx.value.map((r) => ({
      exchange: r.exchange.toLowerCase().replace(/\.$/, ''),
      priority: r.priority,
    }));
    const real = records.filter((r) => r.exchange !== '');
    // RFC 7505: a null MX means no mail at all. Mixed with real MX records it is a misconfiguration; the real ones win.
    if (real.length === 0) return failed(DeliveryReplies.nullMx(name));

    const ordered = this.#sortByPreference(real).slice(0, this.#maxMxHosts);
    const looked = await Promise.all(
      ordered.map(async (r) => ({ record: r, addresses: await this.resolveAddresses(r.exchange) })),
    );
    const hosts: MxHost[] = [];
    let temporary: { name: string; code: string } | undefined;
    for (const { record, addresses } of looked) {
      if (addresses.ok) {
        hosts.push({
          name: record.exchange,
          preference: record.priority,
          addresses: addresses.value,
          implicit: false,
          addressesSecure: addresses.secure,
        });
      } else if (addresses.kind === 'temporary') {
        temporary ??= { name: record.exchange, code: addresses.code };
      }
    }
    if (hosts.length > 0) return { ok: true, hosts, secure: mx.secure };
    if (temporary) return deferred(DeliveryReplies.dnsTemporary(temporary.name, temporary.code));
    return failed(DeliveryReplies.mxHostsWithoutAddress(name));
  }

  /**
   * A/AAAA addresses of a host, the families interleaved from the preferred one (as RFC 8305 §4 does),
   * so a host with several addresses of a broken family still gets one of the other within
   * `maxAddresses`. An IP literal is its own address. `secure` only when every family asked was.
   */
  async resolveAddresses(host: string): Promise<Lookup<string[]>> {
    const bare = host.replace(/^\[|\]$/g, '');
    if (isIP(bare) !== 0) return { ok: true, value: [bare], secure: false };
    const want4 = this.#order !== 'ipv6-only';
    const want6 = this.#order !== 'ipv4-only';
    const [v4, v6] = await Promise.all([
      want4 ? this.#addresses.lookup(host, 4) : undefined,
      want6 ? this.#addresses.lookup(host, 6) : undefined,
    ]);
    const four = v4?.ok ? v4.value : [];
    const six = v6?.ok ? v6.value : [];
    const sixFirst = this.#order === 'ipv6-first' || this.#order === 'ipv6-only';
    const value = sixFirst ? interleave(six, four) : interleave(four, six);
    // A family that answered NXDOMAIN/NODATA counts by the security of that proof.
    const secure = [v4, v6].every((r) => r === undefined || r.secure === true);
    if (value.length > 0) return { ok: true, value, secure };
    const failures = [v4, v6].filter((r): r is LookupFailure => r !== undefined && !r.ok);
    const temporary = failures.find((f) => f.kind === 'temporary');
    if (temporary) return temporary;
    const nxdomain = failures.find((f) => f.kind === 'nxdomain');
    if (nxdomain && failures.every((f) => f.kind === 'nxdomain')) return { ...nxdomain, secure };
    return { ok: false, kind: 'nodata', code: 'ENODATA', secure };
  }

  /** Ascending preference; equal preferences in random order to spread load (RFC 5321 §5.1). */
  #sortByPreference<T extends { priority: number }>(records: T[]): T[] {
    const shuffled = [...records];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(this.#random() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j] as T, shuffled[i] as T];
    }
    // Array.prototype.sort is stable: the shuffle decides the order among equals.
    return shuffled.sort((a, b) => a.priority - b.priority);
  }
}

/**
 * Address answers by family and name, kept for their TTL (at most ADDRESS_CACHE_MAX_TTL_S) and at
 * most `size` names, the oldest dropped first; a lookup in flight is shared by everyone who asks
 * meanwhile. Only answers with addresses are kept: a failure or an empty answer is asked again.
 */
class AddressCache {
  readonly #source: RecordSource;
  readonly #size: number;
  readonly #entries = new Map<string, { readonly lookup: Promise<TimedLookup>; until: number }>();

  constructor(source: RecordSource, size: number) {
    this.#source = source;
    this.#size = size;
  }

  lookup(name: string, family: 4 | 6): Promise<TimedLookup> {
    if (this.#size === 0) return this.#source.addresses(name, family);
    const key = `${family}${name.toLowerCase()}`;
    const now = performance.now();
    const kept = this.#entries.get(key);
    if (kept !== undefined && kept.until > now) return kept.lookup;
    this.#entries.delete(key);
    if (this.#entries.size >= this.#size) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    const lookup = this.#source.addresses(name, family);
    // In flight: shared until it answers, then kept for its TTL or dropped.
    const entry = { lookup, until: Number.POSITIVE_INFINITY };
    this.#entries.set(key, entry);
    const settle = (found: TimedLookup | undefined): void => {
      if (this.#entries.get(key) !== entry) return;
      const ttl = found?.ok === true ? Math.min(found.ttl ?? 0, ADDRESS_CACHE_MAX_TTL_S) : 0;
      if (ttl > 0) entry.until = performance.now() + ttl * 1000;
      else this.#entries.delete(key);
    };
    lookup.then(settle, () => settle(undefined));
    return lookup;
  }
}

function failed(reply: SmtpReply): MxResolution {
  return { ok: false, result: 'failed', reply };
}

function deferred(reply: SmtpReply): MxResolution {
  return { ok: false, result: 'deferred', reply };
}

function interleave(first: readonly string[], second: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < Math.max(first.length, second.length); i++) {
    if (i < first.length) out.push(first[i] as string);
    if (i < second.length) out.push(second[i] as string);
  }
  return out;
}

function caresSource(resolver: Resolver): RecordSource {
  return {
    mx: (name) => caresQuery(() => resolver.resolveMx(name)),
    addresses: async (name, family) => {
      const options = { ttl: true } as const;
      const found = await caresQuery(() =>
        family === 4 ? resolver.resolve4(name, options) : resolver.resolve6(name, options),
      );
      if (!found.ok) return found;
      return { ...found, value: found.value.map((r) => r.address), ttl: smallestTtl(found.value) };
    },
    txt: async (name) => {
      const found = await caresQuery(() => resolver.resolveTxt(name));
      return found.ok ? { ...found, value: found.value.map((chunks) => chunks.join('')) } : found;
    },
  };
}

async function caresQuery<T>(run: () => Promise<T>): Promise<Lookup<T>> {
  try {
    return { ok: true, value: await run(), secure: false };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    if (code === 'ENOTFOUND') return { ok: false, kind: 'nxdomain', code };
    if (code === 'ENODATA') return { ok: false, kind: 'nodata', code };
    // SERVFAIL, timeouts, refused, unreachable servers: the answer may differ later.
    return { ok: false, kind: 'temporary', code };
  }
}

/** The smallest TTL of a record set (0 for none: nothing kept). */
function smallestTtl(records: readonly { readonly ttl?: number }[]): number {
  let ttl = Number.POSITIVE_INFINITY;
  for (const record of records) ttl = Math.min(ttl, record.ttl ?? 0);
  return ttl === Number.POSITIVE_INFINITY ? 0 : ttl;
}

function validatingSource(client: DnsClient): RecordSource {
  async function ask<T>(
    name: string,
    type: RecordType,
    map: (data: unknown) => T,
  ): Promise<Lookup<T[]> & { readonly ttl?: number }> {
    const answer = await client.query(name, type);
    switch (answer.kind) {
      case 'records':
        return {
          ok: true,
          value: answer.records.map((r) => map(r.data)),
          secure: answer.secure,
          ttl: smallestTtl(answer.records),
        };
      case 'nxdomain':
        return { ok: false, kind: 'nxdomain', code: 'ENOTFOUND', secure: answer.secure };
      case 'nodata':
        return { ok: false, kind: 'nodata', code: 'ENODATA', secure: answer.secure };
      default:
        return { ok: false, kind: 'temporary', code: answer.code };
    }
  }
  return {
    mx: (name) =>
      ask(name, 'MX', (data) => {
        const mx = data as { exchange: string; preference: number };
        return { exchange: mx.exchange, priority: mx.preference };
      }),
    addresses: (name, family) => ask(name, family === 4 ? 'A' : 'AAAA', String),
    txt: (name) =>
      ask(name, 'TXT', (data) =>
        (Array.isArray(data) ? data : [data])
          .map((chunk) => Buffer.from(chunk as Buffer).toString('utf8'))
          .join(''),
      ),
  };
}
