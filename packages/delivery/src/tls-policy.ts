// Which TLS a delivery must have, per destination, as Postfix's smtp_tls_policy_maps: a table by
// recipient domain or next hop, then the hop's own mode, then the default (DANE when a validating
// resolver is configured, else MTA-STS). The plan turns the level into what each MX host's
// connection must prove: DANE where the host has secure TLSA records (RFC 7672), else the domain's
// MTA-STS policy (RFC 8461 §2: DANE takes precedence), else what the level says.
import { type NextHop, type SmtpReply, smtpReply, type TlsMode } from '@tern/plugin-api';
import type { DeliveryReport } from '@tern/queue';
import { lookupTlsa, type TlsaLookup, tlsaText } from './dane.js';
import { type MtaSts, type MtaStsLookup, mxMatchesPolicy } from './mta-sts.js';
import type { MxHost, MxResolver } from './mx.js';
import type { SessionTarget } from './session.js';
import type { TlsCheck } from './tls-check.js';
import type { TlsPolicyOutcome, TlsPolicyType } from './tls-report.js';

/** How TLS went for one attempt (DeliveryReport.tls). */
export type DeliveryTls = NonNullable<DeliveryReport['tls']>;
/** none | may | encrypt | verify | secure | dane | dane-only | mta-sts (see DeliveryReport.tls). */
export type TlsPolicyLevel = DeliveryTls['policy'];
export type AppliedTlsPolicy = DeliveryTls['applied'];

export const TLS_POLICY_LEVELS: readonly TlsPolicyLevel[] = [
  'none',
  'may',
  'encrypt',
  'verify',
  'secure',
  'dane',
  'dane-only',
  'mta-sts',
];

/**
 * One entry of the policy table. `match` names the certificate must carry under `verify`/`secure`:
 * host names, `.domain` for any name below it, or `hostname` (the MX or next-hop host), `nexthop`
 * (the recipient domain, or the host of a fixed hop) and `dot-nexthop` (any name below that).
 * Defaults: `hostname` for verify, `nexthop, dot-nexthop` for secure.
 */
export interface TlsPolicyEntry {
  readonly level: TlsPolicyLevel;
  readonly match?: readonly string[];
}

/**
 * Keys: a recipient domain (`example.com`), every domain below one (`.example.com`), or a fixed next
 * hop (`[relay.example.net]`, `[relay.example.net]:587`). Values: a level, or an entry with names.
 */
export type TlsPolicyTable = Readonly<Record<string, TlsPolicyLevel | TlsPolicyEntry>>;

/** The policy that applies to one connection, for the session (target) and for reports. */
export interface TargetPolicy {
  readonly applied: AppliedTlsPolicy;
  readonly policyType: TlsPolicyType;
  readonly policyStrings: readonly string[];
  readonly mxHosts?: readonly string[];
  /** What a successful validation does not prove (e.g. an insecure MX RRset). */
  readonly note?: string;
}

export interface PlannedTarget {
  readonly target: SessionTarget;
  readonly policy: TargetPolicy;
}

/** A host left out by its policy: why (for the deferral) and what TLS-RPT calls it. */
export interface SkippedHost {
  readonly host: string;
  readonly reply: SmtpReply;
  readonly outcome: Omit<TlsPolicyOutcome, 'at' | 'policyDomain'>;
}

export interface TlsPlan {
  readonly level: TlsPolicyLevel;
  /** Addresses to try, in order, each with what its connection must prove. */
  readonly targets: readonly PlannedTarget[];
  /** Hosts the policy ruled out (the reply of the first one defers the attempt if no target is left). */
  readonly skipped: readonly SkippedHost[];
  /** Outcomes known before connecting (a policy fetch that failed). */
  readonly outcomes: readonly Omit<TlsPolicyOutcome, 'at' | 'policyDomain'>[];
}

/** Levels that follow the recipient domain's own policy (DANE, MTA-STS): what `TLS-Required: No` sets aside. */
const RECIPIENT_POLICY_LEVELS: ReadonlySet<TlsPolicyLevel> = new Set(['dane', 'dane-only', 'mta-sts']);

/** Replies for deferrals the policy itself decides: temporary, so a fixed DNS or policy lets the mail go. */
export const TlsPolicyReplies = {
  tlsaLookupFailed: (host: string, code: string): SmtpReply =>
    smtpReply(
      451,
      '4.7.5',
      `DANE: TLSA lookup for ${host} failed (${code}): the DNSSEC answer is bogus or unavailable, so ${host} is not used`,
    ),
  daneRequired: (host: string): SmtpReply =>
    smtpReply(451, '4.7.5', `TLS policy dane-only: ${host} has no DNSSEC-validated TLSA records`),
  mxNotInPolicy: (host: string, domain: string, patterns: readonly string[]): SmtpReply =>
    smtpReply(
      451,
      '4.7.5',
      `MTA-STS policy of ${domain} (mode enforce) does not list MX host ${host} (mx: ${patterns.join(', ')})`,
    ),
} as const;

export interface TlsPolicyOptions {
  readonly table?: TlsPolicyTable;
  /** The level when neither the table nor the hop names one. */
  readonly defaultLevel: TlsPolicyLevel;
  readonly resolver: MxResolver;
  /** Unset: MTA-STS is off (levels `mta-sts` and `dane` fall back to `may`). */
  readonly mtaSts?: MtaSts;
}

/** A table's entries with lower-case keys and levels as entries. */
function normalizeTable(table: TlsPolicyTable | undefined): Map<string, TlsPolicyEntry> {
  return new Map(
    Object.entries(table ?? {}).map(([key, value]) => [
      key.toLowerCase(),
      typeof value === 'string' ? { level: value } : value,
    ]),
  );
}

function tableEntry(
  table: ReadonlyMap<string, TlsPolicyEntry>,
  hop: NextHop,
  domain: string,
): TlsPolicyEntry | undefined {
  // Most set-ups have no table: every delivery would build its keys for nothing.
  if (table.size === 0) return undefined;
  if (hop.type === 'smtp') {
    const host = hop.host.toLowerCase();
    const byHop = table.get(`[${host}]:${hop.port ?? 25}`) ?? table.get(`[${host}]`);
    if (byHop) return byHop;
  }
  const name = domain.toLowerCase();
  const exact = table.get(name);
  if (exact) return exact;
  const labels = name.split('.');
  for (let i = 1; i < labels.length; i++) {
    const entry = table.get(`.${labels.slice(i).join('.')}`);
    if (entry) return entry;
  }
  return undefined;
}

/** The level when neither the table nor the hop names one: `tls.mode`'s, else DANE with DNSSEC, else MTA-STS. */
export function defaultTlsLevel(mode: TlsMode | undefined, dnssec: boolean): TlsPolicyLevel {
  return levelOfMode(mode)?.level ?? (dnssec ? 'dane' : 'mta-sts');
}

/**
 * Which entry applies to mail for `domain` over its MX hosts, and where it comes from: the table's
 * key, or the default (for `tern dns` and operators; the plan itself applies it the same way).
 */
export function tlsPolicyFor(
  table: TlsPolicyTable | undefined,
  domain: string,
  defaultLevel: TlsPolicyLevel,
): TlsPolicyEntry & { readonly from: string } {
  const entries = normalizeTable(table);
  const entry = tableEntry(entries, { type: 'mx', domain }, domain);
  if (!entry) return { level: defaultLevel, from: 'the default' };
  const key = [...entries.entries()].find(([, e]) => e === entry)?.[0] ?? domain;
  return { ...entry, from: `delivery.tlsPolicy[${JSON.stringify(key)}]` };
}

/** Plans the TLS of each connection of an attempt. */
export class TlsPolicy {
  readonly #table: ReadonlyMap<string, TlsPolicyEntry>;
  readonly #options: TlsPolicyOptions;

  constructor(options: TlsPolicyOptions) {
    this.#options = options;
    this.#table = normalizeTable(options.table);
  }

  /** The entry for a hop: `[host]:port`, `[host]`, then the recipient domain, then its parents as `.parent`. */
  entryFor(hop: NextHop, domain: string): TlsPolicyEntry | undefined {
    return tableEntry(this.#table, hop, domain);
  }

  /**
   * What each connection of this attempt must prove. `hosts` are the MX hosts (or the one fixed host)
   * with their addresses; `mxSecure` is the MX RRset's DNSSEC status.
   */
  async plan(input: {
    readonly hop: Extract<NextHop, { type: 'mx' | 'smtp' }>;
    readonly domain: string;
    readonly hosts: readonly MxHost[];
    readonly mxSecure: boolean;
    readonly port: number;
    readonly auth?: { readonly user: string; readonly pass: string };
    /**
     * The message says `TLS-Required: No` (RFC 8689 §3): the recipient's DANE and MTA-STS policies
     * are not applied (their levels become `may`); a level the operator set otherwise stays.
     */
    readonly ignoreRecipientPolicy?: boolean;
  }): Promise<TlsPlan> {
    const { hop, domain, hosts, port } = input;
    const entry = this.entryFor(hop, domain) ?? levelOfMode(hop.tls) ?? { level: this.#options.defaultLevel };
    const level: TlsPolicyLevel =
      input.ignoreRecipientPolicy === true && RECIPIENT_POLICY_LEVELS.has(entry.level) ? 'may' : entry.level;
    const implicit = hop.tls === 'implicit';
    const nexthop = hop.type === 'mx' ? domain.toLowerCase() : hop.host.toLowerCase();
    const targets: PlannedTarget[] = [];
    const skipped: SkippedHost[] = [];
    const outcomes: Omit<TlsPolicyOutcome, 'at' | 'policyDomain'>[] = [];
    const noPolicy: TargetPolicy = { applied: 'may', policyType: 'no-policy-found', policyStrings: [] };
    const add = (host: MxHost, tls: TlsMode, policy: TargetPolicy, check?: TlsCheck): void => {
      for (const address of host.addresses) {
        targets.push({
          target: {
            protocol: 'smtp',
            hostname: host.name,
            address,
            port,
            // Implicit TLS stays implicit: the level then only says what to check.
            tls: implicit && tls !== 'none' ? 'implicit' : tls,
            ...(check ? { check } : {}),
            ...(input.auth ? { auth: input.auth } : {}),
          },
          policy,
        });
      }
    };

    const dane = level === 'dane' || level === 'dane-only';
    const client = this.#options.resolver.validating;
    const tlsa: (TlsaLookup | undefined)[] = await Promise.all(
      hosts.map((host) =>
        dane && client && host.addressesSecure ? lookupTlsa(client, host.name, port) : undefined,
      ),
    );
    // MTA-STS is looked up only when some host needs it: it applies to MX delivery, not fixed hops.
    let sts: MtaStsLookup | undefined;
    const stsPolicy = async (): Promise<MtaStsLookup | undefined> => {
      if (hop.type !== 'mx' || !this.#options.mtaSts) return undefined;
      if (!sts) {
        sts = await this.#options.mtaSts.lookup(domain);
        if (sts.problem) {
          outcomes.push({
            policyType: 'sts',
            policyStrings: sts.policy?.lines ?? [],
            result: sts.problem.type,
            detail: sts.problem.detail,
          });
        }
      }
      return sts;
    };

    for (const [i, host] of hosts.entries()) {
      if (dane) {
        const lookup = tlsa[i];
        if (lookup?.kind === 'failed') {
          skipped.push({
            host: host.name,
            reply: TlsPolicyReplies.tlsaLookupFailed(host.name, lookup.code),
            outcome: {
              policyType: 'tlsa',
              policyStrings: [],
              result: 'dnssec-invalid',
              receivingMxHostname: host.name,
              detail: `TLSA lookup failed (${lookup.code})`,
            },
          });
          continue;
        }
        if (lookup?.kind === 'usable' || lookup?.kind === 'unusable') {
          const policyStrings = lookup.all.map(tlsaText);
          const insecureMx = hop.type === 'mx' && !input.mxSecure && !host.implicit;
          if (lookup.kind === 'unusable') {
            // RFC 7672 §2.2: TLSA records say the server does TLS, even when none can authenticate it.
            add(
              host,
              'require',
              {
                applied: 'encrypt',
                policyType: 'tlsa',
                policyStrings,
                note: 'TLSA records present but none usable: encrypted without authentication',
              },
              { kind: 'encrypt' },
            );
            continue;
          }
          // RFC 7672 §3.2.2: the MX host name; the next-hop domain too when the MX answer was secure.
          const names = insecureMx ? [host.name] : [...new Set([host.name, nexthop])];
          add(
            host,
            'require',
            {
              applied: 'dane',
              policyType: 'tlsa',
              policyStrings,
              ...(insecureMx
                ? {
                    note: `MX RRset of ${domain} is not DNSSEC-signed: authenticated ${host.name}, not that it serves ${domain}`,
                  }
                : {}),
            },
            { kind: 'dane', records: lookup.records, names },
          );
          continue;
        }
        if (level === 'dane-only') {
          skipped.push({
            host: host.name,
            reply: TlsPolicyReplies.daneRequired(host.name),
            outcome: {
              policyType: 'no-policy-found',
              policyStrings: [],
              result: 'dane-required',
              receivingMxHostname: host.name,
              detail: client ? 'no DNSSEC-validated TLSA records' : 'no validating resolver (dns.dnssec)',
            },
          });
          continue;
        }
      }
      if (level === 'dane' || level === 'mta-sts') {
        const found = await stsPolicy();
        const policy = found?.policy;
        if (policy && policy.mode !== 'none') {
          const base = {
            policyType: 'sts' as const,
            policyStrings: policy.lines,
            mxHosts: policy.mx,
          };
          const listed = mxMatchesPolicy(host.name, policy.mx);
          if (policy.mode === 'enforce') {
            if (!listed) {
              skipped.push({
                host: host.name,
                reply: TlsPolicyReplies.mxNotInPolicy(host.name, domain, policy.mx),
                outcome: {
                  ...base,
                  result: 'validation-failure',
                  receivingMxHostname: host.name,
                  detail: `MX host ${host.name} is not listed in the policy`,
                },
              });
              continue;
            }
            add(
              host,
              'require',
              { ...base, applied: 'mta-sts-enforce' },
              { kind: 'pkix', names: [host.name] },
            );
            continue;
          }
          // testing: deliver as without a policy, but check (and report) what enforce would have required.
          add(
            host,
            'opportunistic',
            {
              ...base,
              applied: 'mta-sts-testing',
              ...(listed ? {} : { note: `MX host ${host.name} is not listed in the policy (testing mode)` }),
            },
            { kind: 'pkix', names: [host.name] },
          );
          continue;
        }
        add(host, 'opportunistic', noPolicy);
        continue;
      }
      switch (level) {
        case 'none':
          add(host, 'none', { ...noPolicy, applied: 'none' });
          break;
        case 'may':
          add(host, 'opportunistic', noPolicy);
          break;
        case 'encrypt':
          add(host, 'require', { ...noPolicy, applied: 'encrypt' }, { kind: 'encrypt' });
          break;
        case 'verify':
        case 'secure': {
          const names = matchNames(
            entry.match ?? (level === 'verify' ? ['hostname'] : ['nexthop', 'dot-nexthop']),
            host.name,
            nexthop,
          );
          add(host, 'require', { ...noPolicy, applied: level }, { kind: 'pkix', names });
          break;
        }
      }
    }
    return { level, targets, skipped, outcomes };
  }
}

/** A hop's own TLS mode as a level: the table wins over it, it wins over the default. */
function levelOfMode(mode: TlsMode | undefined): TlsPolicyEntry | undefined {
  switch (mode) {
    case 'none':
      return { level: 'none' };
    case 'opportunistic':
      return { level: 'may' };
    case 'require':
    case 'implicit':
      return { level: 'verify' };
    default:
      return undefined;
  }
}

function matchNames(match: readonly string[], hostname: string, nexthop: string): string[] {
  return match.map((name) => {
    if (name === 'hostname') return hostname;
    if (name === 'nexthop') return nexthop;
    if (name === 'dot-nexthop') return `.${nexthop}`;
    return name.toLowerCase();
  });
}
