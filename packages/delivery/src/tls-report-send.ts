// TLS-RPT (RFC 8460) daily reports: for each policy domain with outcomes on a UTC day, the JSON
// aggregate report (§4), gzipped, to every `rua` of the domain's `_smtp._tls` TXT record (§3):
// mailto: as a multipart/report message through Tern's own queue (§5.3), https: by POST (§5.4).
// Several nodes may run the schedule: a claim in the shared store lets one send each domain-day.
import { randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { gzipSync } from 'node:zlib';
import { type Logger, rfc5322Date, silentLogger } from '@tern/plugin-api';
import { memorySource } from '@tern/plugin-api/host';
import { dayBefore, type IncomingMessage, type TlsStore } from '@tern/queue';
import type { MxResolver } from './mx.js';
import { buildTlsReport, type TlsReport, utcDay } from './tls-report.js';

/** Where a domain wants its reports: the `rua` URIs of its one `v=TLSRPTv1` record. */
export type TlsRptRecord =
  | { readonly ok: true; readonly rua: readonly string[] }
  | { readonly ok: false; readonly reason: string };

/** Parses the TXT records at `_smtp._tls.DOMAIN` (RFC 8460 §3); only mailto: and https: URIs are kept. */
export function parseTlsRptRecord(records: readonly string[]): TlsRptRecord {
  const found = records.filter((r) => /^v=TLSRPTv1\s*;/.test(r));
  if (found.length !== 1) return { ok: false, reason: `${found.length} TXT records start with v=TLSRPTv1;` };
  const fields = new Map<string, string>();
  for (const part of (found[0] as string).split(';').slice(1)) {
    const field = part.trim();
    if (field === '') continue;
    const eq = field.indexOf('=');
    if (eq <= 0) return { ok: false, reason: `malformed field ${JSON.stringify(field.slice(0, 60))}` };
    const key = field.slice(0, eq).trim().toLowerCase();
    if (!fields.has(key)) fields.set(key, field.slice(eq + 1).trim());
  }
  const rua = (fields.get('rua') ?? '')
    .split(',')
    .map((uri) => uri.trim())
    .filter((uri) => /^(mailto:[^@\s]+@[^@\s]+|https:\/\/\S+)$/i.test(uri));
  if (rua.length === 0) return { ok: false, reason: 'no rua with a mailto: or https: URI' };
  return { ok: true, rua };
}

export interface TlsReportSenderOptions {
  readonly store: TlsStore;
  readonly resolver: Pick<MxResolver, 'resolveTxt'>;
  /** Tern's own queue: mailto: reports are messages like any other. */
  readonly enqueue: (message: IncomingMessage) => Promise<string>;
  /** Our host name: the report's submitter (TLS-Report-Submitter, file name). */
  readonly hostname: string;
  /** organization-name of the reports. */
  readonly organizationName: string;
  /** contact-info of the reports: an address or URL people may write to. */
  readonly contactInfo: string;
  /** From address and return path of mailed reports (default `noreply-smtp-tls-reporting@<hostname>`). */
  readonly from?: string;
  /** UTC time of day, `HH:MM`, from which the previous day's reports go out (default `01:00`). */
  readonly sendAt?: string;
  /** How often the schedule looks for reports due (default 10 minutes). */
  readonly checkIntervalMs?: number;
  /** CAs trusted for https: report URIs (default: Node's bundled roots). */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  /** A POST, connect to answer (default 30 000 ms). */
  readonly timeoutMs?: number;
  readonly logger?: Logger;
  readonly now?: () => number;
}

/** What would be sent for one domain and day (`tern tls-report show`). */
export interface PreparedTlsReport {
  readonly domain: string;
  readonly day: string;
  readonly report: TlsReport;
  readonly filename: string;
  readonly gzip: Buffer;
  /** The rua URIs, or why there are none. */
  readonly rua: TlsRptRecord;
}

/** What happened to one domain's report. */
export interface TlsReportDelivery {
  readonly domain: string;
  /** `claimed-elsewhere`: another node sends it; `empty`: no outcomes. */
  readonly status: 'sent' | 'failed' | 'no-rua' | 'claimed-elsewhere' | 'empty';
  /** Per URI: the queue id of a mailed report, `HTTP 2xx`, or the problem. */
  readonly results: readonly { readonly uri: string; readonly ok: boolean; readonly detail: string }[];
}

const CLAIM_MS = 3 * 86_400_000;
/** A report no URI took is tried again after this long. */
const RETRY_MS = 3600_000;
/** Days back the schedule still sends (yesterday, and the day before for a node that was down). */
const CATCH_UP_DAYS = 2;

export class TlsReportSender {
  readonly #options: TlsReportSenderOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #owner = `${randomBytes(6).toString('hex')}`;
  readonly #sendAtMs: number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> = Promise.resolve();

  constructor(options: TlsReportSenderOptions) {
    this.#options = options;
    this.#log = options.logger ?? silentLogger;
    this.#now = options.now ?? Date.now;
    const at = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(options.sendAt ?? '01:00');
    if (!at) throw new TypeError(`delivery.tlsReports.sendAt: expected HH:MM (UTC), got ${options.sendAt}`);
    this.#sendAtMs = (Number(at[1]) * 60 + Number(at[2])) * 60_000;
  }

  /** The report of `domain` for `day` as it would be sent, with where it would go. */
  async prepare(domain: string, day: string): Promise<PreparedTlsReport> {
    const name = domain.toLowerCase().replace(/\.$/, '');
    const { hostname } = this.#options;
    const counts = await this.#options.store.tlsCounts(day, name);
    const report = buildTlsReport({
      day,
      counts,
      organizationName: this.#options.organizationName,
      contactInfo: this.#options.contactInfo,
      reportId: `${day}T00:00:00Z_${name}_${hostname}`,
    });
    const start = Date.parse(report['date-range']['start-datetime']) / 1000;
    const end = Date.parse(report['date-range']['end-datetime']) / 1000;
    const txt = await this.#options.resolver.resolveTxt(`_smtp._tls.${name}`);
    return {
      domain: name,
      day,
      report,
      // RFC 8460 §5.1: sender!policy-domain!begin!end.json.gz
      filename: `${hostname}!${name}!${start}!${end}.json.gz`,
      gzip: gzipSync(JSON.stringify(report)),
      rua: txt.ok
        ? parseTlsRptRecord(txt.value)
        : { ok: false, reason: `no _smtp._tls.${name} TXT record (${txt.code})` },
    };
  }

  /** Sends the reports of every domain with outcomes on `day` that no other node has claimed. */
  async sendDay(day: string): Promise<TlsReportDelivery[]> {
    const domains = await this.#options.store.tlsDomains(day);
    const done: TlsReportDelivery[] = [];
    for (const domain of domains) done.push(await this.#sendOne(domain, day));
    return done;
  }

  async #sendOne(domain: string, day: string): Promise<TlsReportDelivery> {
    const { store } = this.#options;
    const claim = `tlsrpt-sent:${day}:${domain}`;
    if (!(await store.claim(claim, this.#owner, CLAIM_MS)))
      return { domain, status: 'claimed-elsewhere', results: [] };
    try {
      const prepared = await this.prepare(domain, day);
      if (prepared.report.policies.length === 0) return { domain, status: 'empty', results: [] };
      if (!prepared.rua.ok) {
        this.#log.info(
          { domain, day, reason: prepared.rua.reason },
          'TLS report not sent: the domain asks for none',
        );
        return { domain, status: 'no-rua', results: [] };
      }
      const results = [];
      for (const uri of prepared.rua.rua) results.push({ uri, ...(await this.#deliver(uri, prepared)) });
      const sent = results.some((r) => r.ok);
      this.#log.info({ domain, day, results }, sent ? 'TLS report sent' : 'TLS report not sent');
      // Not sent anywhere: tried again later (by whichever node claims it first).
      if (!sent) await store.set(claim, 'retry', RETRY_MS);
      return { domain, status: sent ? 'sent' : 'failed', results };
    } catch (error) {
      await store.release(claim, this.#owner).catch(() => {});
      throw error;
    }
  }

  async #deliver(uri: string, prepared: PreparedTlsReport): Promise<{ ok: boolean; detail: string }> {
    try {
      if (/^mailto:/i.test(uri)) {
        const to = decodeURIComponent(uri.slice('mailto:'.length).split('?')[0] as string);
        const id = await this.#options.enqueue(this.reportMessage(prepared, to));
        return { ok: true, detail: `queued as ${id}` };
      }
      return await this.#post(uri, prepared.gzip);
    } catch (error) {
      return { ok: false, detail: (error as Error).message };
    }
  }

  /** The report as a message (RFC 8460 §5.3): multipart/report; report-type="tlsrpt". */
  reportMessage(prepared: PreparedTlsReport, to: string): IncomingMessage {
    const { hostname } = this.#options;
    const from = this.#options.from ?? `noreply-smtp-tls-reporting@${hostname}`;
    const now = new Date(this.#now());
    const boundary = `${randomBytes(12).toString('hex')}_tlsrpt`;
    const reportId = prepared.report['report-id'];
    const messageId = `${randomBytes(8).toString('hex')}.tlsrpt@${hostname}`;
    const base64 = prepared.gzip.toString('base64').replace(/.{76}/g, '$&\r\n');
    const text = [
      `From: <${from}>`,
      `To: <${to}>`,
      `Subject: Report Domain: ${prepared.domain} Submitter: ${hostname} Report-ID: <${reportId}>`,
      `Date: ${rfc5322Date(now)}`,
      `Message-ID: <${messageId}>`,
      `TLS-Report-Domain: ${prepared.domain}`,
      `TLS-Report-Submitter: ${hostname}`,
      'Auto-Submitted: auto-generated',
      'MIME-Version: 1.0',
      `Content-Type: multipart/report; report-type="tlsrpt";\r\n\tboundary="${boundary}"`,
      '',
      'This is a MIME-encapsulated message.',
      '',
      `--${boundary}`,
      'Content-Type: text/plain; charset=us-ascii',
      '',
      `This is an aggregate TLS report (RFC 8460) from ${hostname} for ${prepared.domain},`,
      `covering ${prepared.day} (UTC). The report is attached as ${prepared.filename}.`,
      '',
      `--${boundary}`,
      'Content-Type: application/tlsrpt+gzip',
      'Content-Transfer-Encoding: base64',
      `Content-Disposition: attachment; filename="${prepared.filename}"`,
      '',
      base64.replace(/\r\n$/, ''),
      '',
      `--${boundary}--`,
      '',
    ].join('\r\n');
    return {
      envelope: { mailFrom: from, recipients: [{ address: to }] },
      content: memorySource([Buffer.from(text, 'utf8')]),
      receivedAt: now.getTime(),
      messageId: `<${messageId}>`,
      source: { listener: 'tls-report' },
    };
  }

  /** RFC 8460 §5.4: POST with Content-Type application/tlsrpt+gzip; a 2xx answer is success. */
  #post(uri: string, body: Buffer): Promise<{ ok: boolean; detail: string }> {
    const timeoutMs = this.#options.timeoutMs ?? 30_000;
    return new Promise((resolve) => {
      let settled = false;
      const finish = (ok: boolean, detail: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        resolve({ ok, detail });
      };
      const req = request(uri, {
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/tlsrpt+gzip', 'content-length': body.length },
        ...(this.#options.ca !== undefined ? { ca: this.#options.ca as (string | Buffer)[] } : {}),
      });
      const timer = setTimeout(() => finish(false, `no answer within ${timeoutMs} ms`), timeoutMs);
      req.once('error', (error) => finish(false, error.message));
      req.once('response', (response) => {
        const status = response.statusCode ?? 0;
        response.resume();
        finish(status >= 200 && status < 300, `HTTP ${status}`);
      });
      req.end(body);
    });
  }

  /** The days whose reports are due now: past `sendAt`, yesterday and the day before. */
  dueDays(): string[] {
    const now = this.#now();
    const today = utcDay(now);
    const sinceMidnight = now - Date.parse(`${today}T00:00:00Z`);
    const days = [];
    for (let back = 1; back <= CATCH_UP_DAYS; back++) days.push(dayBefore(today, back));
    // Before sendAt, yesterday's outcomes may still be arriving from slower nodes.
    return sinceMidnight >= this.#sendAtMs ? days : days.slice(1);
  }

  /** Sends what is due now (the schedule's step; tests call it directly). */
  async sendDue(): Promise<TlsReportDelivery[]> {
    const done: TlsReportDelivery[] = [];
    const days = this.dueDays();
    for (const day of days) done.push(...(await this.sendDay(day)));
    const count = (status: TlsReportDelivery['status']): number =>
      done.filter((d) => d.status === status).length;
    this.#log.debug(
      { days, sent: count('sent'), failed: count('failed'), elsewhere: count('claimed-elsewhere') },
      'TLS reports checked',
    );
    return done;
  }

  /** Runs the schedule: a check now and every checkIntervalMs. */
  start(): void {
    const every = this.#options.checkIntervalMs ?? 600_000;
    const tick = (): void => {
      this.#running = this.sendDue().catch((error: unknown) =>
        this.#log.warn({ err: error }, 'TLS reports: the daily run failed; trying again later'),
      );
      void this.#running.then(() => {
        if (this.#timer !== undefined) this.#timer = setTimeout(tick, every);
      });
    };
    this.#timer = setTimeout(tick, 0);
  }

  /** Stops the schedule and waits for a run under way. */
  async close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }
}
