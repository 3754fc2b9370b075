// Option schemas: the shared building blocks and how a bad option is reported (plugin, path, fix).
import { describe, expect, test } from 'vitest';
import { z } from 'zod';
import {
  choiceSchema,
  domainSchema,
  issuePath,
  networkSchema,
  PluginOptionError,
  parseOptions,
  parseWith,
  portSchema,
  wholeNumberSchema,
} from '../src/index.js';

const fail = (field: string, problem: string): never => {
  throw new Error(`${field}: ${problem}`);
};
const problem = (schema: z.ZodType, value: unknown): string => {
  try {
    parseWith(schema, value, fail, 'x');
  } catch (error) {
    return (error as Error).message;
  }
  return 'accepted';
};

describe('option paths and errors', () => {
  test('paths are written as in the options: keys that are not names are quoted', () => {
    expect(issuePath(['domains', 'a.test', 0, 'keyFile'])).toBe('domains["a.test"][0].keyFile');
    expect(issuePath([{ key: 'rules' }, 2, 'per'], 'config')).toBe('config.rules[2].per');
    expect(issuePath([])).toBe('(options)');
    expect(issuePath([], 'config')).toBe('config');
  });

  test('an unknown option is named at its own path, with the fix', () => {
    const schema = z.strictObject({ rules: z.array(z.strictObject({ limit: z.number() })) });
    const error = (() => {
      try {
        parseOptions('ratelimit', schema, { rules: [{ limit: 1, burst: 3 }] });
      } catch (caught) {
        return caught as PluginOptionError;
      }
      throw new Error('accepted');
    })();
    expect(error).toBeInstanceOf(PluginOptionError);
    expect(error.field).toBe('rules[0].burst');
    expect(error.message).toBe(
      'plugin ratelimit: option rules[0].burst: unknown option: remove it or check its spelling',
    );
  });

  test('the building blocks say what a value must be and what it was', () => {
    expect(problem(wholeNumberSchema(1), 0)).toBe('x: must be a whole number of at least 1, got 0');
    expect(problem(wholeNumberSchema(1), '3')).toBe('x: must be a whole number of at least 1, got "3"');
    expect(problem(portSchema(), 70_000)).toBe('x: must be a port from 0 to 65535, got 70000');
    expect(problem(choiceSchema(['a', 'b'], "'a' or 'b'"), 'c')).toBe(`x: must be 'a' or 'b', got "c"`);
    expect(problem(networkSchema(), '10.0.0.0/33')).toMatch(/^x: prefix length must be 0 to 32: .*CIDR form/);
    expect(problem(domainSchema(), 'a b')).toMatch(/^x: not a domain or address literal: "a b"/);
    expect(domainSchema().parse('Bücher.Example')).toBe('xn--bcher-kva.example');
    expect(domainSchema().parse('[IPv6:2001:DB8::1]')).toBe('[ipv6:2001:db8::1]');
  });
});
