// From symbols to an action: the score against the thresholds, raised by checks that force an
// action (a DMARC policy, a scanner failing closed), and the headers that report the decision.
import type { Headers } from '@tern/plugin-api';
import type { DkimResultKind, DmarcOutcome, SpfOutcome } from './auth.js';
import type { Thresholds } from './checks/score.js';
import type { ScanResult } from './scanners.js';
import { roundScore, type SpamSymbol } from './symbols.js';

export type SpamAction = 'accept' | 'tag' | 'quarantine' | 'tempfail' | 'reject';

/** Harsher actions rank higher; a forced action only ever raises the outcome. */
export const ACTION_SEVERITY: Readonly<Record<SpamAction, number>> = {
  accept: 0,
  tag: 1,
  quarantine: 2,
  tempfail: 3,
  reject: 4,
};

/** An action a check demands regardless of the score. */
export interface ForcedAction {
  readonly action: SpamAction;
  readonly reason: string;
  /** Which check forced it; a DMARC rejection gets its own SMTP reply text. */
  readonly source: 'dmarc' | 'scanner';
}

/** Everything decided about one message: what the ops timeline shows and the log line records. */
export interface SpamDecision {
  readonly score: number;
  readonly action: SpamAction;
  /** Why this action: `score 16.2 >= reject 15` or `dmarc policy reject for example.com`. Internal. */
  readonly reason: string;
  /** The check that forced the action above what the score earned, if one did. */
  readonly forcedBy?: ForcedAction['source'];
  /** Every contribution, in the order the checks ran. */
  readonly symbols: readonly SpamSymbol[];
  readonly thresholds: Thresholds;
  readonly auth: {
    readonly spf: readonly SpfOutcome[];
    readonly dkim: DkimResultKind | undefined;
    readonly dmarc: DmarcOutcome | undefined;
  };
  readonly scanners: { readonly rspamd?: ScanResult; readonly spamd?: ScanResult };
  readonly sessionId: string;
  readonly transactionId: string;
  readonly clientIp: string;
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly durationMs: number;
}

/** The action the score alone earns: the harshest enabled threshold it reaches. */
export function actionForScore(
  score: number,
  thresholds: Thresholds,
): { action: SpamAction; reason: string } {
  const order = ['reject', 'tempfail', 'quarantine', 'tag'] as const;
  for (const action of order) {
    const threshold = thresholds[action];
    if (threshold !== null && score >= threshold) {
      return { action, reason: `score ${roundScore(score)} >= ${action} ${threshold}` };
    }
  }
  return { action: 'accept', reason: `score ${roundScore(score)} below every threshold` };
}

/** Combines the score's action with forced ones: the harshest wins; on a tie the score's reason stays. */
export function decideAction(
  score: number,
  thresholds: Thresholds,
  forced: readonly ForcedAction[],
): { action: SpamAction; reason: string; forcedBy?: ForcedAction } {
  let outcome: { action: SpamAction; reason: string; forcedBy?: ForcedAction } = actionForScore(
    score,
    thresholds,
  );
  for (const f of forced) {
    if (ACTION_SEVERITY[f.action] > ACTION_SEVERITY[outcome.action]) {
      outcome = { action: f.action, reason: f.reason, forcedBy: f };
    }
  }
  return outcome;
}

/** The lowest enabled threshold: what "required" means in X-Spam-Status. */
export function requiredScore(thresholds: Thresholds): number | undefined {
  const enabled = [thresholds.tag, thresholds.quarantine, thresholds.tempfail, thresholds.reject].filter(
    (t): t is number => t !== null,
  );
  return enabled.length > 0 ? Math.min(...enabled) : undefined;
}

/** Printable ASCII only: header values are written as Latin-1 and details can hold anything. */
function printable(text: string, max = 120): string {
  const clean = text.replace(/[^\x20-\x7e]+/g, '?');
  return clean.length > max ? `${clean.slice(0, max - 3)}...` : clean;
}

function formatPoints(score: number): string {
  return roundScore(score).toFixed(1);
}

export interface HeaderPolicy {
  readonly status: 'all' | 'tagged';
  readonly report: boolean;
  readonly subjectPrefix?: string | undefined;
}

/**
 * Writes X-Spam-* (at the bottom, as SpamAssassin does: they are not trace fields) and the subject
 * prefix for an accepted message.
 */
export function applyDecisionHeaders(headers: Headers, decision: SpamDecision, policy: HeaderPolicy): void {
  const tagged = ACTION_SEVERITY[decision.action] >= ACTION_SEVERITY.tag;
  const names = [...new Set(decision.symbols.map((s) => s.name))].sort();
  const required = requiredScore(decision.thresholds);
  if (tagged || policy.status === 'all') {
    const status = [
      tagged ? 'Yes' : 'No',
      `score=${formatPoints(decision.score)}`,
      ...(required !== undefined ? [`required=${formatPoints(required)}`] : []),
      `tests=${names.join(',') || 'none'}`,
    ];
    // The symbol list can be long: fold between the parts (and inside the list at commas).
    headers.append('X-Spam-Score', formatPoints(decision.score));
    headers.append('X-Spam-Status', foldList(status.slice(0, -1).join(', '), status.at(-1) ?? ''));
  }
  if (!tagged) return;
  headers.append('X-Spam-Flag', 'YES');
  if (policy.report) {
    const lines = decision.symbols.map(
      (s) => `* ${formatPoints(s.score).padStart(6)} ${s.name}${s.detail ? ` ${printable(s.detail)}` : ''}`,
    );
    headers.append(
      'X-Spam-Report',
      [`action=${decision.action} score=${formatPoints(decision.score)}`, ...lines].join('\r\n\t'),
    );
  }
  if (policy.subjectPrefix !== undefined) {
    const subject = headers.get('subject');
    if (subject === undefined) headers.append('Subject', policy.subjectPrefix.trimEnd());
    else if (!subject.startsWith(policy.subjectPrefix))
      headers.set('Subject', `${policy.subjectPrefix}${foldedValue(headers, 'subject')}`);
  }
}

/**
 * The value of the first field `name` as written, folds kept (as UTF-8 text): a long value folded
 * over lines of legal length must not become one line past RFC 5322's 998 octets when rewritten.
 */
function foldedValue(headers: Headers, name: string): string {
  const raw = headers.fields().find((f) => f.key === name)?.raw ?? '';
  return Buffer.from(raw.slice(raw.indexOf(':') + 1), 'latin1')
    .toString('utf8')
    .replace(/^[ \t]+/, '');
}

function foldList(head: string, tests: string): string {
  const parts = tests.split(',');
  const lines: string[] = [];
  let line = `${head}, ${parts.shift() ?? ''}`;
  for (const part of parts) {
    if (line.length + part.length + 1 > 76) {
      lines.push(`${line},`);
      line = part;
    } else line = `${line},${part}`;
  }
  lines.push(line);
  return lines.join('\r\n\t');
}

/** The value of X-Tern-Quarantine: why the message is held. */
export function quarantineReason(decision: SpamDecision): string {
  return printable(decision.reason, 200);
}

/** The symbols as one compact log field: `SPF_FAIL(3),GTUBE(1000)`. */
export function symbolSummary(symbols: readonly SpamSymbol[]): string {
  return symbols.map((s) => `${s.name}(${roundScore(s.score)})`).join(',');
}
