// Egress sources and pools: the local addresses (each with its own EHLO name) outbound
// connections are made from, grouped into weighted pools; a message picks its pool by recipient
// domain (its route) or sender domain, as KumoMTA's egress pools do.
import { isIP } from 'node:net';
import { domainOf } from '@tern/plugin-api';
import type { WarmupSchedule } from './warmup.js';

export interface EgressSource {
  /** The local IPv4 or IPv6 address to connect from (default: the system's choice). */
  readonly address?: string;
  /** Our name in EHLO from this source (default: delivery's host name). Should match the address's PTR. */
  readonly ehlo?: string;
  /** A new address: daily caps per destination rising over its first days; over the cap spills to the pool's other sources. */
  readonly warmup?: WarmupSchedule;
}

export interface EgressPool {
  /** Source name → weight (a whole number; 2 gets twice the connections of 1). */
  readonly sources: Readonly<Record<string, number>>;
}

/** Which pool a message uses: the first selector it matches, else `defaultPool`. */
export interface EgressSelector {
  readonly pool: string;
  /** Recipient domains (a leading dot matches every domain below). */
  readonly domains?: readonly string[];
  /** Sender (return path) domains (a leading dot matches every domain below). */
  readonly senderDomains?: readonly string[];
  /** Values of the message's tag header (`tagHeader`, default `X-Tern-Tag`), as a sending application sets it. */
  readonly tags?: readonly string[];
}

export interface EgressOptions {
  readonly sources: Readonly<Record<string, EgressSource>>;
  readonly pools: Readonly<Record<string, EgressPool>>;
  readonly select?: readonly EgressSelector[];
  /** The pool of a message no selector matched (default: the pool named `default`, else the first). */
  readonly defaultPool?: string;
  /** The header whose value `select[].tags` match (default `X-Tern-Tag`). */
  readonly tagHeader?: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const HOSTNAME = /^[A-Za-z0-9.-]+$/;

function matchesDomain(domain: string, list: readonly string[] | undefined): boolean {
  if (list === undefined) return true;
  const d = domain.toLowerCase();
  return list.some((entry) => {
    const e = entry.toLowerCase();
    return e.startsWith('.') ? d.endsWith(e) : d === e;
  });
}

/** The egress configuration, checked once: every name it uses exists, every weight and address is sane. */
export class Egress {
  readonly #options: EgressOptions;
  readonly #defaultPool: string;
  readonly #random: () => number;

  constructor(options: EgressOptions, random: () => number = Math.random, where = 'delivery.egress') {
    this.#options = options;
    this.#random = random;
    const sources = Object.entries(options.sources ?? {});
    if (sources.length === 0) throw new TypeError(`${where}.sources: name at least one source`);
    for (const [name, source] of sources) {
      if (!NAME.test(name))
        throw new TypeError(
          `${where}.sources: ${JSON.stringify(name)} is not a name (letters, digits, . _ -)`,
        );
      if (source.address !== undefined && isIP(source.address) === 0) {
        throw new TypeError(
          `${where}.sources.${name}.address: expected an IPv4 or IPv6 address, got ${JSON.stringify(source.address)}`,
        );
      }
      if (source.ehlo !== undefined && !HOSTNAME.test(source.ehlo)) {
        throw new TypeError(
          `${where}.sources.${name}.ehlo: expected a host name, got ${JSON.stringify(source.ehlo)}`,
        );
      }
    }
    const pools = Object.entries(options.pools ?? {});
    if (pools.length === 0) throw new TypeError(`${where}.pools: name at least one pool of sources`);
    for (const [name, pool] of pools) {
      const members = Object.entries(pool.sources ?? {});
      if (members.length === 0)
        throw new TypeError(`${where}.pools.${name}.sources: give at least one source with its weight`);
      for (const [source, weight] of members) {
        if (options.sources[source] === undefined) {
          throw new TypeError(
            `${where}.pools.${name}.sources: no source named ${JSON.stringify(source)} in ${where}.sources`,
          );
        }
        if (!Number.isSafeInteger(weight) || weight < 1) {
          throw new TypeError(
            `${where}.pools.${name}.sources.${source}: expected a weight (a whole number of at least 1), got ${weight}`,
          );
        }
      }
    }
    this.#defaultPool =
      options.defaultPool ?? (options.pools.default ? 'default' : (pools[0] as [string, EgressPool])[0]);
    this.checkPool(this.#defaultPool, `${where}.defaultPool`);
    for (const [i, selector] of (options.select ?? []).entries()) {
      this.checkPool(selector.pool, `${where}.select[${i}].pool`);
    }
  }

  /** Throws naming `where` when `pool` is not configured. */
  checkPool(pool: string, where: string): void {
    if (this.#options.pools[pool] === undefined) {
      throw new TypeError(
        `${where}: no pool named ${JSON.stringify(pool)} in delivery.egress.pools (${Object.keys(this.#options.pools).join(', ')})`,
      );
    }
  }

  /** The header a message's tag is read from, when some selector matches tags (else undefined: not read). */
  get tagHeader(): string | undefined {
    return (this.#options.select ?? []).some((s) => s.tags !== undefined)
      ? (this.#options.tagHeader ?? 'X-Tern-Tag')
      : undefined;
  }

  /** The pool a job uses: by its recipient domain, its sender's domain and its tags (any one matches). */
  poolFor(recipientDomain: string, mailFrom: string, tags: readonly string[] = []): string {
    const sender = domainOf(mailFrom);
    const own = new Set(tags.map((t) => t.toLowerCase()));
    for (const selector of this.#options.select ?? []) {
      if (
        selector.domains === undefined &&
        selector.senderDomains === undefined &&
        selector.tags === undefined
      )
        continue;
      if (selector.tags !== undefined && !selector.tags.some((x) => own.has(x.toLowerCase()))) continue;
      if (matchesDomain(recipientDomain, selector.domains) && matchesDomain(sender, selector.senderDomains)) {
        return selector.pool;
      }
    }
    return this.#defaultPool;
  }

  /** The sources of a pool with their weights. */
  members(pool: string): [string, number][] {
    return Object.entries(this.#options.pools[pool]?.sources ?? {});
  }

  source(name: string): EgressSource {
    return this.#options.sources[name] ?? {};
  }

  /** Every source name, for the dashboard. */
  sourceNames(): string[] {
    return Object.keys(this.#options.sources);
  }

  /** Every source with its settings (warm-up schedules). */
  sources(): Readonly<Record<string, EgressSource>> {
    return this.#options.sources;
  }

  /** A source of `pool` by weight among those `usable` lets through (undefined when none is). */
  pick(pool: string, usable: (source: string) => boolean): string | undefined {
    const candidates = this.members(pool).filter(([name]) => usable(name));
    const total = candidates.reduce((sum, [, weight]) => sum + weight, 0);
    let roll = this.#random() * total;
    for (const [name, weight] of candidates) {
      roll -= weight;
      if (roll < 0) return name;
    }
    return candidates.at(-1)?.[0];
  }
}
