// `tern queue summary|list|inspect|retry|hold|release|delete|bounce|reroute|suspend|resume|shaping`: the
// operator's commands, over the admin API of a running tern (so they work the same on either
// backend and from any machine that can reach the API). Actions take queue ids or Message-IDs,
// or a filter for bulk actions, whose progress goes to stderr.
import type { ActiveBackoff, WarmupStatus } from '@tern/delivery';
import type { NextHop } from '@tern/plugin-api';
import {
  type DestinationSummary,
  describeHop,
  type MessageDetails,
  type QueuedJob,
  type QueuePage,
  type QueueSummary,
  type TimelineEvent,
} from '@tern/queue';
import { AdminApiError, type AdminClient, UsageProblem, withAdminClient } from './admin-client.js';
import type { QueueOperationName, QueueOperationValues } from './queue-operations.js';

type Values = QueueOperationValues;

/** Runs one operation against the admin API; `ids` are its operands (ids, or the domain). */
export async function runQueueOperation(
  action: QueueOperationName,
  values: QueueOperationValues,
  ids: readonly string[],
): Promise<number> {
  return withAdminClient(values, `tern queue ${action}`, (client) => run(action, client, values, [...ids]));
}

async function run(
  action: QueueOperationName,
  client: AdminClient,
  values: Values,
  ids: string[],
): Promise<number> {
  const out = (text: string): void => {
    process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  };
  const json = (value: unknown): void => out(JSON.stringify(value, null, 2));

  switch (action) {
    case 'summary': {
      const summary = await client.get<QueueSummary>('/api/queue/summary');
      if (values.json) json(summary);
      else out(formatSummary(summary));
      return 0;
    }
    case 'list': {
      const limit = values.all ? Number.POSITIVE_INFINITY : positiveInt(values.limit ?? '100', '--limit');
      const jobs: QueuedJob[] = [];
      for await (const page of pages(client, values, limit)) jobs.push(...page);
      if (values.json) json(jobs);
      else out(jobs.length === 0 ? '(no jobs)' : jobs.map(formatJob).join('\n'));
      return 0;
    }
    case 'inspect': {
      const [id] = ids;
      if (!id || ids.length > 1) throw new UsageProblem('inspect takes one queue id or Message-ID');
      const details = await client.get<MessageDetails>(`/api/messages/${encodeURIComponent(id)}`);
      if (values.json) json(details);
      else out(formatDetails(details));
      return 0;
    }
    case 'shaping': {
      const shaping = await client.get<{ backoffs: ActiveBackoff[]; warmup?: WarmupStatus[] }>(
        '/api/shaping',
      );
      if (values.json) json(shaping);
      else out(formatShaping(shaping.backoffs, shaping.warmup ?? []));
      return 0;
    }
    case 'suspend':
    case 'resume': {
      const [domain] = ids;
      if (!domain || ids.length > 1) throw new UsageProblem(`${action} takes one DOMAIN`);
      const path = `/api/destinations/${encodeURIComponent(domain)}/${action}`;
      if (action === 'resume') {
        const result = await client.post<{ due: number }>(path);
        if (values.json) json(result);
        else out(`${domain}: resumed; ${result.due} job(s) due now`);
        return 0;
      }
      if ((values.for === undefined) === (values.until === undefined)) {
        throw new UsageProblem('suspend needs --for DURATION (like 2h) or --until DATE');
      }
      const result = await client.post<{ suspendedUntil: number }>(
        path,
        values.for !== undefined ? { for: values.for } : { until: values.until },
      );
      if (values.json) json(result);
      else out(`${domain}: suspended until ${new Date(result.suspendedUntil).toISOString()}`);
      return 0;
    }
    default:
      break;
  }

  // Actions on messages: reroute of a destination first, then by ids or by filter.
  if (action === 'reroute' && values.destination !== undefined) {
    if (ids.length > 0) throw new UsageProblem('reroute --destination D takes no ids');
    const hop = parseHop(requireTo(values.to));
    const result = await client.post(`/api/destinations/${encodeURIComponent(values.destination)}/reroute`, {
      hop,
    });
    if (values.json) json(result);
    else
      out(
        `${values.destination}: ${hop === null ? 'reroute cleared' : `every job goes ${describeHop(hop)}`}`,
      );
    return 0;
  }
  const body = bodyOf(action, values);
  // With ids, reroute's --domain picks the job to reroute; otherwise it filters like the others.
  const domainFilter = action === 'reroute' && ids.length > 0 ? undefined : values.domain;
  const hasFilter = [values.state, domainFilter, values.sender, values.recipient].some(
    (v) => v !== undefined,
  );
  if (ids.length > 0 && (hasFilter || values.all)) throw new UsageProblem('give ids or a filter, not both');
  let targets = ids;
  const bulk = ids.length === 0;
  if (bulk) {
    if (!hasFilter && !values.all) {
      throw new UsageProblem(
        `${action} needs queue ids, a filter (--domain, --state, --sender, --recipient) or --all`,
      );
    }
    const seen = new Set<string>();
    for await (const page of pages(client, values, Number.POSITIVE_INFINITY)) {
      for (const job of page) seen.add(job.queueId);
      process.stderr.write(`\r${action}: ${seen.size} message(s) found`);
    }
    process.stderr.write('\n');
    targets = [...seen];
  }
  let failed = 0;
  const results: unknown[] = [];
  for (const [i, id] of targets.entries()) {
    const path = `/api/messages/${encodeURIComponent(id)}`;
    try {
      const result =
        action === 'delete'
          ? await client.delete<Record<string, unknown>>(path)
          : await client.post<Record<string, unknown>>(`${path}/${action}`, body);
      results.push(result);
      if (!values.json && !bulk) out(formatResult(action, id, result));
    } catch (error) {
      if (!(error instanceof AdminApiError) || error.status === 0 || error.status === 401) throw error;
      failed++;
      results.push({ queueId: id, error: error.message });
      process.stderr.write(`${bulk ? '\n' : ''}${id}: ${error.message}\n`);
    }
    if (bulk) process.stderr.write(`\r${action}: ${i + 1}/${targets.length}`);
  }
  if (bulk)
    process.stderr.write(`\n${action}: done, ${targets.length - failed} of ${targets.length} message(s)\n`);
  if (values.json) json(results);
  return failed > 0 ? 1 : 0;
}

async function* pages(client: AdminClient, values: Values, limit: number): AsyncGenerator<QueuedJob[]> {
  const query = new URLSearchParams();
  for (const key of ['state', 'domain', 'sender', 'recipient'] as const) {
    const value = values[key];
    if (value !== undefined) query.set(key, value);
  }
  let left = limit;
  let cursor: string | undefined;
  do {
    query.set('limit', String(Math.min(left, 1000)));
    if (cursor !== undefined) query.set('cursor', cursor);
    const page = await client.get<QueuePage>(`/api/queue?${query}`);
    left -= page.jobs.length;
    cursor = page.cursor;
    if (page.jobs.length > 0) yield [...page.jobs];
  } while (cursor !== undefined && left > 0);
}

function bodyOf(action: QueueOperationName, values: Values): Record<string, unknown> | undefined {
  if (action === 'bounce') return values.reason === undefined ? {} : { reason: values.reason };
  if (action === 'reroute') {
    return { hop: parseHop(requireTo(values.to)), ...(values.destination ? {} : pickDomain(values)) };
  }
  return undefined;
}

/** For reroute of messages, --domain names the one job to reroute (not a filter). */
function pickDomain(values: Values): Record<string, string> {
  return values.domain === undefined ? {} : { domain: values.domain };
}

function requireTo(to: string | undefined): string {
  if (to === undefined)
    throw new UsageProblem('reroute needs --to HOP (smtp:HOST[:PORT], mx:DOMAIN, lmtp:..., none)');
  return to;
}

/** Parses a next hop as written on the command line; null clears a reroute. */
export function parseHop(text: string): NextHop | null {
  if (text === 'none') return null;
  if (text.startsWith('{')) {
    try {
      return JSON.parse(text) as NextHop;
    } catch {
      throw new UsageProblem(`--to: ${text} is not valid JSON`);
    }
  }
  const [type, ...rest] = text.split(':');
  const value = rest.join(':');
  const hostPort = (defaultPort: number): { host: string; port: number } => {
    const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(value);
    if (!match) throw new UsageProblem(`--to: ${text}: expected ${type}:HOST[:PORT]`);
    return {
      host: (match[1] as string).replace(/^\[|\]$/g, ''),
      port: match[2] ? Number(match[2]) : defaultPort,
    };
  };
  switch (type) {
    case 'smtp':
      return { type: 'smtp', ...hostPort(25) };
    case 'mx':
      if (!value) throw new UsageProblem('--to mx:DOMAIN needs a domain');
      return { type: 'mx', domain: value };
    case 'lmtp':
      return value.startsWith('/') ? { type: 'lmtp', path: value } : { type: 'lmtp', ...hostPort(24) };
    case 'maildir':
      if (!value.startsWith('/')) throw new UsageProblem('--to maildir:/PATH needs an absolute path');
      return { type: 'maildir', path: value };
    default:
      throw new UsageProblem(
        `--to: ${text}: use smtp:HOST[:PORT], mx:DOMAIN, lmtp:HOST[:PORT], lmtp:/PATH, maildir:/PATH or none`,
      );
  }
}

function positiveInt(text: string, name: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new UsageProblem(`${name}: ${text} is not a whole number above 0`);
  return value;
}

function iso(ms: number | undefined): string {
  return ms === undefined ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function age(ms: number | undefined): string {
  if (ms === undefined) return '-';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function formatSummary(summary: QueueSummary): string {
  const note = (d: DestinationSummary): string =>
    [
      d.suspendedUntil ? `suspended until ${iso(d.suspendedUntil)}` : '',
      d.nextHop ? `rerouted ${describeHop(d.nextHop)}` : '',
    ]
      .filter(Boolean)
      .join('; ');
  const t = summary.totals;
  const rows = [
    ['DOMAIN', 'TOTAL', 'SCHEDULED', 'ACTIVE', 'HELD', 'DEFERRED', 'OLDEST', ''],
    ...summary.destinations.map((d) => [
      d.domain,
      String(d.total),
      String(d.scheduled),
      String(d.active),
      String(d.held),
      String(d.deferred),
      age(d.oldestCreatedAt),
      note(d),
    ]),
    [
      '(all)',
      String(t.total),
      String(t.scheduled),
      String(t.active),
      String(t.held),
      String(t.deferred),
      '',
      '',
    ],
  ];
  return table(rows);
}

function formatJob(job: QueuedJob): string {
  const recipients = job.recipients.map((r) => r.address).join(', ');
  const next =
    job.state === 'scheduled' && job.nextAttemptAt !== undefined ? ` next ${iso(job.nextAttemptAt)}` : '';
  return `${job.queueId}  ${job.domain}  ${job.state}${next}  attempts ${job.attempts}  age ${age(job.createdAt)}  <${job.mailFrom}> -> ${recipients}`;
}

export function formatDetails(m: MessageDetails): string {
  const lines = [
    `queue id:   ${m.queueId}`,
    `state:      ${m.state}${m.held ? ' (held)' : ''}`,
    ...(m.holdReason ? [`held for:   ${m.holdReason}`] : []),
    ...(m.messageId ? [`message-id: ${m.messageId}`] : []),
    ...(m.envelope
      ? [
          `from:       <${m.envelope.mailFrom}>`,
          `to:         ${m.envelope.recipients.map((r) => r.address).join(', ')}`,
        ]
      : []),
    ...(m.createdAt ? [`received:   ${iso(m.createdAt)} (${age(m.createdAt)} ago)`] : []),
    ...(m.size !== undefined ? [`size:       ${m.size} bytes`] : []),
  ];
  const subject = m.headers?.find(([name]) => name.toLowerCase() === 'subject');
  if (subject) lines.push(`subject:    ${subject[1]}`);
  if (m.jobs.length > 0) lines.push('', 'jobs:');
  for (const job of m.jobs) {
    const next =
      job.nextAttemptAt !== undefined && job.state === 'scheduled' ? `, next ${iso(job.nextAttemptAt)}` : '';
    const hop = job.nextHop ? `, rerouted ${describeHop(job.nextHop)}` : '';
    lines.push(`  ${job.domain}: ${job.state}, ${job.attempts} attempt(s)${next}${hop}`);
    for (const r of job.recipients) {
      const reply = r.lastReply ? `  ${r.lastReply.code} ${r.lastReply.enhanced} ${r.lastReply.text}` : '';
      lines.push(`    ${r.address}: ${r.status}${reply}`);
    }
  }
  lines.push('', 'timeline:');
  for (const event of m.timeline) lines.push(`  ${iso(event.at)}  ${describeEvent(event)}`);
  return lines.join('\n');
}

/** Which TLS policy applied to an attempt, and whether the server was validated (and why not). */
function describeTls(tls: Extract<TimelineEvent, { type: 'attempt' }>['tls']): string {
  if (!tls) return '';
  const applied = tls.applied === tls.policy ? tls.policy : `${tls.policy} as ${tls.applied}`;
  const state = tls.validated ? 'validated' : tls.tls ? 'TLS, not validated' : 'no TLS';
  return `; TLS policy ${applied}: ${state}${tls.protocol ? ` (${tls.protocol})` : ''}${tls.reason ? `: ${tls.reason}` : ''}`;
}

const SHAPING_CAUSES = { triggered: 'set off', waiting: 'waiting for', applied: 'went around' } as const;

/** Each warming source's day, cap and use today, then the back-off actions in force. */
function formatShaping(backoffs: readonly ActiveBackoff[], warmup: readonly WarmupStatus[]): string {
  const lines = warmup.map((w) => {
    const use = w.use
      .map((u) => `; ${u.destination} ${u.used}${u.cap === undefined ? '' : `/${u.cap}`}`)
      .join('');
    return `source ${w.source}: day ${w.day}, ${w.warmed ? 'warmed' : `cap ${w.cap}/day per destination`}${use}`;
  });
  if (backoffs.length === 0) lines.push('no back-off action in force');
  for (const b of backoffs) {
    lines.push(
      `${b.source}→${b.destination}  ${b.action}${b.detail ? ` (${b.detail})` : ''}  rule ${b.rule}  until ${iso(b.until)}  after ${b.reply.code} ${b.reply.enhanced} ${b.reply.text}`,
    );
  }
  return lines.join('\n');
}

export function describeEvent(event: TimelineEvent): string {
  switch (event.type) {
    case 'received':
      return `received from <${event.mailFrom}> for ${event.recipients.join(', ')}${event.remoteAddress ? ` from ${event.remoteAddress}` : ''}${event.helo ? ` (${event.helo})` : ''}${event.listener ? ` on ${event.listener}` : ''}, ${event.size} bytes`;
    case 'hook':
      return `${event.plugin} ${event.hook}: ${event.outcome}${event.code ? ` ${event.code} ${event.enhanced ?? ''} ${event.text ?? ''}`.trimEnd() : ''} (${event.durationMs} ms)`;
    case 'attempt': {
      const results = event.recipients
        .map(
          (r) =>
            `${r.address} ${r.result}${r.category ? ` [${r.category}]` : ''} (${r.code} ${r.enhanced} ${r.text})`,
        )
        .join('; ');
      const via = event.remoteMta ? ` via ${event.remoteMta}` : event.hop ? ` ${describeHop(event.hop)}` : '';
      const next = event.nextAttemptAt ? `; next attempt ${iso(event.nextAttemptAt)}` : '';
      const notices = event.notices.length > 0 ? `; notice ${event.notices.join(', ')}` : '';
      return `attempt ${event.attempt} to ${event.domain}${via}: ${results}${describeTls(event.tls)}${next}${notices}`;
    }
    case 'shaping':
      return `shaping ${SHAPING_CAUSES[event.cause]} ${event.rule} (${event.action}${event.detail ? `: ${event.detail}` : ''}) on ${event.source}→${event.destination} until ${iso(event.until)}${event.code ? `; reply ${event.code} ${event.enhanced ?? ''} ${event.text ?? ''}`.trimEnd() : ''}`;
    case 'operator':
      return `operator ${event.action}${event.domain ? ` ${event.domain}` : ''}${event.detail ? ` (${event.detail})` : ''}${event.notice ? `; bounce ${event.notice}` : ''}`;
    case 'async-bounce':
      return `later bounce (${event.format}) for ${event.recipient}: ${event.action}${event.status ? ` ${event.status}` : ''}${event.category ? ` [${event.category}]` : ''}${event.diagnostic ? ` (${event.diagnostic})` : ''}${event.reportingMta ? ` from ${event.reportingMta}` : ''}${event.report ? `; report ${event.report}` : ''}`;
    case 'complaint':
      return `complaint (${event.feedbackType}) from ${event.recipient}${event.userAgent ? ` via ${event.userAgent}` : ''}${event.report ? `; report ${event.report}` : ''}`;
  }
}

function formatResult(action: QueueOperationName, id: string, result: Record<string, unknown>): string {
  const queueId = String(result.queueId ?? id);
  switch (action) {
    case 'hold':
      return `${queueId}: held (${result.held} job(s)${Number(result.inFlight) > 0 ? `; ${result.inFlight} attempt(s) in flight finish first` : ''})`;
    case 'release':
      return `${queueId}: released (${result.released} job(s))`;
    case 'retry':
      return `${queueId}: ${result.jobs} job(s) due now`;
    case 'delete':
      return `${queueId}: deleted`;
    case 'bounce':
      return `${queueId}: bounced ${result.recipients} recipient(s)${result.notice ? `; bounce queued as ${result.notice}` : ' (no bounce: null sender or NOTIFY)'}`;
    case 'reroute':
      return `${queueId}: ${result.jobs} job(s) rerouted`;
    default:
      return `${queueId}: ${JSON.stringify(result)}`;
  }
}
