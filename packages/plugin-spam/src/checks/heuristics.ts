// The heuristics check: GTUBE in the body and the header and HELO heuristics, published as hits
// for the score to weigh.
import { definePlugin, defineResult, type Plugin, parseOptions } from '@tern/plugin-api';
import { z } from 'zod';
import { checkHeaders, checkHelo, containsGtube, type HeuristicHit } from '../heuristics.js';
import { CheckScope, scopeFields } from '../schema.js';

export const HEURISTICS_CHECK = 'spam-heuristics';

export interface HeuristicsOutcome {
  /** The body carries the GTUBE test string. */
  readonly gtube: boolean;
  /** Header and HELO findings, each one symbol. */
  readonly hits: readonly HeuristicHit[];
}

export const heuristicsResult = defineResult<HeuristicsOutcome>('spam.heuristics');

export const heuristicsOptionsSchema = z.strictObject({ ...scopeFields });

export type HeuristicsCheckOptions = z.input<typeof heuristicsOptionsSchema>;

/** Looks at the header block, the HELO name and the body for each message. Options are validated here. */
export function heuristicsCheck(options: HeuristicsCheckOptions = {}): Plugin {
  const opts = parseOptions(HEURISTICS_CHECK, heuristicsOptionsSchema, options ?? {});
  const scope = new CheckScope(opts);
  return definePlugin({
    name: HEURISTICS_CHECK,
    publishes: [heuristicsResult],
    message(ctx): void {
      if (scope.isExempt(ctx.session)) return;
      // The header block is judged now, as this stage sees it; the body search runs on.
      const hits = [...checkHeaders(ctx.message.headers), ...checkHelo(ctx.session.helo)];
      ctx.results.set(
        heuristicsResult,
        containsGtube(ctx.message.body()).then((gtube) => ({ gtube, hits })),
      );
    },
  });
}
