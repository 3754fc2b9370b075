// Asynchronous bounces and complaints. Outbound mail carries a signed VERP return path at the bounce
// domain (packages/delivery/src/return-path.ts); what comes back there is taken in like any local
// mail (250 only once it is queued), and the delivery worker reads it instead of delivering it:
// a DSN's failed recipients and an ARF complaint are matched to the original message and
// recipient, recorded in that message's timeline, fed to the suppression list and emitted as
// platform events (bounced, source 'dsn'; complained, source 'arf').
//
// At RCPT, as Postal does for a return-path token it does not know: an address at the bounce
// domain whose signature does not check out gets 550 5.1.1, so a forged report changes nothing
// and is not even queued. Only postmaster@ and abuse@ (RFC 2142; feedback loops are often
// registered to abuse@) are taken unsigned; their reports count only when the VERP address they
// carry (the returned message's Return-Path, ARF's Original-Mail-From) checks out.
import type { Readable } from 'node:stream';
import { type ReturnPathOptions, recipientTag, verifyReturnPath } from '@tern/delivery';
import {
  type BounceCategory,
  definePlugin,
  type Logger,
  type PlatformEvent,
  type Plugin,
  reject,
  type SmtpReply,
} from '@tern/plugin-api';
import {
  type BounceClassifier,
  clip,
  type DeliveryJob,
  type DeliveryReport,
  isQueueOperations,
  MAX_SUPPRESSION_REASON,
  messageTagScopes,
  type QueueBackend,
  type Suppression,
  type SuppressionStore,
  suppressionScopes,
  type TimelineEvent,
} from '@tern/queue';
import { Counter, type Registry } from 'prom-client';
import { ConfigError, type ResolvedConfig, readConfigFile } from '../config.js';
import type { PlatformEvents } from '../events.js';
import type { SuppressionSettings } from '../suppression.js';
import { messageLabels, suppressionEvent } from '../webhooks/producers.js';
import { type FeedbackReport, parseFeedback } from './report.js';

export const FEEDBACK_PLUGIN_NAME = 'tern-feedback';

/** Largest part of a report read unless the config says otherwise. */
export const DEFAULT_MAX_REPORT_BYTES = 256 * 1024;

/** Unsigned local parts the bounce domain takes: RFC 2142's, where feedback loops send. */
const ROLE_ADDRESSES: ReadonlySet<string> = new Set(['postmaster', 'abuse']);

/** What `bounces.returnPath` resolves to. */
export interface FeedbackSettings {
  readonly returnPath: ReturnPathOptions;
  /** Sign outbound return paths (false: reports are still read at the domain). */
  readonly sign: boolean;
  readonly maxReportBytes: number;
}

/** The config's `bounces.returnPath`, its secret read; undefined when there is none. Throws ConfigError. */
export function feedbackSettings(config: ResolvedConfig): FeedbackSettings | undefined {
  const given = config.bounces?.returnPath;
  if (given === undefined) return undefined;
  let secret = given.secret;
  if (secret === undefined) {
    const file = given.secretFile as string;
    secret = readConfigFile(config, file, 'config.bounces.returnPath.secretFile').trim();
    if (secret.length < 16) {
      throw new ConfigError('config', [
        `config.bounces.returnPath.secretFile: ${file} holds ${secret.length === 0 ? 'no secret' : 'a secret shorter than 16 characters'}: write one, e.g. openssl rand -hex 24 > ${file}`,
      ]);
    }
  }
  return {
    returnPath: { domain: given.domain.toLowerCase(), secret },
    sign: given.enabled ?? true,
    maxReportBytes: given.maxReportBytes ?? DEFAULT_MAX_REPORT_BYTES,
  };
}

/** The listener's local domains with the bounce domain added (mail to it is taken in, never relayed). */
export function withBounceDomain(
  domains: readonly string[],
  settings: FeedbackSettings | undefined,
): string[] {
  const domain = settings?.returnPath.domain;
  return domain === undefined || domains.some((d) => d.toLowerCase() === domain)
    ? [...domains]
    : [...domains, domain];
}

function domainOfAddress(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

/** The internal plugin that refuses forged and unsigned addresses at the bounce domain at RCPT. */
export function feedbackPlugin(settings: () => FeedbackSettings | undefined, logger: Logger): Plugin {
  const log = logger.child({ component: 'feedback' });
  return definePlugin({
    name: FEEDBACK_PLUGIN_NAME,
    enforce: 'pre',
    rcptTo(ctx) {
      const current = settings();
      const address = ctx.recipient.address;
      if (current === undefined || domainOfAddress(address) !== current.returnPath.domain) return;
      const local = address.slice(0, address.lastIndexOf('@')).toLowerCase();
      if (ROLE_ADDRESSES.has(local)) return;
      if (verifyReturnPath(current.returnPath, address) !== undefined) return;
      log.info(
        { recipient: address, sender: ctx.transaction.mailFrom },
        'refused an unsigned or forged return path',
      );
      return reject(550, '5.1.1', `<${address}>: no such return path`);
    },
  });
}

export interface FeedbackProcessorOptions {
  readonly queue: QueueBackend;
  readonly settings: () => FeedbackSettings | undefined;
  readonly suppression: () => SuppressionSettings;
  readonly classifier: () => BounceClassifier;
  readonly events: PlatformEvents;
  readonly logger: Logger;
  /** Where `tern_feedback_reports_total` is registered (the admin server's /metrics); none: not counted. */
  readonly registry?: Registry;
}

/** What became of a report at the bounce domain: the `result` label. */
type ReportResult = 'matched' | 'unmatched' | 'unreadable' | 'deferred';

/** A report's effect on one recipient of one original message. */
interface Finding {
  readonly queueId: string;
  readonly recipient: string;
  readonly mailFrom: string;
  readonly event: TimelineEvent;
  readonly platform: PlatformEvent;
  /** Entries the report adds: one for the sender domain, or one per tag scope of the message. */
  readonly suppressions: readonly Suppression[];
}

/** The original message a VERP address names: its sender, and the recipient the tag stands for. */
interface Original {
  readonly queueId: string;
  readonly mailFrom: string;
  readonly recipient: string;
  /** The message's tags and API key (HTTP injection), for webhook filters. */
  readonly tags?: string[];
  readonly apiKey?: string;
}

/** Reads the report messages that reach the bounce domain, in place of delivering them. */
export class FeedbackProcessor {
  readonly #o: FeedbackProcessorOptions;
  readonly #log: Logger;
  readonly #reports: Counter<'kind' | 'result'> | undefined;

  constructor(options: FeedbackProcessorOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'feedback' });
    this.#reports =
      options.registry === undefined
        ? undefined
        : new Counter({
            name: 'tern_feedback_reports_total',
            help: 'Reports read at the bounce domain by kind (dsn, arf, plain; unknown when unreadable) and result: matched (recorded for a message), unmatched (named no message we know: dropped), unreadable (dropped), deferred (the store could not take it: read again later)',
            labelNames: ['kind', 'result'],
            registers: [options.registry],
          });
  }

  #count(kind: FeedbackReport['kind'] | 'unknown', result: ReportResult): void {
    this.#reports?.inc({ kind, result });
  }

  /** Whether a job is for the bounce domain (and so for this processor). */
  handles(job: DeliveryJob): boolean {
    const domain = this.#o.settings()?.returnPath.domain;
    return domain !== undefined && job.domain.toLowerCase() === domain;
  }

  /**
   * Reads the report of one job. Every recipient is "delivered" (a report that matches nothing is
   * read and dropped, never bounced); only a store that cannot be written defers it, to be read again.
   */
  async process(job: DeliveryJob, message: () => Promise<Readable>): Promise<DeliveryReport> {
    const settings = this.#o.settings();
    const log = this.#log.child({ queueId: job.queueId });
    const done = (reply: SmtpReply, result: 'delivered' | 'deferred' = 'delivered'): DeliveryReport => ({
      recipients: job.recipients.map((r) => ({ address: r.address, result, reply })),
    });
    if (settings === undefined)
      return done({ code: 451, enhanced: '4.3.0', text: 'no bounce domain' }, 'deferred');
    let kind: FeedbackReport['kind'] | 'unknown' = 'unknown';
    try {
      const raw = await readBounded(await message(), settings.maxReportBytes);
      let report: FeedbackReport;
      try {
        report = await parseFeedback(raw);
      } catch (error) {
        log.info({ err: String(error) }, 'report at the bounce domain could not be read; dropped');
        this.#count(kind, 'unreadable');
        return done({ code: 250, enhanced: '2.0.0', text: 'report unreadable; dropped' });
      }
      kind = report.kind;
      const findings = await this.#findings(job, report, settings);
      if (findings.length === 0) {
        log.info({ kind: report.kind }, 'report at the bounce domain matched no message; dropped');
        this.#count(kind, 'unmatched');
        return done({ code: 250, enhanced: '2.0.0', text: `${report.kind} report matched nothing; dropped` });
      }
      await this.#apply(findings, log);
      this.#count(kind, 'matched');
      return done({
        code: 250,
        enhanced: '2.0.0',
        text: `${report.kind} report read: ${findings.length} recipient(s) of ${new Set(findings.map((f) => f.queueId)).size} message(s)`,
      });
    } catch (error) {
      log.warn({ err: error }, 'could not record a report at the bounce domain; it will be read again');
      this.#count(kind, 'deferred');
      return done({ code: 451, enhanced: '4.3.0', text: 'report not recorded yet' }, 'deferred');
    }
  }

  /** The VERP addresses a report names (the recipients it was sent to first), verified, matched to messages. */
  async #originals(
    candidates: readonly (string | undefined)[],
    settings: FeedbackSettings,
  ): Promise<Original[]> {
    const seen = new Set<string>();
    const found: Original[] = [];
    for (const address of candidates) {
      if (address === undefined || found.length >= 100) continue;
      const token = verifyReturnPath(settings.returnPath, address);
      if (token === undefined) continue;
      const key = `${token.queueId}.${token.tag}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const queue = this.#o.queue;
      if (!isQueueOperations(queue)) continue;
      const details = await queue.details(token.queueId);
      const recipient = details?.envelope?.recipients.find(
        (r) => recipientTag(settings.returnPath.secret, r.address) === token.tag,
      )?.address;
      if (details === null || details?.envelope === undefined || recipient === undefined) continue;
      found.push({
        queueId: token.queueId,
        mailFrom: details.envelope.mailFrom,
        recipient,
        ...messageLabels(details.envelope),
      });
    }
    return found;
  }

  async #findings(job: DeliveryJob, report: FeedbackReport, settings: FeedbackSettings): Promise<Finding[]> {
    const to = job.recipients.map((r) => r.address);
    const now = Date.now();
    if (report.kind === 'arf') {
      const originals = await this.#originals(
        [...to, report.originalMailFrom, report.originalReturnPath],
        settings,
      );
      return originals.map((o) => this.#complaint(o, report, job.queueId, now));
    }
    const originals = await this.#originals(
      [...to, report.kind === 'dsn' ? report.originalReturnPath : undefined],
      settings,
    );
    const findings: Finding[] = [];
    for (const original of originals) {
      const finding =
        report.kind === 'dsn'
          ? this.#dsnBounce(original, report, job.queueId, now)
          : this.#plainBounce(original, report.text, job.queueId, now);
      if (finding) findings.push(finding);
    }
    return findings;
  }

  #complaint(
    o: Original,
    report: Extract<FeedbackReport, { kind: 'arf' }>,
    reportId: string,
    now: number,
  ): Finding {
    const suppressing = this.#o.suppression();
    // A complaint about mail of a stream (a tag scope) stops that stream only: a newsletter
    // complaint must not stop password resets. Other mail: the sender domain's list.
    const tagScopes = messageTagScopes(o.tags, suppressing.tagScopes);
    const sender = senderScope(o.mailFrom);
    const scopes = tagScopes.length > 0 ? tagScopes : sender === undefined ? [] : [sender];
    const reason = `complaint (${report.feedbackType})${report.userAgent ? ` via ${report.userAgent}` : ''}`;
    const expire = suppressing.expireAfterMs;
    return {
      ...o,
      event: {
        type: 'complaint',
        at: now,
        recipient: o.recipient,
        feedbackType: clip(report.feedbackType),
        ...(report.userAgent ? { userAgent: clip(report.userAgent) } : {}),
        report: reportId,
      },
      platform: {
        ...this.#platformBase('complained', o, now),
        source: 'arf',
        text: clip(reason),
      },
      // Complaints always suppress (not-spam is a report that it was wanted: no entry).
      suppressions:
        report.feedbackType === 'not-spam'
          ? []
          : scopes.map((scope) => ({
              scope,
              address: o.recipient.toLowerCase(),
              source: 'complaint' as const,
              reason: reason.slice(0, MAX_SUPPRESSION_REASON),
              createdAt: now,
              ...(expire === undefined ? {} : { expiresAt: now + expire }),
              queueId: o.queueId,
            })),
    };
  }

  #dsnBounce(
    o: Original,
    report: Extract<FeedbackReport, { kind: 'dsn' }>,
    reportId: string,
    now: number,
  ): Finding | undefined {
    const lower = o.recipient.toLowerCase();
    // The block about our recipient; a DSN about one recipient (the VERP case) may name it differently.
    const block =
      report.recipients.find(
        (r) => r.finalRecipient?.toLowerCase() === lower || r.originalRecipient?.toLowerCase() === lower,
      ) ?? (report.recipients.length === 1 ? report.recipients[0] : undefined);
    if (block === undefined) return undefined;
    const action = block.action ?? 'unknown';
    const reply = replyOf(block.status, block.diagnostic, action);
    // Only a failure is a bounce; a delayed or delivered notice is recorded, nothing more.
    const failed = action === 'failed';
    const category = reply.code >= 400 ? this.#o.classifier().classify(reply) : undefined;
    const reportingMta = block.remoteMta ?? report.reportingMta;
    return this.#bounce(o, now, reply, category, failed, {
      type: 'async-bounce',
      at: now,
      recipient: o.recipient,
      action: clip(action),
      ...(block.status ? { status: block.status } : {}),
      ...(block.diagnostic ? { diagnostic: clip(block.diagnostic) } : {}),
      ...(reportingMta ? { reportingMta: clip(reportingMta) } : {}),
      ...(category ? { category } : {}),
      format: 'dsn',
      report: reportId,
    });
  }

  #plainBounce(o: Original, text: string | undefined, reportId: string, now: number): Finding {
    // Not a DSN: the address it came to says which message and recipient; the text says why, if anything does.
    const found = text === undefined ? undefined : /\b([45])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})?/.exec(text);
    const status = found?.[2] ?? (found ? `${found[1]}.0.0` : '5.0.0');
    const reply = replyOf(status, text, 'failed');
    const category = this.#o.classifier().classify(reply);
    return this.#bounce(o, now, reply, category, true, {
      type: 'async-bounce',
      at: now,
      recipient: o.recipient,
      action: 'failed',
      ...(text ? { diagnostic: clip(text) } : {}),
      category,
      format: 'plain',
      report: reportId,
    });
  }

  #bounce(
    o: Original,
    now: number,
    reply: SmtpReply,
    category: BounceCategory | undefined,
    failed: boolean,
    event: TimelineEvent,
  ): Finding {
    // A hard bounce suppresses for the sender domain, tagged or not: a mailbox that does not exist
    // does not exist for any stream.
    const scope = senderScope(o.mailFrom);
    const suppressing = this.#o.suppression();
    const suppress =
      failed &&
      suppressing.enabled &&
      scope !== undefined &&
      category !== undefined &&
      suppressing.categories.has(category);
    const expire = suppressing.expireAfterMs;
    return {
      ...o,
      event,
      platform: {
        ...this.#platformBase(failed ? 'bounced' : 'deferred', o, now),
        source: 'dsn',
        code: reply.code,
        enhanced: reply.enhanced,
        text: clip(reply.text),
        ...(category ? { category } : {}),
      },
      suppressions: suppress
        ? [
            {
              scope,
              address: o.recipient.toLowerCase(),
              source: 'bounce',
              reason: `${reply.code} ${reply.enhanced} ${reply.text}`.slice(0, MAX_SUPPRESSION_REASON),
              ...(category ? { category } : {}),
              createdAt: now,
              ...(expire === undefined ? {} : { expiresAt: now + expire }),
              queueId: o.queueId,
            },
          ]
        : [],
    };
  }

  #platformBase(type: PlatformEvent['type'], o: Original, now: number): PlatformEvent {
    const senderDomain = o.mailFrom.includes('@') ? domainOfAddress(o.mailFrom) : undefined;
    return {
      type,
      at: now,
      queueId: o.queueId,
      recipient: o.recipient,
      mailFrom: o.mailFrom,
      ...(senderDomain ? { senderDomain } : {}),
      ...(o.tags ? { tags: o.tags } : {}),
      ...(o.apiKey ? { apiKey: o.apiKey } : {}),
    };
  }

  /** Timeline and suppression list first (a failure defers the report, to be read again), then events. */
  async #apply(findings: readonly Finding[], log: Logger): Promise<void> {
    const queue = this.#o.queue;
    if (!isQueueOperations(queue)) return;
    for (const f of findings) await queue.appendTimeline(f.queueId, [f.event]);
    const store: SuppressionStore | undefined = queue.suppressions;
    const enabled = this.#o.suppression().enabled;
    // Complaints suppress even with the automatic list off; hard bounces only with it on.
    const suppressing =
      store === undefined
        ? []
        : findings.flatMap((f) =>
            f.suppressions
              .filter((e) => enabled || e.source === 'complaint')
              .map((entry) => ({ finding: f, entry })),
          );
    if (suppressing.length > 0) await store?.add(suppressing.map((s) => s.entry));
    for (const f of findings) {
      log.info(
        {
          original: f.queueId,
          recipient: f.recipient,
          event: f.event.type,
          ...(f.suppressions.length > 0
            ? { suppressed: f.suppressions.map((e) => e.scope), category: f.suppressions[0]?.category }
            : {}),
        },
        f.event.type === 'complaint' ? 'complaint recorded' : 'later bounce recorded',
      );
      this.#o.events.emit(f.platform);
    }
    // As a hard bounce at delivery does: a `suppressed` event after the bounce or complaint.
    for (const { finding, entry } of suppressing) {
      const { mailFrom, senderDomain, tags, apiKey, source } = finding.platform;
      this.#o.events.emit({
        ...suppressionEvent(entry, source ?? 'dsn', Date.now()),
        ...(mailFrom === undefined ? {} : { mailFrom }),
        ...(senderDomain === undefined ? {} : { senderDomain }),
        ...(tags === undefined ? {} : { tags }),
        ...(apiKey === undefined ? {} : { apiKey }),
      });
    }
  }
}

/** The suppression scope of a sender (its domain), or undefined for `<>` and addresses without one. */
function senderScope(mailFrom: string): string | undefined {
  const [scope] = suppressionScopes(mailFrom);
  return scope === undefined || scope === '*' ? undefined : scope;
}

/** A DSN's Status and Diagnostic-Code as a reply the bounce classifier reads. */
function replyOf(status: string | undefined, diagnostic: string | undefined, action: string): SmtpReply {
  const smtp = diagnostic === undefined ? undefined : /^([245]\d\d)[ -]?(.*)$/s.exec(diagnostic);
  const klass = status?.[0] ?? smtp?.[1]?.[0] ?? (action === 'failed' ? '5' : '4');
  const code = smtp?.[1]?.[0] === klass ? Number(smtp[1]) : Number(`${klass}50`);
  const enhanced = status ?? `${klass}.0.0`;
  const text = (smtp?.[2] ?? diagnostic ?? action).replace(/[\r\n]+/g, ' ').trim();
  return { code, enhanced, text: text.startsWith(enhanced) ? text.slice(enhanced.length).trim() : text };
}

/** The first `max` bytes of a stream (a report's useful parts come first); the rest is not read. */
async function readBounded(stream: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const buf = chunk as Buffer;
      chunks.push(buf.subarray(0, max - size));
      size += Math.min(buf.length, max - size);
      if (size >= max) break;
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks);
}
