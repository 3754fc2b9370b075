import { describe, expect, it } from 'vitest';
import { type Logger, type LogLevel, lazyChild } from '../src/index.js';
import { memoryLogger } from '../src/logger.js';

/** A memory logger that counts the children made and writes only `level` and above. */
function leveled(
  min: LogLevel,
): Logger & { children: number; records: ReturnType<typeof memoryLogger>['records'] } {
  const order: LogLevel[] = ['debug', 'info', 'warn', 'error'];
  const inner = memoryLogger();
  const counter = {
    children: 0,
    records: inner.records,
    debug: inner.debug,
    info: inner.info,
    warn: inner.warn,
    error: inner.error,
    child(bindings: Record<string, unknown>): Logger {
      counter.children++;
      return inner.child(bindings);
    },
    isLevelEnabled: (level: LogLevel) => order.indexOf(level) >= order.indexOf(min),
  };
  return counter;
}

describe('lazyChild', () => {
  it('makes no child while only records of levels that are off are written', () => {
    const parent = leveled('warn');
    const log = lazyChild(parent, { session: 's1' });
    log.info({ remote: '192.0.2.1' }, 'connection');
    log.debug('detail');
    expect(parent.children).toBe(0);
    expect(parent.records).toEqual([]);
  });

  it('makes the child once, at the first record written, with its bindings', () => {
    const parent = leveled('info');
    const log = lazyChild(parent, { session: 's1' });
    log.debug('off');
    log.info({ remote: '192.0.2.1' }, 'connection');
    log.warn('plain text');
    expect(parent.children).toBe(1);
    expect(parent.records).toEqual([
      { level: 'info', message: 'connection', fields: { session: 's1', remote: '192.0.2.1' } },
      { level: 'warn', message: 'plain text', fields: { session: 's1' } },
    ]);
  });

  it('writes every level when the parent cannot tell which are on', () => {
    const parent = memoryLogger();
    const log = lazyChild(parent, { session: 's2' });
    log.debug({ a: 1 }, 'd');
    log.child({ hook: 'helo' }).error('e');
    expect(parent.records).toEqual([
      { level: 'debug', message: 'd', fields: { session: 's2', a: 1 } },
      { level: 'error', message: 'e', fields: { session: 's2', hook: 'helo' } },
    ]);
  });
});
