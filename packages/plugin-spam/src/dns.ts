// One DNS resolver per plugin instance, pointed at configurable servers, shared by the DNS list
// lookups and by mailauth (SPF, DKIM keys, DMARC records).
import { promises as dns } from 'node:dns';
import type { DnsOptions } from './schema.js';

/** The resolver function mailauth takes: node's `resolve(name, rrtype)` shape. */
export type MailauthResolver = (name: string, rrtype: string) => Promise<string[][] | string[]>;

export interface SpamResolver {
  readonly resolver: dns.Resolver;
  readonly mailauth: MailauthResolver;
}

export function createResolver(options: DnsOptions): SpamResolver {
  const resolver = new dns.Resolver({ timeout: options.timeoutMs, tries: options.tries });
  if (options.servers) resolver.setServers(options.servers);
  const mailauth: MailauthResolver = (name, rrtype) =>
    resolver.resolve(name, rrtype) as unknown as Promise<string[][] | string[]>;
  return { resolver, mailauth };
}

/** NXDOMAIN and NODATA: the name simply has no such record. Anything else is a lookup failure. */
export function isNotFound(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ENOTFOUND' || code === 'ENODATA';
}
