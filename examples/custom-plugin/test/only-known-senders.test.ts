import { accept, definePlugin, PluginOptionError, reject } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { describe, expect, test } from 'vitest';
import { onlyKnownSenders } from '../src/index.js';

describe('only-known-senders', () => {
  test('refuses unknown senders with 550 5.7.1', async () => {
    const session = testPlugins(onlyKnownSenders({ senders: ['app@example.com'] }));
    expect((await session.mailFrom('APP@example.com')).kind).toBe('continue');
    expect(await session.mailFrom('spam@elsewhere.test')).toMatchObject({
      kind: 'reject',
      reply: { code: 550, enhanced: '5.7.1', text: 'Sender not allowed here' },
    });
    expect(session.logs).toContainEqual(
      expect.objectContaining({
        message: 'unknown sender',
        fields: expect.objectContaining({ plugin: 'only-known-senders' }),
      }),
    );
  });

  test('lets authenticated users send as anyone', async () => {
    const passwords = definePlugin({
      name: 'test-passwords',
      auth: (ctx) => (ctx.password === 'secret' ? accept() : reject(535, '5.7.8', 'Bad credentials')),
    });
    const session = testPlugins([passwords, onlyKnownSenders({ senders: [] })]);
    expect((await session.mailFrom('x@y.test')).kind).toBe('reject');
    expect((await session.auth('alice', 'wrong')).kind).toBe('reject');
    expect((await session.mailFrom('x@y.test')).kind).toBe('reject');
    expect((await session.auth('alice', 'secret')).kind).toBe('accept');
    expect((await session.mailFrom('x@y.test')).kind).toBe('continue');
  });

  test('validates its options when called, naming the field', () => {
    expect(() => onlyKnownSenders({ senders: ['not-an-address'] })).toThrow(PluginOptionError);
    expect(() => onlyKnownSenders({ senders: ['not-an-address'] })).toThrow('option senders[0]');
    expect(() => onlyKnownSenders({} as never)).toThrow('option senders:');
  });
});
