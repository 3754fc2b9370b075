// JSON logs through pino; the plugin-api Logger is pino's API subset, so plugins get children of it.
import type { Logger } from '@tern/plugin-api';
import { pino } from 'pino';

export function createLogger(
  level: string = process.env.TERN_LOG_LEVEL ?? 'info',
): Logger & { flush?: () => void } {
  return pino({
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  }) as unknown as Logger;
}

/**
 * For commands that run once (check-config): plugin warnings as `warning: ...` lines on stderr,
 * where a person reads them; errors are left to the command, which reports its own.
 */
export function warningLogger(bindings: Record<string, unknown> = {}): Logger {
  const warn = (a: string | Record<string, unknown>, b?: string): void => {
    const fields = typeof a === 'string' ? bindings : { ...bindings, ...a };
    const message = typeof a === 'string' ? a : (b ?? '');
    const plugin = typeof fields.plugin === 'string' ? `plugin ${fields.plugin}: ` : '';
    process.stderr.write(`warning: ${plugin}${message}\n`);
  };
  const ignore = (): void => {};
  return {
    debug: ignore,
    info: ignore,
    warn,
    error: ignore,
    child: (more) => warningLogger({ ...bindings, ...more }),
  };
}
