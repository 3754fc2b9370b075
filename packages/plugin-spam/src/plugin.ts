// spamFilter(): the preset that bundles the checks in their working order under the one plugin
// name 'spam', with the option shape the filter has always had. Each check is also a plugin of
// its own (see checks/), for configurations that want some of them, or their own policy.
import { definePlugin, type Plugin } from '@tern/plugin-api';
import { CheckChain, type CheckStates } from './chain.js';
import { authenticationResults } from './checks/authentication-results.js';
import { dkimCheck } from './checks/dkim.js';
import { dmarcCheck } from './checks/dmarc.js';
import { dnsListCheck } from './checks/dns-lists.js';
import { greylistCheck } from './checks/greylist.js';
import { heuristicsCheck } from './checks/heuristics.js';
import { rspamdCheck } from './checks/rspamd.js';
import { spamDecisionResult, spamScore } from './checks/score.js';
import { spamdCheck } from './checks/spamd.js';
import { spfCheck } from './checks/spf.js';
import type { SpamDecision } from './decision.js';
import { PLUGIN_NAME, type ResolvedSpamOptions, resolveOptions, type SpamOptions } from './options.js';

/** Per connection: each check's own state. */
export type SpamSessionState = CheckStates;

/**
 * Per transaction. `decision` is what the ops timeline reads once the message stage ran (also
 * published as `spamDecisionResult`); it stays undefined for a transaction that was not checked
 * (authenticated, trusted, another listener).
 */
export interface SpamTransactionState extends CheckStates {
  decision: SpamDecision | undefined;
}

export type SpamPlugin = Plugin<SpamSessionState, SpamTransactionState>;

/** The checks the options turn on, in the order they run within each stage. */
export function presetChecks(opts: ResolvedSpamOptions): Plugin[] {
  const scope = {
    ...(opts.listeners ? { listeners: opts.listeners } : {}),
    exemptAuthenticated: opts.exemptAuthenticated,
    exemptTrusted: opts.exemptTrusted,
  };
  const dns = opts.dns;
  const { enabled: greylisting, ...greylist } = opts.greylist ?? { enabled: false };
  const scanner = <O extends { failure: unknown; weight: unknown }>(o: O): Omit<O, 'failure' | 'weight'> => {
    const { failure: _failure, weight: _weight, ...rest } = o;
    return rest;
  };
  const checks: (Plugin | false)[] = [
    (opts.dnsbl.zones.length > 0 || opts.dnswl.zones.length > 0) &&
      dnsListCheck({ ...scope, dns, dnsbl: opts.dnsbl, dnswl: opts.dnswl }),
    opts.spf.enabled && spfCheck({ ...scope, dns, helo: opts.spf.helo, timeoutMs: opts.spf.timeoutMs }),
    greylisting && greylistCheck({ ...scope, ...greylist }),
    opts.heuristics.enabled && heuristicsCheck(scope),
    opts.dkim.enabled && dkimCheck({ ...scope, dns, minBitLength: opts.dkim.minBitLength }),
    // Without the DKIM check, DMARC verifies the signatures itself and they are neither scored nor reported.
    opts.dmarc.enabled && dmarcCheck({ ...scope, dns, minBitLength: opts.dkim.minBitLength }),
    opts.rspamd !== undefined && rspamdCheck({ ...scope, ...scanner(opts.rspamd) }),
    opts.spamd !== undefined && spamdCheck({ ...scope, ...scanner(opts.spamd) }),
    authenticationResults({ ...scope, add: opts.authenticationResults }),
    spamScore({
      ...scope,
      scores: opts.scores,
      actions: opts.actions,
      headers: opts.headers,
      replies: opts.replies,
      ...(opts.onDecision ? { onDecision: opts.onDecision } : {}),
      dmarc: { onReject: opts.dmarc.onReject, onQuarantine: opts.dmarc.onQuarantine },
      scanners: {
        ...(opts.rspamd ? { rspamd: { failure: opts.rspamd.failure, weight: opts.rspamd.weight } } : {}),
        ...(opts.spamd ? { spamd: { failure: opts.spamd.failure, weight: opts.spamd.weight } } : {}),
      },
    }),
  ];
  return checks.filter((c): c is Plugin => c !== false);
}

/**
 * The spam filter: DNS lists, SPF, greylisting, heuristics, DKIM, DMARC, rspamd and spamd as the
 * options ask, then the score and Authentication-Results, as one plugin named 'spam'. Options
 * are validated here: a bad one throws PluginOptionError naming the field. See README.md.
 */
export function spamFilter(options: SpamOptions = {}): SpamPlugin {
  const chain = new CheckChain(presetChecks(resolveOptions(options)));
  const hooks = chain.hooks<SpamSessionState, SpamTransactionState>();
  // The score's message hook is always there, so the chain always has one: an object spec.
  const message = hooks.message as Exclude<typeof hooks.message, ((...args: never[]) => unknown) | undefined>;
  return definePlugin<SpamSessionState, SpamTransactionState>({
    ...hooks,
    name: PLUGIN_NAME,
    // DNS, scanners and DKIM keys have their own timeouts below this; the runner's is the backstop.
    timeout: 60_000,
    publishes: chain.publishes,
    state: {
      session: () => chain.sessionStates(),
      transaction: () => ({ ...chain.transactionStates(), decision: undefined }),
    },
    message: {
      ...message,
      async handler(ctx) {
        const verdict = await message.handler(ctx);
        ctx.transactionState.decision = ctx.results.get(spamDecisionResult);
        return verdict;
      },
    },
  });
}
