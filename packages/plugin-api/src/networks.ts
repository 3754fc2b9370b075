// Sets of networks as CIDR blocks (IPv4 and IPv6) over node:net's BlockList: trusted networks in
// core, exemptions and allow-lists in plugins. One implementation for all of them.
import { Resolver } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { normalizeIp } from './ip.js';

/** A CIDR list that cannot be parsed; `index` is the position of the bad entry. */
export class NetworkListError extends Error {
  readonly index: number;
  constructor(index: number, message: string) {
    super(message);
    this.index = index;
  }
}

export class NetworkList {
  readonly #blocks = new BlockList();
  readonly entries: readonly string[];
  // The last address asked about and the answer: a session asks about its client several times
  // (connection limits, greeting delay, relay), and BlockList.check builds a SocketAddress each time.
  #lastAddress: string | undefined;
  #lastAnswer = false;

  private constructor(entries: readonly string[]) {
    this.entries = entries;
  }

  /** Parses `192.0.2.0/24`, `2001:db8::/32` or a single address (a /32 or /128). Throws NetworkListError. */
  static parse(cidrs: readonly string[]): NetworkList {
    const list = new NetworkList([...cidrs]);
    cidrs.forEach((cidr, index) => {
      if (typeof cidr !== 'string') throw new NetworkListError(index, 'must be a CIDR string');
      const [address = '', prefixText, extra] = cidr.trim().split('/');
      const family = isIP(address);
      if (family === 0 || extra !== undefined) {
        throw new NetworkListError(index, `not a CIDR block: ${JSON.stringify(cidr)}`);
      }
      const max = family === 4 ? 32 : 128;
      const prefix = prefixText === undefined ? max : Number(prefixText);
      if (!/^\d+$/.test(prefixText ?? String(max)) || prefix > max) {
        throw new NetworkListError(index, `prefix length must be 0 to ${max}: ${JSON.stringify(cidr)}`);
      }
      list.#blocks.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6');
    });
    return list;
  }

  /**
   * True when the address lies in one of the blocks. IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a
   * dual-stack socket reports for an IPv4 client) counts as IPv4; a zone index (`%eth0`) is ignored.
   */
  contains(address: string): boolean {
    if (address === this.#lastAddress) return this.#lastAnswer;
    const plain = normalizeIp(address);
    const family = isIP(plain);
    const answer = family !== 0 && this.#blocks.check(plain, family === 4 ? 'ipv4' : 'ipv6');
    this.#lastAddress = address;
    this.#lastAnswer = answer;
    return answer;
  }

  get size(): number {
    return this.entries.length;
  }
}

/**
 * One network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`, or a bare address), checked as
 * NetworkList parses it, so what passes a schema also passes at start.
 */
export function networkSchema(): z.ZodType<string, string> {
  return z.string().superRefine((value, ctx) => {
    try {
      NetworkList.parse([value]);
    } catch (error) {
      ctx.addIssue({
        code: 'custom',
        message: `${(error as Error).message} (write a network in CIDR form, like 10.0.0.0/8, 192.0.2.7 or ::1/128)`,
      });
    }
  });
}

/** A name server as node's resolver takes it: an IP address, with a port if not 53. */
export function dnsServerSchema(): z.ZodType<string, string> {
  return z.string().refine(
    (server) => {
      try {
        new Resolver().setServers([server]);
        return true;
      } catch {
        return false;
      }
    },
    {
      error: (issue) =>
        `${JSON.stringify(issue.input)} is not a name server address: give an IP address, with a port if not 53: '192.0.2.53', '127.0.0.1:5353', '[2001:db8::53]:53'`,
    },
  );
}
