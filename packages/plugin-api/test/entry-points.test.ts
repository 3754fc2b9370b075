// The three entry points keep to their readers: authors get no runner internals, the runner's
// users get what core and the app need, the test kit what a plugin's tests need.
import { describe, expect, expectTypeOf, test } from 'vitest';
import * as host from '../src/host.js';
import type { HookContexts, HookName } from '../src/index.js';
import * as authors from '../src/index.js';
import * as testing from '../src/testing/index.js';

describe('entry points', () => {
  test('@tern/plugin-api has what authors need and nothing of the runner', () => {
    for (const name of ['definePlugin', 'reject', 'tempfail', 'accept', 'disconnect', 'next', 'Headers'])
      expect(authors).toHaveProperty(name);
    for (const name of ['defineResult', 'parseOptions', 'PluginOptionError', 'NetworkList', 'HOOK_KINDS'])
      expect(authors).toHaveProperty(name);
    for (const name of [
      'PluginHost',
      'StateScope',
      'ResultStore',
      'memoryLogger',
      'MessageContent',
      'Replies',
    ])
      expect(authors).not.toHaveProperty(name);
  });

  test('/host runs plugins; /testing tests them', () => {
    for (const name of ['PluginHost', 'StateScope', 'MessageContent', 'Replies', 'memorySource'])
      expect(host).toHaveProperty(name);
    for (const name of ['testPlugins', 'testDelivery', 'memoryLogger', 'MessageContent'])
      expect(testing).toHaveProperty(name);
    expect(testing).not.toHaveProperty('PluginHost');
  });

  test('every hook context carries an AbortSignal', () => {
    expectTypeOf<HookContexts[HookName]['signal']>().toEqualTypeOf<AbortSignal>();
  });
});
