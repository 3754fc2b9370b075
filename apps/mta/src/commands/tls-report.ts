// tern tls-report show DOMAIN --config FILE [--date DAY]: the TLS-RPT (RFC 8460) report the daily
// run sends for DOMAIN, built from the counters in the queue's store: the JSON on stdout, where it
// would go (the domain's `_smtp._tls` rua) and the file name on stderr. The store is read directly
// (Redis at any time, the embedded store while tern is stopped), else through a running tern's
// admin API when the embedded store is in use and the config has an admin section.
import { utcDay } from '@tern/delivery';
import { checkDay, dayBefore } from '@tern/queue';
import { type ResolvedConfig, serverHostname, withConfig } from '../config.js';
import { createLogger } from '../log.js';
import { openQueue } from '../mta.js';
import { AdminClient, adminTarget, UsageProblem } from '../ops/admin-client.js';
import { type TlsReportView, tlsReportSender, tlsReportView } from '../outbound-tls.js';

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
  const view = await withConfig(options.config, async (config) => {
    if (!config.delivery?.tlsReports || config.delivery.tlsReports.enabled === false) {
      process.stderr.write(
        `tern tls-report show: TLS reports are off in ${options.config}: set delivery.tlsReports: { organizationName, contactInfo } to count outcomes and send reports\n`,
      );
      return undefined;
    }
    return fromStore(config, domain, day);
  });
  if (view === undefined) return 1;
  const shown =
    view === 'in-use'
      ? await new AdminClient(await adminTarget({ config: options.config })).get<TlsReportView>(
          `/api/tls-reports/${encodeURIComponent(domain)}?date=${day}`,
        )
      : view;
  print(shown, domain, day);
  return 0;
}

/** The report from the store itself; 'in-use' when a running tern holds the embedded store and has an admin API to ask. */
async function fromStore(
  config: ResolvedConfig,
  domain: string,
  day: string,
): Promise<TlsReportView | 'in-use'> {
  const logger = createLogger(config.log?.level ?? 'warn');
  let queue: Awaited<ReturnType<typeof openQueue>>;
  try {
    queue = await openQueue(config, logger);
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'TERN_ERR_QUEUE_STORE_LOCKED') throw error;
    if (config.admin) return 'in-use';
    throw new Error(
      `${(error as Error).message}. Stop tern, or give the config an admin section so this command can ask the running tern`,
    );
  }
  try {
    const sender = tlsReportSender(config, serverHostname(config), queue, logger);
    if (!sender) throw new Error(`the ${queue.kind} queue has no TLS store`);
    return tlsReportView(await sender.prepare(domain, day));
  } finally {
    await queue.close();
  }
}

function print(view: TlsReportView, domain: string, day: string): void {
  process.stdout.write(`${JSON.stringify(view.report, null, 2)}\n`);
  const policies = view.report.policies;
  const sessions = policies.reduce(
    (n, p) => n + p.summary['total-successful-session-count'] + p.summary['total-failure-session-count'],
    0,
  );
  const where =
    sessions === 0
      ? 'would not be sent: no outcomes'
      : view.rua.ok
        ? `would be sent to ${view.rua.rua.join(', ')}`
        : `would not be sent: ${view.rua.reason}`;
  process.stderr.write(
    `${domain} on ${day}: ${sessions} session${sessions === 1 ? '' : 's'} in ${policies.length} polic${policies.length === 1 ? 'y' : 'ies'}; ${view.filename} (${view.gzipBytes} bytes gzipped) ${where}\n`,
  );
}
