// MX resolution per RFC 5321 §5.1 and RFC 7505 (null MX), on node's c-ares resolver so tests and
// operators can point it at particular servers (with ports).
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { SmtpReply } from '@tern/plugin-api';
import { DeliveryReplies } from './reply.js';

/** One mail exchanger of a domain, with the addresses it resolved to (in the order to try them). */
export interface MxHost {
  /** Host name (lower case, no trailing dot), or the domain itself for an implicit MX. */
  readonly name: string;
  readonly preference: number;
  readonly addresses: readonly string[];
  /** True when the domain has no MX and its own A/AAAA records stand in (RFC 5321 §5.1). */
  readonly implicit: boolean;
}

/** What a lookup gave: hosts to try in order, or a reply that ends this attempt for every recipient. */
export type MxResolution =
  | { readonly ok: true; readonly hosts: readonly MxHost[] }
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
}

/** Why a lookup gave nothing: NXDOMAIN and NODATA are answers; everything else may change later. */
export interface LookupFailure {
  readonly ok: false;
  readonly kind: 'nxdomain' | 'nodata' | 'temporary';
  readonly code: string;
}

type Lookup<T> = { readonly ok: true; readonly value: T } | LookupFailure;

/** Resolves destinations: MX lists for domains and addresses for host names. */
export class MxResolver {
  readonly #resolver: Resolver;
  readonly #order: AddressOrder;
  readonly #maxMxHosts: number;
  readonly #random: () => number;

  constructor(options: DnsOptions = {}, random: () => number = Math.random) {
    this.#resolver = new Resolver({ timeout: options.timeoutMs ?? 5000, tries: options.tries ?? 2 });
    if (options.servers && options.servers.length > 0) this.#resolver.setServers([...options.servers]);
    this.#order = options.addressOrder ?? 'ipv4-first';
    this.#maxMxHosts = options.maxMxHosts ?? 10;
    this.#random = random;
  }

  /** The mail exchangers of `domain` in the order to try them. */
  async resolveMx(domain: string): Promise<MxResolution> {
    const name = domain.toLowerCase().replace(/\.$/, '');
    const mx = await this.#query(() => this.#resolver.resolveMx(name));
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
      return { ok: true, hosts: [{ name, preference: 0, addresses: addresses.value, implicit: true }] };
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
        });
      } else if (addresses.kind === 'temporary') {
        temporary ??= { name: record.exchange, code: addresses.code };
      }
    }
    if (hosts.length > 0) return { ok: true, hosts };
    if (temporary) return deferred(DeliveryReplies.dnsTemporary(temporary.name, temporary.code));
    return failed(DeliveryReplies.mxHostsWithoutAddress(name));
  }

  /** A/AAAA addresses of a host in the configured family order; an IP literal is its own address. */
  async resolveAddresses(host: string): Promise<Lookup<string[]>> {
    const bare = host.replace(/^\[|\]$/g, '');
    if (isIP(bare) !== 0) return { ok: true, value: [bare] };
    const want4 = this.#order !== 'ipv6-only';
    const want6 = this.#order !== 'ipv4-only';
    const [v4, v6] = await Promise.all([
      want4 ? this.#query(() => this.#resolver.resolve4(host)) : undefined,
      want6 ? this.#query(() => this.#resolver.resolve6(host)) : undefined,
    ]);
    const four = v4?.ok ? v4.value : [];
    const six = v6?.ok ? v6.value : [];
    const value =
      this.#order === 'ipv6-first' || this.#order === 'ipv6-only' ? [...six, ...four] : [...four, ...six];
    if (value.length > 0) return { ok: true, value };
    const failures = [v4, v6].filter((r): r is LookupFailure => r !== undefined && !r.ok);
    const temporary = failures.find((f) => f.kind === 'temporary');
    if (temporary) return temporary;
    const nxdomain = failures.find((f) => f.kind === 'nxdomain');
    if (nxdomain && failures.every((f) => f.kind === 'nxdomain')) return nxdomain;
    return { ok: false, kind: 'nodata', code: 'ENODATA' };
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

  async #query<T>(run: () => Promise<T>): Promise<Lookup<T>> {
    try {
      return { ok: true, value: await run() };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
      if (code === 'ENOTFOUND') return { ok: false, kind: 'nxdomain', code };
      if (code === 'ENODATA') return { ok: false, kind: 'nodata', code };
      // SERVFAIL, timeouts, refused, unreachable servers: the answer may differ later.
      return { ok: false, kind: 'temporary', code };
    }
  }
}

function failed(reply: SmtpReply): MxResolution {
  return { ok: false, result: 'failed', reply };
}

function deferred(reply: SmtpReply): MxResolution {
  return { ok: false, result: 'deferred', reply };
}
