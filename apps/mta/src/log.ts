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
