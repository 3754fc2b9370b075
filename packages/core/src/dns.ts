// The client's host name for Received headers: the PTR name, kept only when it resolves back to
// the client's address (forward-confirmed), because anyone can publish any PTR for their own IP.
import { promises as dns } from 'node:dns';
import { isIPv6 } from 'node:net';
import { formatIp, parseIp, TIMED_OUT, within } from '@tern/plugin-api';

/** The DNS questions core asks; node's `dns.promises.Resolver` fits. */
export interface HostResolver {
  reverse(ip: string): Promise<string[]>;
  resolve4(hostname: string): Promise<string[]>;
  resolve6(hostname: string): Promise<string[]>;
}

export const systemResolver: HostResolver = {
  reverse: (ip) => dns.reverse(ip),
  resolve4: (hostname) => dns.resolve4(hostname),
  resolve6: (hostname) => dns.resolve6(hostname),
};

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/i;
// A PTR record is binary-safe; only names that look like host names may reach a header.
function isHostname(name: string): boolean {
  const bare = name.replace(/\.$/, '');
  return bare.length > 0 && bare.length <= 253 && bare.split('.').every((label) => LABEL.test(label));
}

function sameAddress(a: string, b: string): boolean {
  const canonical = (ip: string): string => {
    const parsed = parseIp(ip);
    return parsed ? formatIp(parsed) : ip;
  };
  return canonical(a) === canonical(b);
}

/** The forward-confirmed host name of `ip`, or undefined (no PTR, no match, error or timeout). */
export async function confirmedHostname(
  resolver: HostResolver,
  ip: string,
  timeoutMs: number,
): Promise<string | undefined> {
  const lookup = async (): Promise<string | undefined> => {
    const names = await resolver.reverse(ip);
    // A few names at most: a client must not make us chase an unbounded PTR set.
    for (const name of names.slice(0, 3)) {
      if (!isHostname(name)) continue;
      const addresses = await (isIPv6(ip) ? resolver.resolve6(name) : resolver.resolve4(name)).catch(
        () => [],
      );
      if (addresses.some((address) => sameAddress(address, ip))) return name.replace(/\.$/, '').toLowerCase();
    }
    return undefined;
  };
  const name = await within(
    lookup().catch(() => undefined),
    timeoutMs,
  );
  return name === TIMED_OUT ? undefined : name;
}
