// Client addresses as the checks compare them: one parser for IPv4 and IPv6 (with IPv4-mapped
// forms, zone indexes and brackets), the RFC 5952 text form, networks of an address, CIDR blocks
// and DNS-list query labels. NetworkList (networks.ts) matches addresses against lists of blocks.
import { isIPv4, isIPv6 } from 'node:net';

export interface ParsedIp {
  readonly family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  readonly bytes: Uint8Array;
}

/**
 * The address as checks compare it: IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket
 * reports for an IPv4 client) becomes plain IPv4, a zone index (`%eth0`) is dropped, IPv6 is
 * lower-cased. Text that is not an address comes back trimmed of the same, unchanged otherwise.
 */
export function normalizeIp(ip: string): string {
  const bare = ip.replace(/%.*$/, '').toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
  if (mapped?.[1] && isIPv4(mapped[1])) return mapped[1];
  return bare;
}

/**
 * Parses an address as sockets and headers give it (`192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`,
 * `fe80::1%eth0`); IPv4-mapped IPv6 comes back as IPv4. Undefined when it is not an address.
 */
export function parseIp(text: string): ParsedIp | undefined {
  let address = text.trim();
  if (address.startsWith('[') && address.endsWith(']')) address = address.slice(1, -1);
  const zone = address.indexOf('%');
  if (zone !== -1) address = address.slice(0, zone);
  if (isIPv4(address)) return { family: 4, bytes: Uint8Array.from(address.split('.').map(Number)) };
  if (!isIPv6(address)) return undefined;
  const bytes = ipv6Bytes(address);
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? { family: 4, bytes: bytes.slice(12) } : { family: 6, bytes };
}

/** The 16 bytes of a valid IPv6 address (`::` and a dotted IPv4 tail included). */
function ipv6Bytes(address: string): Uint8Array {
  let text = address.toLowerCase();
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  const bytes = new Uint8Array(16);
  [...headGroups, ...zeros, ...tailGroups].forEach((group, i) => {
    const value = Number.parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  return bytes;
}

/** The text form: dotted IPv4, or RFC 5952 IPv6 (lower case, the longest run of two or more zero groups as `::`). */
export function formatIp(ip: ParsedIp): string {
  if (ip.family === 4) return [...ip.bytes].join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((ip.bytes[i] as number) << 8) | (ip.bytes[i + 1] as number));
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      best = i;
      bestLength = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best === -1) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLength).join(':')}`;
}

/** Clears every bit after the first `prefix`. */
function masked(bytes: Uint8Array, prefix: number): Uint8Array {
  return bytes.map((byte, i) => {
    const keep = Math.min(8, Math.max(0, prefix - i * 8));
    return keep === 0 ? 0 : byte & (0xff << (8 - keep));
  });
}

/**
 * The network an address lies in, as `192.0.2.0/24` or `2001:db8:1:2::/64` (greylisting triplets,
 * rate-limit keys). Undefined when `ip` is not an address.
 */
export function networkOf(ip: string, ipv4Prefix: number, ipv6Prefix: number): string | undefined {
  const parsed = parseIp(ip);
  if (!parsed) return undefined;
  const prefix = parsed.family === 4 ? ipv4Prefix : ipv6Prefix;
  return `${formatIp({ family: parsed.family, bytes: masked(parsed.bytes, prefix) })}/${prefix}`;
}

export interface Cidr {
  readonly ip: ParsedIp;
  /** The address as written, normalised (see normalizeIp). */
  readonly address: string;
  readonly prefix: number;
}

/** Parses `192.0.2.0/24`, `2001:db8::/32` or a bare address (a /32 or /128); undefined when malformed. */
export function parseCidr(text: string): Cidr | undefined {
  const [raw = '', prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) return undefined;
  const ip = parseIp(raw);
  if (!ip) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) return undefined;
  return { ip, address: normalizeIp(raw.trim()), prefix };
}

/**
 * The DNS list query label for an address (RFC 5782 §2.1, §2.4): `192.0.2.1` → `1.2.0.192`, IPv6 →
 * 32 reversed nibbles; the zone name follows it. Throws a TypeError when `ip` is not an address.
 */
export function reversedLabel(ip: string): string {
  const parsed = parseIp(ip);
  if (!parsed) throw new TypeError(`not an IP address: ${ip}`);
  if (parsed.family === 4) return [...parsed.bytes].reverse().join('.');
  const nibbles = [...parsed.bytes].flatMap((b) => [(b >> 4).toString(16), (b & 0xf).toString(16)]);
  return nibbles.reverse().join('.');
}
