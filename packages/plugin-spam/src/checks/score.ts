// The score: the one plugin that turns what the checks published into an action. Each result
// becomes symbols with weights, their sum is the score, thresholds give the action (accept, tag,
// quarantine, tempfail, reject), raised by forced ones (a DMARC policy, a scanner failing
// closed); the queue stage writes the X-Spam-* headers and holds quarantined mail.
import { performance } from 'node:perf_hooks';
import {
  definePlugin,
  defineResult,
  type Logger,
  type MessageContext,
  normalizeIp,
  type Plugin,
  parseOptions,
  reject,
  tempfail,
  type Verdict,
} from '@tern/plugin-api';
import { z } from 'zod';
import { dkimSymbol, dmarcSymbol, spfSymbol } from '../auth.js';
import {
  applyDecisionHeaders,
  decideAction,
  type ForcedAction,
  quarantineReason,
  type SpamDecision,
  symbolSummary,
} from '../decision.js';
import type { ScanResult } from '../scanners.js';
import { CheckScope, replyText, scopeFields, weight } from '../schema.js';
import { roundScore, type SpamSymbol, SYMBOL_NAMES, type SymbolName, Weights } from '../symbols.js';
import { dkimResult } from './dkim.js';
import { dmarcResult } from './dmarc.js';
import { dnsListResult } from './dns-lists.js';
import { heuristicsResult } from './heuristics.js';
import { rspamdResult } from './rspamd.js';
import { spamdResult } from './spamd.js';
import { spfOutcomes, spfResult } from './spf.js';

export const SCORE_CHECK = 'spam-score';

/** The decision on this transaction's message: score, action, every symbol and why. */
export const spamDecisionResult = defineResult<SpamDecision>('spam.decision');

const thresholds = z
  .strictObject({
    tag: weight.nullable().default(5),
    quarantine: weight.nullable().default(10),
    tempfail: weight.nullable().default(null),
    reject: weight.nullable().default(15),
  })
  .prefault({})
  .superRefine((t, ctx) => {
    // Each action is harsher than the one before, so its threshold must be higher.
    const order = ['tag', 'quarantine', 'tempfail', 'reject'] as const;
    let previous: { name: string; value: number } | undefined;
    for (const name of order) {
      const value = t[name];
      if (value === null) continue;
      if (previous && value <= previous.value) {
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: `must be above ${previous.name} (${previous.value}): actions go tag < quarantine < tempfail < reject`,
        });
      }
      previous = { name, value };
    }
  });

const scores = z.record(z.string(), weight).superRefine((record, ctx) => {
  for (const key of Object.keys(record)) {
    if (key === 'RSPAMD' || key === 'SPAMD') {
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `a scanner's score is scaled by ${key.toLowerCase()}.weight`,
      });
    } else if (!(SYMBOL_NAMES as string[]).includes(key)) {
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `unknown symbol (DNS list weights are set on their zone); known: ${SYMBOL_NAMES.join(', ')}`,
      });
    }
  }
});

/** How a scanner's result counts: spamFilter() takes these inside its rspamd and spamd options. */
export const scannerPolicyFields = {
  /** open: a failed scan adds nothing; closed: the message is deferred (451). */
  failure: z.enum(['open', 'closed']).default('open'),
  /** Factor applied to the scanner's score before it adds in. */
  weight: weight.default(1),
};
const scannerPolicy = z.strictObject(scannerPolicyFields).prefault({});

/** What spamFilter() takes at its top level for the score. */
export const scoreFields = {
  /** Weight overrides for fixed symbols, e.g. `{ MISSING_DATE: 2, SPF_FAIL: 5 }`. */
  scores: scores.default({}),
  actions: thresholds,
  headers: z
    .strictObject({
      /** X-Spam-Status/X-Spam-Score on every checked message, or only on tagged ones. */
      status: z.enum(['all', 'tagged']).default('all'),
      /** X-Spam-Report with every symbol on tagged messages. */
      report: z.boolean().default(true),
      /** Put in front of the Subject of tagged messages, e.g. '[SPAM] '. */
      subjectPrefix: z.string().min(1).max(64).optional(),
    })
    .prefault({}),
  replies: z
    .strictObject({
      reject: replyText.default('Message rejected as spam'),
      tempfail: replyText.default('Message deferred, please try again later'),
      /** For a rejection the From domain's DMARC policy asked for. */
      dmarcReject: replyText.default('Message rejected by the DMARC policy of its From domain'),
    })
    .prefault({}),
  /** Called with every decision (for an ops timeline); errors it throws are logged and ignored. */
  onDecision: z
    .custom<(decision: SpamDecision) => void>((v) => typeof v === 'function', 'expected a function')
    .optional(),
};

/** What a DMARC failure forces: spamFilter() takes these inside its dmarc options. */
export const dmarcPolicyFields = {
  /** A failing message whose domain says p=reject: refuse it, hold it, or only score it. */
  onReject: z.enum(['reject', 'quarantine', 'score']).default('reject'),
  /** A failing message whose domain says p=quarantine. */
  onQuarantine: z.enum(['quarantine', 'score']).default('quarantine'),
};

export const scoreOptionsSchema = z.strictObject({
  ...scopeFields,
  ...scoreFields,
  dmarc: z.strictObject(dmarcPolicyFields).prefault({}),
  scanners: z.strictObject({ rspamd: scannerPolicy, spamd: scannerPolicy }).prefault({}),
});

export type SpamScoreOptions = z.input<typeof scoreOptionsSchema>;
type ResolvedScoreOptions = z.output<typeof scoreOptionsSchema>;
export type Thresholds = ResolvedScoreOptions['actions'];
export type ScoreOverrides = Partial<Record<SymbolName, number>>;

/** Headers only the score may write; copies arriving from outside are forged and removed. */
const OWN_HEADERS = ['x-spam-status', 'x-spam-score', 'x-spam-flag', 'x-spam-report', 'x-tern-quarantine'];

/** Scores each message from the published results and acts on it. Options are validated here. */
export function spamScore(options: SpamScoreOptions = {}): Plugin {
  const opts = parseOptions(SCORE_CHECK, scoreOptionsSchema, options ?? {});
  const scope = new CheckScope(opts);
  const weights = new Weights(opts.scores);

  /** Waits for every check's result and decides. */
  const decide = async (ctx: MessageContext<unknown, unknown>, started: number): Promise<SpamDecision> => {
    const { results, session, transaction } = ctx;
    const [lists, spf, heuristics, dkim, dmarc, rspamd, spamd] = await Promise.all([
      results.wait(dnsListResult),
      results.wait(spfResult),
      results.wait(heuristicsResult),
      results.wait(dkimResult),
      results.wait(dmarcResult),
      results.wait(rspamdResult),
      results.wait(spamdResult),
    ]);
    const symbols: SpamSymbol[] = [];
    const forced: ForcedAction[] = [];

    for (const hit of lists?.hits ?? []) symbols.push(hit.symbol);
    for (const outcome of spfOutcomes(spf)) {
      symbols.push(weights.symbol(spfSymbol(outcome), outcome.domain || undefined));
    }
    if (heuristics) {
      if (heuristics.gtube) symbols.push(weights.symbol('GTUBE'));
      for (const hit of heuristics.hits) symbols.push(weights.symbol(hit.name, hit.detail));
    }
    if (dkim) {
      const signed = dkim.signatures.map((s) => `${s.domain}:${s.result}`).join(',');
      symbols.push(weights.symbol(dkimSymbol(dkim.result), signed || undefined));
    }
    if (dmarc) {
      symbols.push(weights.symbol(dmarcSymbol(dmarc), dmarc.fromDomain || undefined));
      if (dmarc.result === 'fail' && dmarc.policy === 'reject' && opts.dmarc.onReject !== 'score') {
        forced.push({
          source: 'dmarc',
          action: opts.dmarc.onReject,
          reason: `dmarc policy reject for ${dmarc.fromDomain}`,
        });
      }
      if (dmarc.result === 'fail' && dmarc.policy === 'quarantine' && opts.dmarc.onQuarantine !== 'score') {
        forced.push({
          source: 'dmarc',
          action: 'quarantine',
          reason: `dmarc policy quarantine for ${dmarc.fromDomain}`,
        });
      }
    }

    const scanners: { rspamd?: ScanResult; spamd?: ScanResult } = {};
    const scanned = [['rspamd', 'RSPAMD', rspamd] as const, ['spamd', 'SPAMD', spamd] as const];
    for (const [name, symbol, result] of scanned) {
      if (!result) continue;
      const policy = opts.scanners[name];
      scanners[name] = result;
      if (result.status === 'scanned') {
        const detail = `${result.score}${result.required !== undefined ? `/${result.required}` : ''}${result.action ? ` ${result.action}` : ''}`;
        symbols.push({ name: symbol, score: result.score * policy.weight, detail });
      } else if (result.status === 'failed') {
        ctx.log.warn({ scanner: name, reason: result.reason, failure: policy.failure }, 'scanner failed');
        if (policy.failure === 'closed') {
          forced.push({ source: 'scanner', action: 'tempfail', reason: `${name} failed: ${result.reason}` });
        } else symbols.push(weights.symbol('SCANNER_UNAVAILABLE', `${name}: ${result.reason}`));
      } else {
        ctx.log.info(
          { scanner: name, size: result.size, maxBytes: result.maxBytes },
          'scanner skipped: message too big',
        );
      }
    }

    const score = roundScore(symbols.reduce((sum, s) => sum + s.score, 0));
    const { action, reason, forcedBy } = decideAction(score, opts.actions, forced);
    return {
      score,
      action,
      reason,
      ...(forcedBy ? { forcedBy: forcedBy.source } : {}),
      symbols,
      thresholds: opts.actions,
      auth: { spf: spfOutcomes(spf), dkim: dkim?.result, dmarc },
      scanners,
      sessionId: session.id,
      transactionId: transaction.id,
      clientIp: normalizeIp(session.remoteAddress),
      mailFrom: transaction.mailFrom,
      recipients: transaction.recipients.map((r) => r.address),
      durationMs: Math.round(performance.now() - started),
    };
  };

  return definePlugin({
    name: SCORE_CHECK,
    publishes: [spamDecisionResult],

    headers(ctx): void {
      if (!scope.checksClient(ctx.session)) return;
      let removed = 0;
      for (const name of OWN_HEADERS) removed += ctx.headers.remove(name);
      if (removed > 0)
        ctx.log.info({ spamHeaders: removed }, 'removed incoming fields that claim to be ours');
    },

    // 'post': after every check of this stage published (pending) what it found.
    message: {
      order: 'post',
      async handler(ctx): Promise<Verdict | void> {
        if (scope.isExempt(ctx.session)) return;
        const decision = await decide(ctx, performance.now());
        ctx.results.set(spamDecisionResult, decision);
        record(ctx.log, decision, opts.onDecision);
        if (decision.action === 'reject') {
          return reject(
            550,
            '5.7.1',
            decision.forcedBy === 'dmarc' ? opts.replies.dmarcReject : opts.replies.reject,
          );
        }
        if (decision.action === 'tempfail') return tempfail(451, '4.7.1', opts.replies.tempfail);
      },
    },

    queue(ctx): void {
      const decision = ctx.results.get(spamDecisionResult);
      if (!decision) return;
      applyDecisionHeaders(ctx.message.headers, decision, opts.headers);
      if (decision.action === 'quarantine') {
        const reason = quarantineReason(decision);
        ctx.message.headers.set('X-Tern-Quarantine', reason);
        // Held in the queue, undelivered, until an operator releases it.
        ctx.hold(reason);
      }
    },
  });
}

/** One structured line per checked message, and the decision handed to onDecision. */
function record(
  log: Logger,
  decision: SpamDecision,
  onDecision: ((d: SpamDecision) => void) | undefined,
): void {
  log.info(
    {
      score: decision.score,
      action: decision.action,
      reason: decision.reason,
      symbols: symbolSummary(decision.symbols),
      ip: decision.clientIp,
      mailFrom: decision.mailFrom,
      recipients: decision.recipients.length,
      sessionId: decision.sessionId,
      transactionId: decision.transactionId,
      durationMs: decision.durationMs,
    },
    'spam check',
  );
  if (!onDecision) return;
  try {
    onDecision(decision);
  } catch (error) {
    log.error({ err: error }, 'onDecision threw; ignored');
  }
}
