// tern tls-report show DOMAIN --config FILE [--date DAY]: the TLS-RPT (RFC 8460) report the daily
// run sends for DOMAIN, built from the counters in the queue's store: the JSON on stdout, where it
// would go (the domain's `_smtp._tls` rua) and the file name on stderr.
import { utcDay } from '@tern/delivery';
import { checkDay, dayBefore } from '@tern/queue';
import { serverHostname, withConfig } from '../config.js';
import { createLogger } from '../log.js';
import { openQueue, tlsReportSender } from '../mta.js';
import { UsageProblem } from '../ops/admin-client.js';

export interface TlsReportShowOptions {
  readonly domain: string;
  readonly config: string;
  /** `YYYY-MM-DD`, `today` or `yesterday` (default: yesterday, the day the next run sends). */
  readonly date?: string | undefined;
}

const DOMAIN = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

export async function runTlsReportShow(options: TlsReportShowOptions): Promise<number> {
  const domain = options.domain.toLowerCase().replace(/\.$/, '');
  if (!DOMAIN.test(domain)) throw new UsageProblem(`${options.domain} is not a domain name like example.com`);
  const today = utcDay(Date.now());
  const given = options.date ?? 'yesterday';
  const day = given === 'today' ? today : given === 'yesterday' ? dayBefore(today, 1) : given;
  try {
    checkDay(day);
  } catch {
    throw new UsageProblem(`--date: ${given} is not a day: give YYYY-MM-DD, today or yesterday`);
  }
  return withConfig(options.config, async (config) => {
    if (!config.delivery?.tlsReports || config.delivery.tlsReports.enabled === false) {
      process.stderr.write(
        `tern tls-report show: TLS reports are off in ${options.config}: set delivery.tlsReports: { organizationName, contactInfo } to count outcomes and send reports\n`,
      );
      return 1;
    }
    const logger = createLogger(config.log?.level ?? 'warn');
    const queue = await openQueue(config, logger).catch((error: unknown) => {
      const code = (error as { code?: unknown }).code;
      if (code === 'TERN_ERR_QUEUE_STORE_LOCKED') {
        throw new Error(
          `${(error as Error).message}. The embedded store is read while tern is stopped; with the Redis backend, tern tls-report show works while tern runs`,
        );
      }
      throw error;
    });
    try {
      const sender = tlsReportSender(config, serverHostname(config), queue, logger);
      if (!sender) throw new Error(`the ${queue.kind} queue has no TLS store`);
      const prepared = await sender.prepare(domain, day);
      process.stdout.write(`${JSON.stringify(prepared.report, null, 2)}\n`);
      const sessions = prepared.report.policies.reduce(
        (n, p) => n + p.summary['total-successful-session-count'] + p.summary['total-failure-session-count'],
        0,
      );
      const where = prepared.rua.ok
        ? `would be sent to ${prepared.rua.rua.join(', ')}`
        : `would not be sent: ${prepared.rua.reason}`;
      process.stderr.write(
        `${domain} on ${day}: ${sessions} session${sessions === 1 ? '' : 's'} in ${prepared.report.policies.length} polic${prepared.report.policies.length === 1 ? 'y' : 'ies'}; ${prepared.filename} (${prepared.gzip.length} bytes gzipped) ${sessions === 0 ? 'would not be sent: no outcomes' : where}\n`,
      );
      return 0;
    } finally {
      await queue.close();
    }
  });
}
