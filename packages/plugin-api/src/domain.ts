// Domain names as they are compared everywhere (local domains, routes, per-destination limits):
// one normal form, and the schema that reads a configured domain into it.
import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';
import { z } from 'zod';

/**
 * The form domains are compared in: lower case, IDNA A-labels (smtp-server hands over U-labels
 * for punycode input, so both sides go through the same conversion), address literals kept as
 * written but lower-cased. Undefined when it is neither a domain nor an address literal.
 */
export function normalizeDomain(domain: string): string | undefined {
  if (typeof domain !== 'string' || domain === '') return undefined;
  if (domain.startsWith('[') && domain.endsWith(']')) return normalizeAddressLiteral(domain);
  const ascii = domainToASCII(domain.toLowerCase());
  return ascii === '' ? undefined : ascii;
}

/** `[192.0.2.1]` or `[IPv6:2001:db8::1]` in one canonical lower-case form, so `[IPv6:0::1]` equals `[ipv6:::1]`. */
function normalizeAddressLiteral(literal: string): string | undefined {
  const inner = literal.slice(1, -1);
  if (isIPv4(inner)) return `[${inner}]`;
  if (!/^ipv6:/i.test(inner)) return undefined;
  const address = inner.slice(5);
  if (!isIPv6(address)) return undefined;
  return `[ipv6:${new URL(`http://[${address}]/`).hostname.slice(1, -1)}]`;
}

/** A domain or address literal, read into its normal form (see normalizeDomain). */
export function domainSchema(): z.ZodType<string, string> {
  return z.string().transform((value, ctx) => {
    const normal = normalizeDomain(value);
    if (normal !== undefined) return normal;
    ctx.issues.push({
      code: 'custom',
      input: value,
      message: `not a domain or address literal: ${JSON.stringify(value)} (write a domain like example.com, or an address literal like [192.0.2.1] or [IPv6:2001:db8::1])`,
    });
    return z.NEVER;
  });
}
