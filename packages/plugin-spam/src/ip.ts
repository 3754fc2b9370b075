// Client address arithmetic: DNSBL query names, greylisting networks, allow-list matching.
import { isIPv4, isIPv6 } from 'node:net';
import { NetworkList } from '@tern/plugin-api';

/**
 * The address as the checks compare it: IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack
 * socket reports for an IPv4 client) becomes plain IPv4, a zone index is dropped, IPv6 is lower-cased.
 */
export function normalizeIp(ip: string): string {
  const bare = ip.replace(/%.*$/, '').toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
  if (mapped?.[1] && isIPv4(mapped[1])) return mapped[1];
  return bare;
}

/** The 8 groups of an IPv6 address, each 4 hex digits (handles `::` and a trailing dotted IPv4). */
export function expandIpv6(ip: string): string[] {
  let address = ip;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (dotted?.[1]) {
    const octets = dotted[1].split('.').map(Number);
    const high = (((octets[0] ?? 0) << 8) | (octets[1] ?? 0)).toString(16);
    const low = (((octets[2] ?? 0) << 8) | (octets[3] ?? 0)).toString(16);
    address = `${address.slice(0, dotted.index)}${high}:${low}`;
  }
  const [head = '', tail] = address.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const missing = tail === undefined ? 0 : 8 - left.length - right.length;
  return [...left, ...Array<string>(missing).fill('0'), ...right].map((g) => g.padStart(4, '0'));
}

/**
 * The DNS list query label for an address: `192.0.2.1` → `1.2.0.192`, IPv6 → 32 reversed nibbles
 * (the form of RFC 5782 §2.4), to be followed by the zone name.
 */
export function reversedLabel(ip: string): string {
  const address = normalizeIp(ip);
  if (isIPv4(address)) return address.split('.').reverse().join('.');
  if (isIPv6(address)) return [...expandIpv6(address).join('')].reverse().join('.');
  throw new TypeError(`not an IP address: ${ip}`);
}

/** The network an address belongs to for greylisting: `192.0.2.0/24`, `2001:db8:1:2::/64`. */
export function networkOf(ip: string, ipv4Prefix: number, ipv6Prefix: number): string {
  const address = normalizeIp(ip);
  if (isIPv4(address)) {
    const value = address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
    const size = 2 ** (32 - ipv4Prefix);
    const base = Math.floor(value / size) * size;
    const octets = [24, 16, 8, 0].map((shift) => Math.floor(base / 2 ** shift) % 256);
    return `${octets.join('.')}/${ipv4Prefix}`;
  }
  if (isIPv6(address)) {
    const bits = expandIpv6(address)
      .map((group) => Number.parseInt(group, 16).toString(2).padStart(16, '0'))
      .join('')
      .slice(0, ipv6Prefix)
      .padEnd(128, '0');
    const groups: string[] = [];
    for (let i = 0; i < 128; i += 16) groups.push(Number.parseInt(bits.slice(i, i + 16), 2).toString(16));
    return `${compressIpv6(groups)}/${ipv6Prefix}`;
  }
  throw new TypeError(`not an IP address: ${ip}`);
}

/** RFC 5952 text form of 8 hex groups: the longest run of two or more zero groups becomes `::`. */
function compressIpv6(groups: string[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestStart === -1) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLength).join(':')}`;
}

/** Parses `192.0.2.0/24`, `2001:db8::/32` or a bare address; returns undefined when malformed. */
export function parseCidr(
  text: string,
): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [raw = '', prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) return undefined;
  const address = normalizeIp(raw);
  const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined;
  if (!family) return undefined;
  const max = family === 'ipv4' ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) return undefined;
  return { address, prefix, family };
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
