// Sets of networks as CIDR blocks (IPv4 and IPv6) over node:net's BlockList: trusted networks in
// core, exemptions and allow-lists in plugins. One implementation for all of them.
import { BlockList, isIP } from 'node:net';

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
    const plain = address.replace(/%.*$/, '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
    const family = isIP(plain);
    if (family === 0) return false;
    return this.#blocks.check(plain, family === 4 ? 'ipv4' : 'ipv6');
  }

  get size(): number {
    return this.entries.length;
  }
}
