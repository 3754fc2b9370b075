// tern dns DOMAIN --config FILE: the records to publish for a domain, as a zone-file snippet whose
// comments say, record by record, whether DNS has it right now.
import { Resolver } from 'node:dns/promises';
import { defaultTlsLevel, tlsPolicyFor } from '@tern/delivery';
import { deliveryDnsServers, type ResolvedConfig, serverHostname, withConfig } from '../config.js';
import { UsageProblem } from '../ops/admin-client.js';
import { type DnsContext, RECORD_KINDS, type RecordReport, receivingHosts } from './dns-records.js';
import { zoneLine } from './zone.js';

export interface DnsOptions {
  readonly domain: string;
  readonly config: string;
  /** Name servers to ask; default: the config's delivery.dns servers, else the system's. */
  readonly dns?: readonly string[] | undefined;
}

const DEFAULT_TIMEOUT_MS = 5000;
const DOMAIN =
  /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

/** The outbound TLS policy: which level mail to `domain` goes out under, and the table. */
function tlsPolicyLines(config: ResolvedConfig, domain: string): string[] {
  const d = config.delivery;
  const dnssec = d?.dns?.dnssec !== undefined && d.dns.dnssec !== false;
  const mtaSts = d?.mtaSts !== false && d?.mtaSts?.enabled !== false;
  const fallback = defaultTlsLevel(d?.tls?.mode, dnssec);
  const applied = tlsPolicyFor(d?.tlsPolicy, domain, fallback);
  const match = applied.match ? ` (certificate names: ${applied.match.join(', ')})` : '';
  const lines = [
    `; outbound TLS to ${domain}: ${applied.level}${match}, from ${applied.from}; MTA-STS ${mtaSts ? 'on' : 'off'}, DANE ${dnssec ? 'on (delivery.dns.dnssec)' : 'off (no validating resolver: set delivery.dns.dnssec)'}`,
  ];
  const table = Object.entries(d?.tlsPolicy ?? {});
  lines.push(
    `; TLS policy table (delivery.tlsPolicy): ${table.length === 0 ? 'empty' : `${table.length} entr${table.length === 1 ? 'y' : 'ies'}`}, default ${fallback}`,
  );
  for (const [key, value] of table) {
    const entry = typeof value === 'string' ? { level: value } : value;
    lines.push(
      `;   ${key} ${entry.level}${entry.match ? ` (certificate names: ${entry.match.join(', ')})` : ''}`,
    );
  }
  return lines;
}

export async function runDns(options: DnsOptions): Promise<number> {
  const domain = options.domain.toLowerCase().replace(/\.$/, '');
  if (!DOMAIN.test(domain)) throw new UsageProblem(`${options.domain} is not a domain name like example.com`);
  return withConfig(options.config, async (config) => {
    const servers = options.dns ?? deliveryDnsServers(config);
    const timeoutMs = config.delivery?.dns?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const resolver = new Resolver({ timeout: timeoutMs, tries: 2 });
    if (servers) {
      try {
        resolver.setServers([...servers]);
      } catch (error) {
        throw new UsageProblem(`--dns: ${(error as Error).message}: give IP or IP:PORT, e.g. 127.0.0.1:5353`);
      }
    }
    const ctx: DnsContext = { domain, config, resolver, servers, timeoutMs };
    const reports: RecordReport[] = [];
    for (const kind of RECORD_KINDS) reports.push(...(await kind.check(ctx)));

    const receives = receivingHosts(config, domain).length > 0;
    const lines = [
      `; ${domain}: records for the mail ${serverHostname(config)} sends${receives ? ' and receives' : ''} (${options.config})`,
      ...(receives
        ? []
        : [`; no mx listener receives for ${domain} (its localDomains), so no MX record is needed here`]),
      `; checked against ${servers ? servers.join(', ') : "the system's name servers"}`,
    ];
    for (const report of reports) {
      const status = report.status === 'pass' ? 'pass' : report.status.toUpperCase();
      lines.push('', `; ${report.kind} ${status}: ${report.detail}`);
      for (const data of report.publish) lines.push(zoneLine(report.name, report.type, data));
      if (report.file) {
        lines.push(`; ${report.file.url} (Content-Type: ${report.file.contentType}):`);
        for (const line of report.file.body.split(/\r?\n/).filter((l) => l !== '')) lines.push(`;   ${line}`);
      }
    }
    lines.push('', ...tlsPolicyLines(config, domain));
    const passed = reports.filter((r) => r.status === 'pass').length;
    lines.push(
      '',
      passed === reports.length
        ? `; all ${reports.length} records pass`
        : `; ${passed} of ${reports.length} records pass: publish the ones marked MISSING, correct the ones marked FAIL`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
    return passed === reports.length ? 0 : 1;
  });
}
