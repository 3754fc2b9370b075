// DNS block and allow lists (RFC 5782) on the client address: one A query per zone, the answer's
// 127.0.0.x return code mapped to a symbol, a weight and, for block lists, an action.
import type { promises as dns } from 'node:dns';
import { isIPv6 } from 'node:net';
import type { Logger } from '@tern/plugin-api';
import { NetworkList, normalizeIp, reversedLabel } from '@tern/plugin-api';
import type { DnsblZoneOptions, DnswlZoneOptions } from './checks/dns-lists.js';
import { isNotFound } from './dns.js';
import type { SpamSymbol } from './symbols.js';

export interface DnsListHit {
  readonly list: 'block' | 'allow';
  readonly zone: string;
  /** Every return code the zone gave. */
  readonly codes: readonly string[];
  readonly symbol: SpamSymbol;
  /** Block lists only: `reject` when the zone or code says so. */
  readonly action: 'score' | 'reject';
}

export interface DnsListResult {
  /** The client address that was looked up (after IPv4-mapped IPv6 became IPv4). */
  readonly ip: string;
  readonly hits: readonly DnsListHit[];
  /** The first block list hit whose action is reject. */
  readonly rejectedBy: DnsListHit | undefined;
  /** At least one allow list lists the client. */
  readonly allowListed: boolean;
  /** Zones that could not be asked (timeout, SERVFAIL) or refused to answer; the check fails open. */
  readonly failures: readonly { zone: string; reason: string }[];
}

/** No listing: nothing asked (a private address) or nothing configured. */
export function unlisted(ip: string): DnsListResult {
  return { ip, hits: [], rejectedBy: undefined, allowListed: false, failures: [] };
}

/** The symbol-name part of a zone: `zen.spamhaus.org` → `ZEN_SPAMHAUS_ORG`. */
export function zoneSymbolName(zone: string): string {
  return zone.toUpperCase().replace(/[^A-Z0-9]+/g, '_');
}

/**
 * Codes a list answers with to say "I will not answer you" rather than "listed": Spamhaus and
 * SURBL use 127.255.255.0/24 (public resolver, rate limit), dnswl.org uses 127.0.0.255. Treating
 * them as listings would block or allow everyone, so they count as failures unless configured.
 */
function isRefusalCode(code: string): boolean {
  return code.startsWith('127.255.255.') || code === '127.0.0.255';
}

interface ZoneQuery {
  readonly list: 'block' | 'allow';
  readonly zone: DnsblZoneOptions | DnswlZoneOptions;
}

// Addresses no public DNS list can say anything useful about: querying them only leaks local topology.
const NOT_PUBLIC = NetworkList.parse([
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '::/128',
  '::1/128',
  'fc00::/7',
  'fe80::/10',
]);

/** Loopback, private (RFC 1918, RFC 4193), CGNAT and link-local addresses. */
export function isNonPublic(ip: string): boolean {
  return NOT_PUBLIC.contains(ip);
}

/** Asks every configured zone about `ip` at once. Never throws: failures are reported and skipped. */
export async function checkDnsLists(
  ip: string,
  blockZones: readonly DnsblZoneOptions[],
  allowZones: readonly DnswlZoneOptions[],
  resolver: dns.Resolver,
  log: Logger,
): Promise<DnsListResult> {
  const address = normalizeIp(ip);
  if (isNonPublic(address)) return unlisted(address);
  let label: string;
  try {
    label = reversedLabel(address);
  } catch {
    return unlisted(address);
  }
  const v6 = isIPv6(address);
  const queries: ZoneQuery[] = [
    ...blockZones.map((zone) => ({ list: 'block' as const, zone })),
    ...allowZones.map((zone) => ({ list: 'allow' as const, zone })),
  ].filter((q) => !v6 || q.zone.ipv6);

  const hits: DnsListHit[] = [];
  const failures: { zone: string; reason: string }[] = [];
  await Promise.all(
    queries.map(async ({ list, zone }) => {
      let answers: string[];
      try {
        answers = await resolver.resolve4(`${label}.${zone.zone}`);
      } catch (error) {
        if (isNotFound(error)) return;
        const reason = (error as { code?: string }).code ?? String(error);
        failures.push({ zone: zone.zone, reason });
        log.warn({ zone: zone.zone, ip: address, reason }, 'DNS list lookup failed; not counted');
        return;
      }
      const hit = interpret(list, zone, answers, failures, log);
      if (hit) hits.push(hit);
    }),
  );
  // Promise.all finishes in arrival order; keep configuration order so results are reproducible.
  const order = queries.map((q) => q.zone.zone);
  hits.sort((a, b) => order.indexOf(a.zone) - order.indexOf(b.zone));
  return {
    ip: address,
    hits,
    rejectedBy: hits.find((h) => h.list === 'block' && h.action === 'reject'),
    allowListed: hits.some((h) => h.list === 'allow'),
    failures,
  };
}

function interpret(
  list: 'block' | 'allow',
  zone: DnsblZoneOptions | DnswlZoneOptions,
  answers: readonly string[],
  failures: { zone: string; reason: string }[],
  log: Logger,
): DnsListHit | undefined {
  const prefix = list === 'block' ? 'RBL' : 'RWL';
  const base = `${prefix}_${zone.name ?? zoneSymbolName(zone.zone)}`;
  const codes = [...new Set(answers)].sort();
  // Several codes can come back (Spamhaus ZEN: SBL and PBL at once); the heaviest meaning counts.
  let best: { name: string; weight: number; action: 'score' | 'reject' } | undefined;
  const counted: string[] = [];
  for (const code of codes) {
    const meaning = zone.codes?.[code];
    if (!code.startsWith('127.') || (meaning === undefined && isRefusalCode(code))) {
      failures.push({ zone: zone.zone, reason: `answered ${code}` });
      log.warn({ zone: zone.zone, code }, 'DNS list answered with an error or non-list code; not counted');
      continue;
    }
    counted.push(code);
    const zoneAction = 'action' in zone ? zone.action : 'score';
    const codeAction = meaning && 'action' in meaning ? meaning.action : undefined;
    const candidate = {
      name: meaning?.name ? `${base}_${meaning.name}` : base,
      weight: meaning?.weight ?? zone.weight,
      action: list === 'block' ? (codeAction ?? zoneAction) : ('score' as const),
    };
    if (!best || rank(candidate, list) > rank(best, list)) best = candidate;
  }
  if (!best) return undefined;
  const detail = `${zone.zone}=${counted.join(',')}`;
  return {
    list,
    zone: zone.zone,
    codes: counted,
    symbol: { name: best.name, score: best.weight, detail },
    action: best.action,
  };
}

/** Orders meanings: a reject outranks any score; then the larger effect (more spammy or more trusted). */
function rank(meaning: { weight: number; action: 'score' | 'reject' }, list: 'block' | 'allow'): number {
  const effect = list === 'block' ? meaning.weight : -meaning.weight;
  return (meaning.action === 'reject' ? 1e9 : 0) + effect;
}
