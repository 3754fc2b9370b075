// Client addresses as rate-limit keys: IPv4 by address or /24, IPv6 by /64 (one customer's LAN
// and the smallest block an abuser can not trivially rotate within). Parsing is @tern/plugin-api's.
import { networkOf, parseIp } from '@tern/plugin-api';

/**
 * The group a client address counts under: the address itself at a full-length prefix, otherwise
 * the network (`192.0.2.0/24`, `2001:db8:0:1::/64`). Undefined for something that is not an IP.
 */
export function addressGroup(address: string, v4Prefix: number, v6Prefix: number): string | undefined {
  const ip = parseIp(address);
  const network = networkOf(address, v4Prefix, v6Prefix);
  if (!ip || network === undefined) return undefined;
  const full = (ip.family === 4 ? v4Prefix : v6Prefix) === (ip.family === 4 ? 32 : 128);
  return full ? network.slice(0, network.lastIndexOf('/')) : network;
}
