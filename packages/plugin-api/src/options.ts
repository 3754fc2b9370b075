// Option validation for plugin factories through the Standard Schema interface, so a plugin
// can use zod, valibot or arktype (this package's own schema helpers are zod).
import { z } from 'zod';
import { PluginOptionError } from './errors.js';

/** The Standard Schema v1 interface (https://standardschema.dev), copied as its authors intend. */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (
      value: unknown,
    ) =>
      | { readonly value: Output; readonly issues?: undefined }
      | { readonly issues: readonly StandardIssue[] }
      | Promise<
          | { readonly value: Output; readonly issues?: undefined }
          | { readonly issues: readonly StandardIssue[] }
        >;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

export interface StandardIssue {
  readonly message: string;
  readonly path?: readonly (PropertyKey | { readonly key: PropertyKey })[] | undefined;
}

/**
 * Renders an issue path as the option is written: `a.b[0].c`, `domains["a.test"].keyFile`, after
 * `root` when given (`config.listeners[0].port`). An empty path is `root`, or `(options)`.
 */
export function issuePath(path: StandardIssue['path'], root?: string): string {
  const keys = (path ?? []).map((p) => (typeof p === 'object' ? p.key : p));
  if (keys.length === 0) return root ?? '(options)';
  return keys.reduce<string>((at, key) => {
    if (typeof key === 'number') return `${at}[${key}]`;
    const name = String(key);
    if (!/^[a-z_$][\w$]*$/i.test(name)) return `${at}[${JSON.stringify(name)}]`;
    return at === '' ? name : `${at}.${name}`;
  }, root ?? '');
}

/**
 * Validates a plugin's options synchronously when the factory is called, so a bad option stops
 * start-up with the plugin and field named. Throws PluginOptionError.
 */
export function parseOptions<O>(plugin: string, schema: StandardSchemaV1<unknown, O>, input: unknown): O {
  return parseWith(schema, input, (field, problem) => {
    throw new PluginOptionError(plugin, field, problem);
  });
}

/**
 * Validates `input` synchronously and returns the schema's output; on the first issue calls
 * `fail` with the field (rendered by issuePath after `root`) and the problem, which throws the
 * caller's own error (a listener's, the deliverer's, the queue's).
 */
export function parseWith<O>(
  schema: StandardSchemaV1<unknown, O>,
  input: unknown,
  fail: (field: string, problem: string) => never,
  root?: string,
): O {
  const result = schema['~standard'].validate(input);
  if (result instanceof Promise) throw new TypeError('option schemas must validate synchronously');
  const first = result.issues?.[0] as (StandardIssue & { code?: unknown; keys?: unknown }) | undefined;
  if (result.issues === undefined) return result.value;
  // zod's strict objects report an unknown key on the object holding it: name the key itself.
  if (first?.code === 'unrecognized_keys' && Array.isArray(first.keys) && first.keys.length > 0) {
    const path = [...(first.path ?? []), String(first.keys[0])];
    return fail(issuePath(path, root), 'unknown option: remove it or check its spelling');
  }
  return fail(issuePath(first?.path, root), first?.message ?? 'invalid');
}

/** A value as an error message shows it: strings quoted, everything else as written. */
export function shown(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** A number that passes `test`; otherwise the issue says `must be <what>, got <value>`. */
export function numberSchema(test: (value: number) => boolean, what: string): z.ZodType<number, number> {
  return z.custom<number>((value) => typeof value === 'number' && test(value), {
    error: (issue) => `must be ${what}, got ${shown(issue.input)}`,
  });
}

/** One of a few words; otherwise the issue says `must be <what>, got <value>`. */
export function choiceSchema<const T extends readonly [string, ...string[]]>(
  values: T,
  what: string,
): z.ZodType<T[number], T[number]> {
  return z.enum(values, { error: (issue) => `must be ${what}, got ${shown(issue.input)}` }) as z.ZodType<
    T[number],
    T[number]
  >;
}

/** A TCP port, 0 to 65535 (0: any free one, where something listens). */
export function portSchema(): z.ZodType<number, number> {
  return numberSchema((n) => Number.isInteger(n) && n >= 0 && n <= 65535, 'a port from 0 to 65535');
}

/** A whole number of at least `min` (counts, sizes in bytes, limits). */
export function wholeNumberSchema(min = 1): z.ZodType<number, number> {
  return numberSchema((n) => Number.isSafeInteger(n) && n >= min, `a whole number of at least ${min}`);
}
