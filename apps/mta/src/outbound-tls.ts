// What apps/mta builds from the outbound TLS config for more than one place: delivery's DNS
// options (the deliverer, the TLS-RPT sender), and the TLS-RPT sender itself (the daily schedule,
// the admin API, `tern tls-report show`).
import { type DnsOptions, MxResolver, type PreparedTlsReport, TlsReportSender } from '@tern/delivery';
import type { Logger } from '@tern/plugin-api';
import type { IncomingMessage, QueueBackend } from '@tern/queue';
import { type ResolvedConfig, readConfigFile } from './config.js';

/** `delivery.dns` as the deliverer takes it: `dnssec: [...]` names the validating resolvers. */
export function dnsOptions(config: ResolvedConfig): DnsOptions | undefined {
  const dns = config.delivery?.dns;
  if (!dns) return undefined;
  const { dnssec, servers, ...rest } = dns;
  const resolvers = Array.isArray(dnssec) ? dnssec : servers;
  return {
    ...rest,
    ...(resolvers ? { servers: resolvers } : {}),
    ...(dnssec !== undefined && dnssec !== false ? { dnssec: true } : {}),
  };
}

/** The TLS-RPT sender of `delivery.tlsReports` (unset when reports are off), with the config's DNS and CAs. */
export function tlsReportSender(
  config: ResolvedConfig,
  hostname: string,
  queue: QueueBackend,
  logger: Logger,
  /** Runs the notice hooks on a report before it is queued (DKIM signing); see src/notices.ts. */
  prepare?: (message: IncomingMessage) => Promise<IncomingMessage>,
): TlsReportSender | undefined {
  const reports = config.delivery?.tlsReports;
  if (!reports || reports.enabled === false || !queue.tlsStore) return undefined;
  return new TlsReportSender({
    store: queue.tlsStore,
    resolver: new MxResolver(dnsOptions(config)),
    enqueue: async (message) => queue.enqueue(prepare ? await prepare(message) : message),
    hostname,
    organizationName: reports.organizationName,
    contactInfo: reports.contactInfo,
    logger: logger.child({ component: 'tls-report' }),
    ...(reports.from !== undefined ? { from: reports.from } : {}),
    ...(reports.sendAt !== undefined ? { sendAt: reports.sendAt } : {}),
    ...(reports.checkIntervalMs !== undefined ? { checkIntervalMs: reports.checkIntervalMs } : {}),
    ...(reports.ca !== undefined
      ? { ca: readConfigFile(config, reports.ca, 'config.delivery.tlsReports.ca') }
      : {}),
  });
}

/** A prepared report as the admin API and `tern tls-report show` give it (the gzip as its size). */
export interface TlsReportView {
  readonly report: PreparedTlsReport['report'];
  readonly filename: string;
  readonly gzipBytes: number;
  readonly rua: PreparedTlsReport['rua'];
}

export function tlsReportView(prepared: PreparedTlsReport): TlsReportView {
  return {
    report: prepared.report,
    filename: prepared.filename,
    gzipBytes: prepared.gzip.length,
    rua: prepared.rua,
  };
}
