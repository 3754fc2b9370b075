// Provider grouping, like KumoMTA's site names: domains whose MX hosts end in one provider's
// suffixes (every Google-hosted domain's MX ends in google.com) share that provider's limits and
// back-off state, so a thousand small Workspace domains do not each get Gmail's whole budget.

export interface ProviderDefinition {
  /** MX host suffixes (`google.com` matches `aspmx.l.google.com`). */
  readonly mx?: readonly string[];
  /** Domains known to belong to the provider without asking DNS. */
  readonly domains?: readonly string[];
}

/** The large mailbox providers, by the MX host names they publish. */
export const DEFAULT_PROVIDERS: Readonly<Record<string, ProviderDefinition>> = {
  google: { mx: ['google.com', 'googlemail.com'], domains: ['gmail.com', 'googlemail.com'] },
  microsoft: {
    mx: ['outlook.com', 'hotmail.com'],
    domains: ['outlook.com', 'hotmail.com', 'live.com', 'msn.com'],
  },
  yahoo: { mx: ['yahoodns.net'], domains: ['yahoo.com', 'ymail.com', 'aol.com'] },
  apple: { mx: ['icloud.com'], domains: ['icloud.com', 'me.com', 'mac.com'] },
};

const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** How long a domain's provider is remembered (its MX records change rarely). */
const CACHE_MS = 10 * 60_000;
/** Domains remembered at most; the oldest go first past it. */
const CACHE_MAX = 10_000;

function endsIn(host: string, suffix: string): boolean {
  return host === suffix || host.endsWith(`.${suffix}`);
}

export class Providers {
  readonly #table: [string, ProviderDefinition][];
  readonly #byDomain = new Map<string, string>();
  readonly #cache = new Map<string, { provider: string | undefined; until: number }>();
  readonly #lookup: (domain: string) => Promise<string[] | undefined>;

  /** `table` false: no grouping; otherwise entries over the defaults (same name replaces). */
  constructor(
    table: false | Readonly<Record<string, ProviderDefinition>> | undefined,
    lookup: (domain: string) => Promise<string[] | undefined>,
    where = 'delivery.providers',
  ) {
    this.#lookup = lookup;
    const merged = table === false ? {} : { ...DEFAULT_PROVIDERS, ...(table ?? {}) };
    this.#table = Object.entries(merged).map(([name, def]) => {
      if (!NAME.test(name))
        throw new TypeError(
          `${where}: ${JSON.stringify(name)} is not a provider name (lower-case letters, digits, _ -)`,
        );
      if ((def.mx ?? []).length === 0 && (def.domains ?? []).length === 0) {
        throw new TypeError(`${where}.${name}: give mx suffixes or domains`);
      }
      const lower = (list: readonly string[] | undefined): string[] =>
        (list ?? []).map((s) => s.toLowerCase().replace(/^\./, '').replace(/\.$/, ''));
      return [name, { ...def, mx: lower(def.mx), domains: lower(def.domains) }];
    });
    for (const [name, def] of this.#table)
      for (const domain of def.domains ?? []) this.#byDomain.set(domain, name);
  }

  /** The names of the providers grouped (for checking limits that name one). */
  names(): string[] {
    return this.#table.map(([name]) => name);
  }

  /** The provider `domain` belongs to, by its listed domains or its most preferred MX host; undefined: none. */
  async of(domain: string, now = Date.now()): Promise<string | undefined> {
    if (this.#table.length === 0) return undefined;
    const d = domain.toLowerCase();
    const known = this.#byDomain.get(d);
    if (known !== undefined) return known;
    const cached = this.#cache.get(d);
    if (cached !== undefined && cached.until > now) return cached.provider;
    const hosts = await this.#lookup(d);
    // A failed lookup is not remembered: the next job asks again (delivery will meet the same failure).
    if (hosts === undefined) return undefined;
    const first = hosts[0];
    const provider =
      first === undefined
        ? undefined
        : this.#table.find(([, def]) => (def.mx ?? []).some((s) => endsIn(first, s)))?.[0];
    if (this.#cache.size >= CACHE_MAX) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    this.#cache.delete(d);
    this.#cache.set(d, { provider, until: now + CACHE_MS });
    return provider;
  }
}
