// Option validation for plugin factories through the Standard Schema interface, so a plugin
// can use zod, valibot or arktype without this package depending on any of them.
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

/** Renders an issue path as `a.b[0].c`. */
export function issuePath(path: StandardIssue['path']): string {
  if (!path || path.length === 0) return '(options)';
  return path
    .map((p) => (typeof p === 'object' ? p.key : p))
    .map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`))
    .join('');
}

/**
 * Validates a plugin's options synchronously when the factory is called, so a bad option stops
 * start-up with the plugin and field named. Throws PluginOptionError.
 */
export function parseOptions<O>(plugin: string, schema: StandardSchemaV1<unknown, O>, input: unknown): O {
  const result = schema['~standard'].validate(input);
  if (result instanceof Promise)
    throw new TypeError(`plugin ${plugin}: option schemas must validate synchronously`);
  if (result.issues) {
    const first = result.issues[0];
    throw new PluginOptionError(plugin, issuePath(first?.path), first?.message ?? 'invalid');
  }
  return result.value;
}
