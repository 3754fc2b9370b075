// Which client addresses the DNS lists are never asked about (address parsing is @tern/plugin-api's).
import { describe, expect, it } from 'vitest';
import { isNonPublic } from '../src/dnslist.js';

describe('non-public addresses', () => {
  it('knows which addresses no public list can judge', () => {
    expect(isNonPublic('10.1.2.3')).toBe(true);
    expect(isNonPublic('::ffff:192.168.1.1')).toBe(true);
    expect(isNonPublic('::1')).toBe(true);
    expect(isNonPublic('fd00::1')).toBe(true);
    expect(isNonPublic('192.0.2.1')).toBe(false);
    expect(isNonPublic('2001:db8::1')).toBe(false);
  });
});
