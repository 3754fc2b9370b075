import { readFileSync } from 'node:fs';
import { BOUNCE_CATEGORIES, type SmtpReply } from '@tern/plugin-api';
import { describe, expect, it } from 'vitest';
import {
  BounceClassifier,
  BounceRuleError,
  checkBounceRules,
  defaultBounceClassifier,
} from '../src/bounce-classifier.js';

/** A reply line as delivery parses it: the code, the enhanced code (or class.0.0 when none), the text. */
function parse(line: string): SmtpReply {
  const m = /^(\d{3})(?: ([245]\.\d{1,3}\.\d{1,3}))?\s*(.*)$/.exec(line);
  if (m === null) throw new Error(`not a reply: ${line}`);
  const code = Number(m[1]);
  return { code, enhanced: m[2] ?? `${Math.floor(code / 100)}.0.0`, text: m[3] ?? '' };
}

const fixtures = readFileSync(new URL('./fixtures/bounce-replies.txt', import.meta.url), 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '' && !line.startsWith('#'))
  .map((line) => {
    const [category, reply] = line.split('\t');
    return { category: category as string, reply: reply as string };
  });

describe('the shipped bounce rules', () => {
  it.each(fixtures)('$category: $reply', ({ category, reply }) => {
    expect(defaultBounceClassifier.classify(parse(reply))).toBe(category);
  });

  it('the fixtures use only the closed set and cover every category', () => {
    const seen = new Set(fixtures.map((f) => f.category));
    expect([...seen].filter((c) => !(BOUNCE_CATEGORIES as readonly string[]).includes(c))).toEqual([]);
    expect([...BOUNCE_CATEGORIES].filter((c) => !seen.has(c))).toEqual([]);
  });

  it('falls back on the class: 4xx transient, 5xx unknown, naming no rule', () => {
    expect(defaultBounceClassifier.explain(parse('451 4.0.0 Whatever'))).toEqual({
      category: 'transient',
      rule: 'class',
    });
    expect(defaultBounceClassifier.explain(parse('554 5.0.0 Whatever'))).toEqual({
      category: 'unknown',
      rule: 'class',
    });
  });

  it('names the rule that matched', () => {
    const gmail = parse('550 5.1.1 Nope https://support.google.com/mail/?p=NoSuchUser x - gsmtp');
    expect(defaultBounceClassifier.explain(gmail)).toEqual({ category: 'bad-mailbox', rule: 'gmail' });
    expect(defaultBounceClassifier.explain(parse('550 5.1.1 whatever')).rule).toBe('rfc3463');
  });
});

describe('operator rules', () => {
  it('come before the shipped ones, each matcher narrowing the match', () => {
    const classifier = new BounceClassifier({
      rules: [
        { category: 'transient', code: '55x', text: 'blacklisted' },
        { category: 'quota', enhanced: 'x.7.1', text: 'mailbox is full', name: 'odd-isp' },
      ],
    });
    expect(classifier.classify(parse('550 5.7.1 You are blacklisted'))).toBe('transient');
    // The code pattern does not match 421: the shipped rules decide.
    expect(classifier.classify(parse('421 4.7.1 You are blacklisted'))).toBe('spam-block');
    expect(classifier.explain(parse('550 5.7.1 Mailbox is FULL'))).toEqual({
      category: 'quota',
      rule: 'odd-isp',
    });
    // Without shipped rules only the class decides what the operator's rules do not.
    const alone = new BounceClassifier({ rules: [], shippedRules: false });
    expect(alone.classify(parse('550 5.1.1 User unknown'))).toBe('unknown');
  });

  it('an unknown enhanced-code pattern matches every class when written with x', () => {
    const classifier = new BounceClassifier({
      rules: [{ category: 'content', enhanced: 'x.9.x' }],
      shippedRules: false,
    });
    expect(classifier.classify(parse('450 4.9.3 a'))).toBe('content');
    expect(classifier.classify(parse('550 5.9.1 a'))).toBe('content');
    expect(classifier.classify(parse('550 5.8.1 a'))).toBe('unknown');
  });

  it.each([
    [[{ category: 'nope', code: 550 }], 'bounces.rules[0].category: one of bad-mailbox'],
    [[{ category: 'quota' }], 'bounces.rules[0]: a rule needs at least one of code, enhanced or text'],
    [[{ category: 'quota', code: '5x' }], 'bounces.rules[0].code: a reply code like 550'],
    [
      [
        { category: 'quota', code: 550 },
        { category: 'quota', enhanced: '5.1' },
      ],
      'bounces.rules[1].enhanced: an enhanced code',
    ],
    [[{ category: 'quota', text: '(' }], 'bounces.rules[0].text: not a regular expression'],
    [
      [{ category: 'quota', text: 'x'.repeat(1001) }],
      'bounces.rules[0].text: a regular expression of 1 to 1000',
    ],
    [[{ category: 'quota', code: 550, pattern: 'x' }], 'bounces.rules[0].pattern: unknown key'],
    [{ category: 'quota' }, 'bounces.rules: a list of rules'],
  ])('refuses a bad rule naming the field: %j', (rules, message) => {
    expect(() => checkBounceRules(rules)).toThrow(BounceRuleError);
    expect(() => checkBounceRules(rules)).toThrow(message);
    expect(() => new BounceClassifier({ rules: rules as never })).toThrow(message);
  });
});
