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
