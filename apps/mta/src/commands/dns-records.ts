// The DNS records a domain needs for the mail a config sends and receives, each checked against
// what DNS has now. One RecordKind per kind of record, in RECORD_KINDS; MTA-STS (`_mta-sts` TXT
// and its policy file) and TLS-RPT (`_smtp._tls` TXT) when the config's `publish` asks for them.
import { createHash } from 'node:crypto';
import type { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { MemoryPolicyStore, MtaSts, type MtaStsPolicy, MxResolver } from '@tern/delivery';
import { checkDnsRecord, dnsNameFor, dnsRecordFor, signingKeysOf } from '@tern/plugin-dkim';
// Deep import, as in @tern/plugin-spam: mailauth's main module loads code that needs Node 22.
import { spf } from 'mailauth/lib/spf/index.js';
import { type ResolvedConfig, readConfigFile, serverHostname } from '../config.js';
import { dnsOptions } from '../outbound-tls.js';
import { pluginInstances } from '../plugins.js';
import { txtStrings } from './zone.js';

/** What every check knows: the domain, the config, and a resolver pointed at the servers to ask. */
export interface DnsContext {
  /** Lower case, without the trailing dot. */
  readonly domain: string;
  readonly config: ResolvedConfig;
  readonly resolver: Resolver;
  /** The name servers, for checks that make their own resolver (undefined: the system's). */
  readonly servers: readonly string[] | undefined;
  readonly timeoutMs: number;
}

/** pass: DNS has what the config needs. fail: DNS has something else. missing: DNS has nothing. */
export type RecordStatus = 'pass' | 'fail' | 'missing';

export interface RecordReport {
  /** 'MX', 'SPF', 'DKIM', 'DMARC', ... */
  readonly kind: string;
  /** The owner name, without the trailing dot. */
  readonly name: string;
  readonly type: 'MX' | 'TXT';
  /** The data to publish, in zone-file form; none when the config itself lacks what it needs. */
  readonly publish: readonly string[];
  readonly status: RecordStatus;
  /** What DNS has, and what to do when it is not a pass. */
  readonly detail: string;
  /** A file to serve besides the record (MTA-STS's policy), printed as comments. */
  readonly file?: { readonly url: string; readonly contentType: string; readonly body: string };
}

export interface RecordKind {
  readonly kind: string;
  /** The reports for the context's domain; none when the config needs no such record for it. */
  check(ctx: DnsContext): Promise<RecordReport[]>;
}

/** The mx listeners' host names that receive mail for the domain (empty: the config does not receive it). */
export function receivingHosts(config: ResolvedConfig, domain: string): string[] {
  const hosts = config.listeners
    .filter((l) => l.kind === 'mx' && (l.localDomains ?? config.localDomains).includes(domain))
    .map((l) => (l.hostname ?? serverHostname(config)).toLowerCase());
  return [...new Set(hosts)];
}

/** The host mail for the domain leaves from: a smarthost when every route goes through one, else us. */
function sendingHost(config: ResolvedConfig): { host: string; via: 'smarthost' | 'direct' } {
  const all = config.delivery?.routes?.['*'];
  if (all?.type === 'smtp') return { host: all.host.toLowerCase(), via: 'smarthost' };
  return { host: serverHostname(config).toLowerCase(), via: 'direct' };
}

type Lookup<T> = { readonly found: T } | { readonly missing: true } | { readonly error: string };

/** NXDOMAIN and NODATA mean "no such record"; anything else is a failed lookup. */
async function lookup<T>(query: () => Promise<T>): Promise<Lookup<T>> {
  try {
    return { found: await query() };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'ENODATA') return { missing: true };
    return { error: `lookup failed: ${code ?? (error as Error).message}` };
  }
}

async function txtRecords(ctx: DnsContext, name: string): Promise<Lookup<string[]>> {
  return lookup(async () => (await ctx.resolver.resolveTxt(name)).map((chunks) => chunks.join('')));
}

/** The IPv4 and IPv6 addresses of a host (an address literal is its own). */
async function addressesOf(ctx: DnsContext, host: string): Promise<string[]> {
  if (isIP(host) !== 0) return [host];
  const settled = await Promise.allSettled([ctx.resolver.resolve4(host), ctx.resolver.resolve6(host)]);
  return settled.flatMap((s) => (s.status === 'fulfilled' ? s.value : []));
}

export const mxRecords: RecordKind = {
  kind: 'MX',
  async check(ctx) {
    const hosts = receivingHosts(ctx.config, ctx.domain);
    if (hosts.length === 0) return [];
    const publish = hosts.map((host) => `10 ${host}.`);
    const report = (status: RecordStatus, detail: string): RecordReport[] => [
      { kind: 'MX', name: ctx.domain, type: 'MX', publish, status, detail },
    ];
    const answer = await lookup(() => ctx.resolver.resolveMx(ctx.domain));
    if ('missing' in answer) return report('missing', `no MX record at ${ctx.domain}`);
    if ('error' in answer) return report('fail', answer.error);
    const listed = answer.found.map((mx) => mx.exchange.toLowerCase().replace(/\.$/, ''));
    const absent = hosts.filter((host) => !listed.includes(host));
    if (absent.length > 0) {
      return report(
        'fail',
        `DNS lists ${listed.join(', ') || 'no host (a null MX)'}, not ${absent.join(', ')}: add ${absent.length > 1 ? 'them' : 'it'}`,
      );
    }
    for (const host of hosts) {
      if ((await addressesOf(ctx, host)).length === 0) {
        return report('fail', `${host} has no A or AAAA record: publish this server's public address for it`);
      }
    }
    const others = listed.filter((host) => !hosts.includes(host));
    return report(
      'pass',
      `DNS lists ${hosts.join(', ')}${others.length > 0 ? ` (and ${others.join(', ')}, not this config's)` : ''}`,
    );
  },
};

export const spfRecord: RecordKind = {
  kind: 'SPF',
  async check(ctx) {
    const sender = sendingHost(ctx.config);
    const publish = [txtStrings(`v=spf1 a:${sender.host} -all`)];
    const report = (status: RecordStatus, detail: string): RecordReport[] => [
      { kind: 'SPF', name: ctx.domain, type: 'TXT', publish, status, detail },
    ];
    const via =
      sender.via === 'smarthost'
        ? ` (mail leaves through the smarthost ${sender.host}; if its provider publishes an SPF include, use that)`
        : '';
    const answer = await txtRecords(ctx, ctx.domain);
    if ('error' in answer) return report('fail', answer.error);
    const records = 'found' in answer ? answer.found.filter((r) => /^v=spf1(\s|$)/i.test(r)) : [];
    if (records.length === 0) return report('missing', `no SPF record (v=spf1) at ${ctx.domain}${via}`);
    if (records.length > 1) {
      return report(
        'fail',
        `${records.length} SPF records at ${ctx.domain}: receivers treat that as an error (RFC 7208 §4.5); merge them into one`,
      );
    }
    const addresses = await addressesOf(ctx, sender.host);
    if (addresses.length === 0) {
      return report('fail', `cannot tell which addresses send: ${sender.host} has no A or AAAA record`);
    }
    const refused: string[] = [];
    for (const ip of addresses) {
      const outcome = await spf({
        sender: `postmaster@${ctx.domain}`,
        ip,
        helo: sender.host,
        mta: serverHostname(ctx.config),
        resolver: (name: string, rrtype: string) =>
          ctx.resolver.resolve(name, rrtype) as unknown as Promise<string[][] | string[]>,
        maxElapsedTime: ctx.timeoutMs * 2,
      });
      if (outcome.status.result !== 'pass') refused.push(`${outcome.status.result} for ${ip}`);
    }
    if (refused.length > 0) {
      return report(
        'fail',
        `"${records[0]}" gives ${refused.join(', ')} (${sender.host}): let ${sender.host} send, e.g. with a:${sender.host}${via}`,
      );
    }
    return report('pass', `"${records[0]}" lets ${sender.host} (${addresses.join(', ')}) send${via}`);
  },
};

export const dkimRecords: RecordKind = {
  kind: 'DKIM',
  async check(ctx) {
    const keys = pluginInstances(ctx.config)
      .flatMap((p) => signingKeysOf(p) ?? [])
      .filter((key) => key.domain === ctx.domain);
    if (keys.length === 0) {
      return [
        {
          kind: 'DKIM',
          name: dnsNameFor(ctx.domain, '*'),
          type: 'TXT',
          publish: [],
          status: 'missing',
          detail: `the config signs no mail from ${ctx.domain}: make a key (tern dkim keygen --domain ${ctx.domain} --selector s1) and add dkim({ domains: { '${ctx.domain}': { selector: 's1', keyFile: '...' } } })`,
        },
      ];
    }
    const seen = new Set<string>();
    const reports: RecordReport[] = [];
    for (const key of keys) {
      if (seen.has(key.selector)) continue;
      seen.add(key.selector);
      const name = dnsNameFor(ctx.domain, key.selector);
      const later = key.active ? '' : ' (this key does not sign yet: publish it ahead of the switch)';
      const report = (status: RecordStatus, detail: string): RecordReport => ({
        kind: 'DKIM',
        name,
        type: 'TXT',
        publish: [txtStrings(dnsRecordFor(key.privateKey))],
        status,
        detail: `${detail}${later}`,
      });
      // Whether the name exists at all, told apart from a failed lookup; then what it publishes.
      const answer = await txtRecords(ctx, name);
      if ('missing' in answer) {
        reports.push(report('missing', `no TXT record at ${name}`));
        continue;
      }
      if ('error' in answer) {
        reports.push(report('fail', answer.error));
        continue;
      }
      const result = await checkDnsRecord({
        domain: ctx.domain,
        selector: key.selector,
        key: key.privateKey,
        resolver: { timeout: ctx.timeoutMs, ...(ctx.servers ? { servers: ctx.servers } : {}) },
      });
      reports.push(
        result.ok
          ? report(
              'pass',
              `DNS publishes the key selector ${key.selector} signs with${result.testing ? ' (t=y: testing mode; remove it once mail verifies)' : ''}`,
            )
          : report(result.found === undefined ? 'missing' : 'fail', result.reason),
      );
    }
    return reports;
  },
};

export const dmarcRecord: RecordKind = {
  kind: 'DMARC',
  async check(ctx) {
    const name = `_dmarc.${ctx.domain}`;
    const publish = [txtStrings(`v=DMARC1; p=none; rua=mailto:postmaster@${ctx.domain}`)];
    const report = (status: RecordStatus, detail: string): RecordReport[] => [
      { kind: 'DMARC', name, type: 'TXT', publish, status, detail },
    ];
    const answer = await txtRecords(ctx, name);
    if ('error' in answer) return report('fail', answer.error);
    const records = 'found' in answer ? answer.found.filter((r) => /^v=DMARC1\s*(;|$)/i.test(r)) : [];
    if (records.length === 0) return report('missing', `no DMARC record (v=DMARC1) at ${name}`);
    if (records.length > 1) {
      return report(
        'fail',
        `${records.length} DMARC records at ${name}: receivers ignore them all; keep one`,
      );
    }
    const record = records[0] as string;
    const policy = /(?:^|;)\s*p\s*=\s*([^;\s]*)/i.exec(record)?.[1]?.toLowerCase();
    if (policy !== 'none' && policy !== 'quarantine' && policy !== 'reject') {
      return report(
        'fail',
        `"${record}" has ${policy === undefined ? 'no p= tag' : `p=${policy}`}: set p=none, quarantine or reject`,
      );
    }
    return report(
      'pass',
      `"${record}"${policy === 'none' ? ' (p=none: reports only; move to quarantine or reject once they show your mail passes)' : ''}`,
    );
  },
};

/** Our MTA-STS policy for a domain we receive (RFC 8461 §3.2): its fields, its text, and its id. */
interface OurMtaStsPolicy {
  readonly mode: string;
  readonly mx: readonly string[];
  readonly maxAge: number;
  readonly text: string;
  /** A digest of the text, so it changes with the policy. */
  readonly id: string;
}

export function mtaStsPolicy(config: ResolvedConfig, domain: string): OurMtaStsPolicy | undefined {
  const wanted = config.publish?.mtaSts;
  if (!wanted) return undefined;
  const mx = (wanted.mx ?? receivingHosts(config, domain)).map((host) => host.toLowerCase());
  if (mx.length === 0) return undefined;
  const maxAge = wanted.maxAge ?? 604_800;
  const text = [
    'version: STSv1',
    `mode: ${wanted.mode}`,
    ...mx.map((host) => `mx: ${host}`),
    `max_age: ${maxAge}`,
    '',
  ].join('\r\n');
  const id = createHash('sha256').update(text).digest('hex').slice(0, 20);
  return { mode: wanted.mode, mx, maxAge, text, id };
}

export const mtaStsRecords: RecordKind = {
  kind: 'MTA-STS',
  async check(ctx) {
    const policy = mtaStsPolicy(ctx.config, ctx.domain);
    if (!policy) return [];
    const name = `_mta-sts.${ctx.domain}`;
    const url = `https://mta-sts.${ctx.domain}/.well-known/mta-sts.txt`;
    const serve = `; serve the policy below at ${url} first (a certificate for mta-sts.${ctx.domain}), then publish the record`;
    const report = (status: RecordStatus, detail: string): RecordReport[] => [
      {
        kind: 'MTA-STS',
        name,
        type: 'TXT',
        publish: [txtStrings(`v=STSv1; id=${policy.id}`)],
        status,
        detail: status === 'pass' ? detail : `${detail}${serve}`,
        file: { url, contentType: 'text/plain', body: policy.text },
      },
    ];
    const answer = await txtRecords(ctx, name);
    if ('error' in answer) return report('fail', answer.error);
    const records = 'found' in answer ? answer.found.filter((r) => /^v=STSv1;/.test(r)) : [];
    if (records.length === 0) return report('missing', `no MTA-STS record (v=STSv1) at ${name}`);
    if (records.length > 1)
      return report(
        'fail',
        `${records.length} MTA-STS records at ${name}: senders ignore them all; keep one`,
      );
    const id = /(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(;|$)/.exec(records[0] as string)?.[1];
    if (id !== policy.id) {
      return report(
        'fail',
        `"${records[0]}" has ${id ? `id=${id}` : 'no valid id'}, not the id of this policy: senders keep their cached policy until the id changes`,
      );
    }
    // The record is right: fetch the file as a sender would (DNS, HTTPS with certificate checks).
    const served = await servedMtaStsPolicy(ctx);
    if ('problem' in served) {
      return report(
        'fail',
        `"${records[0]}" is published, but the policy file is not served right (${served.problem}): enforcing senders find no policy`,
      );
    }
    const differs = policyDifference(served.policy, policy);
    if (differs) return report('fail', `"${records[0]}" is published, but ${url} serves ${differs}`);
    return report('pass', `"${records[0]}", and ${url} serves this policy`);
  },
};

/** Fetches the domain's MTA-STS policy as delivery does (its DNS, port and CAs from the config), caching nothing. */
async function servedMtaStsPolicy(ctx: DnsContext): Promise<{ policy: MtaStsPolicy } | { problem: string }> {
  const given = ctx.config.delivery?.mtaSts;
  const options = given === false ? {} : (given ?? {});
  const ignore = (): void => {};
  const silent = { debug: ignore, info: ignore, warn: ignore, error: ignore, child: () => silent };
  const dns = dnsOptions(ctx.config);
  const mtaSts = new MtaSts(
    new MxResolver({ ...dns, ...(ctx.servers ? { servers: ctx.servers } : {}), timeoutMs: ctx.timeoutMs }),
    new MemoryPolicyStore(),
    {
      ...(options.port !== undefined ? { port: options.port } : {}),
      ...(options.maxBytes !== undefined ? { maxBytes: options.maxBytes } : {}),
      timeoutMs: options.timeoutMs ?? 10_000,
      ...(options.ca !== undefined
        ? { ca: readConfigFile(ctx.config, options.ca, 'config.delivery.mtaSts.ca') }
        : {}),
      logger: silent,
    },
  );
  const found = await mtaSts.lookup(ctx.domain);
  if (found.problem) return { problem: found.problem.detail };
  if (!found.policy) return { problem: 'no policy found' };
  return { policy: found.policy };
}

/** How the served policy differs from ours (mode, mx, max_age), in words; undefined when it does not. */
function policyDifference(served: MtaStsPolicy, ours: OurMtaStsPolicy): string | undefined {
  const names = (mx: readonly string[]): string =>
    mx
      .map((m) => m.toLowerCase())
      .sort()
      .join(', ');
  const problems = [
    ...(served.mode === ours.mode ? [] : [`mode: ${served.mode} (this config: ${ours.mode})`]),
    ...(names(served.mx) === names(ours.mx)
      ? []
      : [`mx: ${served.mx.join(', ')} (this config: ${ours.mx.join(', ')})`]),
    ...(served.maxAge === ours.maxAge ? [] : [`max_age: ${served.maxAge} (this config: ${ours.maxAge})`]),
  ];
  return problems.length === 0 ? undefined : `another policy: ${problems.join('; ')}`;
}

export const tlsRptRecord: RecordKind = {
  kind: 'TLS-RPT',
  async check(ctx) {
    const rua = ctx.config.publish?.tlsRpt?.rua;
    if (!rua || receivingHosts(ctx.config, ctx.domain).length === 0) return [];
    const name = `_smtp._tls.${ctx.domain}`;
    const record = `v=TLSRPTv1; rua=${rua.join(',')}`;
    const report = (status: RecordStatus, detail: string): RecordReport[] => [
      { kind: 'TLS-RPT', name, type: 'TXT', publish: [txtStrings(record)], status, detail },
    ];
    const answer = await txtRecords(ctx, name);
    if ('error' in answer) return report('fail', answer.error);
    const records = 'found' in answer ? answer.found.filter((r) => /^v=TLSRPTv1\s*;/.test(r)) : [];
    if (records.length === 0) return report('missing', `no TLS-RPT record (v=TLSRPTv1) at ${name}`);
    if (records.length > 1)
      return report(
        'fail',
        `${records.length} TLS-RPT records at ${name}: senders ignore them all; keep one`,
      );
    const found =
      /(?:^|;)\s*rua=([^;]*)/
        .exec(records[0] as string)?.[1]
        ?.split(',')
        .map((u) => u.trim()) ?? [];
    const absent = rua.filter((uri) => !found.includes(uri));
    if (absent.length > 0)
      return report('fail', `"${records[0]}" does not send reports to ${absent.join(', ')}`);
    return report('pass', `"${records[0]}"`);
  },
};

/** Every kind of record `tern dns` prints and checks, in the order it prints them. */
export const RECORD_KINDS: readonly RecordKind[] = [
  mxRecords,
  spfRecord,
  dkimRecords,
  dmarcRecord,
  mtaStsRecords,
  tlsRptRecord,
];
