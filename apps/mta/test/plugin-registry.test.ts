// The plugin registry with real hosts: init and shutdown once per instance across lists and
// generations, replaced plugins shut down only when nothing uses their hosts, and refused configs.
import { definePlugin, type Plugin, PluginRegistrationError } from '@tern/plugin-api';
import { describe, expect, test } from 'vitest';
import { PluginRegistry } from '../src/plugin-registry.js';
import { PluginInitError } from '../src/plugins.js';

/** A plugin that writes its lifecycle into `trace`. */
function traced(name: string, trace: string[], extra: Partial<Plugin> = {}): Plugin {
  return definePlugin({
    name,
    init: () => void trace.push(`init ${name}`),
    shutdown: () => void trace.push(`shutdown ${name}`),
    ...extra,
  });
}

const registry = (): PluginRegistry => new PluginRegistry({ hostOptions: {} });

describe('one owner for every plugin instance', () => {
  test('an instance in the global list and in a listener list starts once and stops once', async () => {
    const trace: string[] = [];
    const shared = traced('shared', trace);
    const own = traced('own', trace);
    const r = registry();
    const generation = await r.prepare({
      plugins: [shared],
      listeners: [{}, { plugins: [shared, own] }],
    });
    await r.activate(generation);
    expect(generation.listeners[0]).toBe(generation.global);
    expect(generation.listeners[1]?.plugins).toEqual([shared, own]);
    await r.close();
    expect(trace.sort()).toEqual(['init own', 'init shared', 'shutdown own', 'shutdown shared']);
  });

  test('an instance kept by the next config is neither started again nor stopped by the reload', async () => {
    const trace: string[] = [];
    const kept = traced('kept', trace);
    const r = registry();
    await r.activate(await r.prepare({ plugins: [kept, traced('old', trace)], listeners: [] }));
    await r.activate(await r.prepare({ plugins: [kept, traced('new', trace)], listeners: [] }));
    expect(trace).toEqual(['init kept', 'init old', 'init new', 'shutdown old']);
    await r.close();
    expect(trace.slice(4).sort()).toEqual(['shutdown kept', 'shutdown new']);
  });

  test('a replaced host is shut down only after the session and the attempt that hold it end', async () => {
    const trace: string[] = [];
    const old = traced('old', trace);
    const r = registry();
    const first = await r.prepare({ plugins: [old], listeners: [{}] });
    await r.activate(first);
    const session = first.listeners[0]?.retain();
    const attempt = r.deliveryHost().retain();
    const replaced = r.activate(await r.prepare({ plugins: [traced('new', trace)], listeners: [{}] }));
    expect(r.deliveryHost()).not.toBe(first.global);
    session?.();
    // The attempt still holds the old host, so its plugins are still running.
    expect(first.global.idle).toBe(false);
    expect(r.owns(old)).toBe(true);
    attempt();
    await replaced;
    expect(r.owns(old)).toBe(false);
    expect(trace).toEqual(['init old', 'init new', 'shutdown old']);
    await r.close();
  });

  test('a config whose init fails stops the instances it started, and leaves the running ones alone', async () => {
    const trace: string[] = [];
    const kept = traced('kept', trace);
    const r = registry();
    await r.activate(await r.prepare({ plugins: [kept], listeners: [] }));
    const broken = traced('broken', trace, {
      init: () => {
        throw new Error('cannot reach the reputation service');
      },
    });
    await expect(
      r.prepare({ plugins: [kept, traced('fresh', trace)], listeners: [{ plugins: [broken] }] }),
    ).rejects.toThrow(PluginInitError);
    expect(trace.sort()).toEqual(['init fresh', 'init kept', 'shutdown broken', 'shutdown fresh']);
    expect(r.owns(kept)).toBe(true);
    await r.close();
  });

  test('a config with an unknown hook starts nothing, and closes what its factories made', async () => {
    const trace: string[] = [];
    const r = registry();
    const typo = { name: 'typo', mailfrom: () => undefined } as unknown as Plugin;
    await expect(r.prepare({ plugins: [traced('fine', trace), typo], listeners: [] })).rejects.toThrow(
      new PluginRegistrationError('plugin typo: unknown hook "mailfrom"; did you mean "mailFrom"?'),
    );
    expect(trace).toEqual(['shutdown fine']);
  });

  test('an instance shut down by a reload cannot come back in a later config', async () => {
    const trace: string[] = [];
    const cached = traced('cached', trace);
    const r = registry();
    await r.activate(await r.prepare({ plugins: [cached], listeners: [] }));
    await r.activate(await r.prepare({ plugins: [], listeners: [] }));
    await expect(r.prepare({ plugins: [cached], listeners: [] })).rejects.toThrow(
      /plugin cached: this instance was shut down .*make plugins in the config file itself/,
    );
    expect(trace).toEqual(['init cached', 'shutdown cached']);
    await r.close();
  });

  test('a config still starting when the registry closes is shut down, not left running', async () => {
    const trace: string[] = [];
    let started: () => void = () => {};
    const starting = new Promise<void>((resolve) => {
      started = resolve;
    });
    let finish: () => void = () => {};
    const slow = traced('slow', trace, {
      init: () =>
        new Promise<void>((resolve) => {
          finish = resolve;
          started();
        }),
    });
    const r = registry();
    await r.activate(await r.prepare({ plugins: [traced('running', trace)], listeners: [] }));
    const reloading = r.prepare({ plugins: [slow], listeners: [] });
    await starting;
    await r.close();
    finish();
    await expect(reloading).rejects.toThrow('the plugin registry is closed');
    expect(trace).toEqual(['init running', 'shutdown running', 'shutdown slow']);
  });

  test('abort fires the signal of hooks running on the current and the draining hosts', async () => {
    const reasons: unknown[] = [];
    const waiting = (name: string): Plugin =>
      definePlugin({
        name,
        timeout: 60_000,
        deferred: (ctx) =>
          new Promise<void>((resolve) => {
            const stop = (): void => {
              reasons.push(`${name}: ${(ctx.signal.reason as Error).message}`);
              resolve();
            };
            // A hook that starts after the abort sees a signal that has fired already.
            if (ctx.signal.aborted) stop();
            else ctx.signal.addEventListener('abort', stop);
          }),
      });
    const r = registry();
    await r.activate(await r.prepare({ plugins: [waiting('old')], listeners: [] }));
    const input = {
      queueId: 'Q',
      envelope: { mailFrom: '', recipients: [] },
      attempt: 0,
      results: [],
      nextAttemptAt: new Date(),
    };
    const old = r.deliveryHost().runAdvise('deferred', input);
    const replaced = r.activate(await r.prepare({ plugins: [waiting('new')], listeners: [] }));
    const current = r.deliveryHost().runAdvise('deferred', input);
    r.abort(new Error('stopping'));
    await Promise.all([old, current, replaced]);
    expect(reasons.sort()).toEqual(['new: stopping', 'old: stopping']);
    await r.close();
  });
});
