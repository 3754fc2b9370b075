// The logging contract: a subset of pino's API, so pino loggers fit as they are.

type LogFn = {
  (message: string): void;
  (fields: Record<string, unknown>, message?: string): void;
};

export interface Logger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: Record<string, unknown>): Logger;
  /** pino's: whether records of `level` are written now. A logger without it writes every level. */
  isLevelEnabled?(level: LogLevel): boolean;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * A child of `parent` with `bindings`, made only when it first writes a record: a pino child
 * costs microseconds (its bindings are serialized), too much for every connection when its
 * records are at a level that is off. Levels are asked of `parent` at each call (they can change).
 */
export function lazyChild(parent: Logger, bindings: Record<string, unknown>): Logger {
  return new LazyChild(parent, bindings);
}

class LazyChild implements Logger {
  readonly #parent: Logger;
  readonly #bindings: Record<string, unknown>;
  #child: Logger | undefined;

  constructor(parent: Logger, bindings: Record<string, unknown>) {
    this.#parent = parent;
    this.#bindings = bindings;
  }

  debug(...args: [Record<string, unknown> | string, string?]): void {
    this.#write('debug', args);
  }

  info(...args: [Record<string, unknown> | string, string?]): void {
    this.#write('info', args);
  }

  warn(...args: [Record<string, unknown> | string, string?]): void {
    this.#write('warn', args);
  }

  error(...args: [Record<string, unknown> | string, string?]): void {
    this.#write('error', args);
  }

  child(bindings: Record<string, unknown>): Logger {
    return this.#made().child(bindings);
  }

  isLevelEnabled(level: LogLevel): boolean {
    return this.#parent.isLevelEnabled?.(level) ?? true;
  }

  #made(): Logger {
    this.#child ??= this.#parent.child(this.#bindings);
    return this.#child;
  }

  #write(level: LogLevel, args: [Record<string, unknown> | string, string?]): void {
    if (this.#parent.isLevelEnabled?.(level) === false) return;
    const child = this.#made();
    (child[level] as (...a: unknown[]) => void).apply(child, args);
  }
}

const noop = (): void => {};

/** A logger that drops everything (the default in tests and the test kit). */
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};

export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string | undefined;
  fields: Record<string, unknown>;
}

/** A logger that keeps records in memory, for tests that assert on what was logged. */
export function memoryLogger(
  records: LogRecord[] = [],
  bindings: Record<string, unknown> = {},
): Logger & {
  records: LogRecord[];
} {
  const at =
    (level: LogRecord['level']): LogFn =>
    (a: string | Record<string, unknown>, b?: string) => {
      if (typeof a === 'string') records.push({ level, message: a, fields: { ...bindings } });
      else records.push({ level, message: b, fields: { ...bindings, ...a } });
    };
  return {
    records,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (more) => memoryLogger(records, { ...bindings, ...more }),
  };
}
