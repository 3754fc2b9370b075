// Sorts a failure reply (a remote server's, one of delivery's own, or a DSN's Diagnostic-Code) into
// one BounceCategory with an ordered rule set: the operator's rules first, then the shipped ones
// (large providers, RFC 3463 enhanced codes, common texts), then the reply's class.
import { BOUNCE_CATEGORIES, type BounceCategory, isBounceCategory, type SmtpReply } from '@tern/plugin-api';
import { SHIPPED_BOUNCE_RULES } from './bounce-rules.js';

/**
 * One rule as written in the config (`bounces.rules`) or shipped. Every matcher given must match;
 * a rule needs at least one.
 */
export interface BounceRule {
  readonly category: BounceCategory;
  /** The basic code: `550`, or a pattern with `x` for any digit (`55x`, `5xx`). */
  readonly code?: number | string;
  /** The enhanced code: `5.1.1`, with `x` for any class or number (`x.1.1`, `5.7.x`). */
  readonly enhanced?: string;
  /** A regular expression searched in the reply's text, case-insensitively (its source, or a RegExp). */
  readonly text?: string | RegExp;
  /** Names the rule where its match is reported (`gmail`, `rfc3463`, the operator's own). */
  readonly name?: string;
}

/** What matched: the category and the rule's name (`class` when only the reply's class decided). */
export interface BounceClassification {
  readonly category: BounceCategory;
  readonly rule: string;
}

/** A rule the classifier cannot use; `field` names it (`bounces.rules[2].enhanced`). */
export class BounceRuleError extends Error {
  constructor(
    readonly field: string,
    /** Where in the list: the rule's index and, when one key is wrong, the key. */
    readonly path: readonly (string | number)[],
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = 'BounceRuleError';
  }
}

/** A config's rule texts are bounded: they run over every failure reply. */
export const MAX_RULE_TEXT = 1000;
/** Rules an operator may add (each runs over every failure reply). */
export const MAX_RULES = 1000;

const CODE_PATTERN = /^[2-5][0-9x][0-9x]$/;
const ENHANCED_PATTERN = /^([245x])\.(\d{1,3}|x)\.(\d{1,3}|x)$/;

interface CompiledRule {
  readonly category: BounceCategory;
  readonly name: string;
  readonly code: RegExp | undefined;
  readonly enhanced: readonly [string, string, string] | undefined;
  readonly text: RegExp | undefined;
}

/**
 * Checks one rule and makes it ready to match; throws a BounceRuleError naming the field and the
 * fix. `list` is where the rules were written (`bounces.rules`), `index` the rule's place there.
 */
function compileRule(input: unknown, list: string, index: number): CompiledRule {
  const field = `${list}[${index}]`;
  function fail(key: string | undefined, problem: string): never {
    throw new BounceRuleError(
      key === undefined ? field : `${field}.${key}`,
      key === undefined ? [index] : [index, key],
      problem,
    );
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    fail(undefined, 'a rule is an object like { category: "bad-mailbox", enhanced: "5.1.1" }');
  }
  const rule = input as Record<string, unknown>;
  for (const key of Object.keys(rule)) {
    if (!['category', 'code', 'enhanced', 'text', 'name'].includes(key)) {
      fail(key, 'unknown key (a rule has category, code, enhanced, text, name)');
    }
  }
  if (!isBounceCategory(rule.category)) {
    fail('category', `one of ${BOUNCE_CATEGORIES.join(', ')}`);
  }
  if (rule.code === undefined && rule.enhanced === undefined && rule.text === undefined) {
    fail(undefined, 'a rule needs at least one of code, enhanced or text');
  }
  let code: RegExp | undefined;
  if (rule.code !== undefined) {
    const value = String(rule.code).toLowerCase();
    if ((typeof rule.code !== 'number' && typeof rule.code !== 'string') || !CODE_PATTERN.test(value)) {
      fail('code', 'a reply code like 550, or a pattern like 55x or 5xx');
    }
    code = new RegExp(`^${value.replaceAll('x', '\\d')}$`);
  }
  let enhanced: [string, string, string] | undefined;
  if (rule.enhanced !== undefined) {
    const match =
      typeof rule.enhanced === 'string' ? ENHANCED_PATTERN.exec(rule.enhanced.toLowerCase()) : null;
    if (match === null) {
      fail('enhanced', 'an enhanced code like 5.1.1, with x for any part (x.1.1, 5.7.x)');
    }
    enhanced = [match[1] as string, match[2] as string, match[3] as string];
  }
  let text: RegExp | undefined;
  if (rule.text instanceof RegExp) {
    text = rule.text.flags.includes('i') ? rule.text : new RegExp(rule.text.source, `${rule.text.flags}i`);
  } else if (rule.text !== undefined) {
    if (typeof rule.text !== 'string' || rule.text === '' || rule.text.length > MAX_RULE_TEXT) {
      fail('text', `a regular expression of 1 to ${MAX_RULE_TEXT} characters`);
    }
    try {
      text = new RegExp(rule.text, 'i');
    } catch (error) {
      fail('text', `not a regular expression: ${(error as Error).message}`);
    }
  }
  if (rule.name !== undefined && (typeof rule.name !== 'string' || rule.name.length > 100)) {
    fail('name', 'a name of at most 100 characters');
  }
  return {
    category: rule.category,
    name: typeof rule.name === 'string' && rule.name !== '' ? rule.name : field,
    code,
    enhanced,
    text,
  };
}

/** Checks rules as the config gives them; throws a BounceRuleError for the first that is wrong. */
export function checkBounceRules(rules: unknown, field = 'bounces.rules'): void {
  compileRules(rules, field);
}

function compileRules(rules: unknown, field: string): CompiledRule[] {
  if (!Array.isArray(rules)) throw new BounceRuleError(field, [], 'a list of rules');
  if (rules.length > MAX_RULES) throw new BounceRuleError(field, [], `at most ${MAX_RULES} rules`);
  return rules.map((rule, i) => compileRule(rule, field, i));
}

function matches(rule: CompiledRule, reply: SmtpReply, parts: readonly string[]): boolean {
  if (rule.code !== undefined && !rule.code.test(String(reply.code))) return false;
  if (rule.enhanced !== undefined) {
    for (let i = 0; i < 3; i++) {
      const want = rule.enhanced[i] as string;
      if (want !== 'x' && want !== parts[i]) return false;
    }
  }
  if (rule.text !== undefined) {
    rule.text.lastIndex = 0;
    if (!rule.text.test(reply.text)) return false;
  }
  return true;
}

export interface BounceClassifierOptions {
  /** The operator's rules, tried before the shipped ones (config `bounces.rules`). */
  readonly rules?: readonly BounceRule[];
  /** Try the shipped rules after the operator's (default true). */
  readonly shippedRules?: boolean;
  /** Where `rules` were written, for errors (default `bounces.rules`). */
  readonly field?: string;
}

/** An ordered rule set; the first rule that matches a reply gives its category. */
export class BounceClassifier {
  readonly #rules: readonly CompiledRule[];

  /** Throws a BounceRuleError naming the first rule that cannot be used. */
  constructor(options: BounceClassifierOptions = {}) {
    const own = compileRules(options.rules ?? [], options.field ?? 'bounces.rules');
    const shipped =
      options.shippedRules === false
        ? []
        : SHIPPED_BOUNCE_RULES.map((rule, i) => compileRule(rule, 'shipped', i));
    this.#rules = [...own, ...shipped];
  }

  /** The category of a failure reply (4xx or 5xx). */
  classify(reply: SmtpReply): BounceCategory {
    return this.explain(reply).category;
  }

  /** The category and the rule that gave it. */
  explain(reply: SmtpReply): BounceClassification {
    const parts = reply.enhanced.split('.');
    for (const rule of this.#rules) {
      if (matches(rule, reply, parts)) return { category: rule.category, rule: rule.name };
    }
    // No rule knew the reply: a temporary failure is transient, anything else unknown.
    return { category: reply.code >= 400 && reply.code < 500 ? 'transient' : 'unknown', rule: 'class' };
  }
}

/** The shipped rules alone: what a worker uses when it is given no classifier. */
export const defaultBounceClassifier: BounceClassifier = new BounceClassifier();
