import { reject } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { describe, expect, test } from 'vitest';
import { movedMailboxes } from './moved-mailboxes.js';

describe('moved-mailboxes', () => {
  const plugin = movedMailboxes({ moved: { 'alice@example.com': 'alice@example.net' } });

  test('refuses a moved address and names the new one', async () => {
    const session = testPlugins(plugin);
    await session.mailFrom('bob@example.org');
    expect(await session.rcptTo('Alice@example.com')).toEqual(
      reject(551, '5.1.6', 'User has moved; please try <alice@example.net>'),
    );
    expect(session.logs).toContainEqual(expect.objectContaining({ message: 'mailbox moved' }));
  });

  test('has no opinion on anyone else', async () => {
    const session = testPlugins(plugin);
    await session.mailFrom('bob@example.org');
    expect(await session.rcptTo('carol@example.com')).toEqual({ kind: 'continue' });
  });

  test('stops start-up on a bad option, naming the field', () => {
    expect(() => movedMailboxes({ moved: { 'dave@example.com': 'nowhere' } })).toThrow(
      'plugin moved-mailboxes: option moved["dave@example.com"]: expected an address',
    );
  });
});
