import { describe, expect, test } from 'vitest';
import { addressGroup } from '../src/address.js';

describe('client address groups', () => {
  test('IPv4 by address and by /24', () => {
    expect(addressGroup('192.0.2.77', 32, 64)).toBe('192.0.2.77');
    expect(addressGroup('192.0.2.77', 24, 48)).toBe('192.0.2.0/24');
    expect(addressGroup('192.0.2.200', 24, 48)).toBe('192.0.2.0/24');
    expect(addressGroup('192.0.3.1', 24, 48)).toBe('192.0.3.0/24');
  });

  test('IPv4-mapped IPv6 counts as the IPv4 address', () => {
    expect(addressGroup('::ffff:192.0.2.77', 32, 64)).toBe('192.0.2.77');
    expect(addressGroup('::FFFF:c000:024d', 24, 64)).toBe('192.0.2.0/24');
  });

  test('IPv6 by /64, whatever the spelling', () => {
    const group = '2001:db8:1:2::/64';
    expect(addressGroup('2001:db8:1:2::1', 32, 64)).toBe(group);
    expect(addressGroup('2001:0DB8:0001:0002:ffff:ffff:ffff:ffff', 32, 64)).toBe(group);
    expect(addressGroup('[2001:db8:1:2:a::b]', 32, 64)).toBe(group);
    expect(addressGroup('fe80::1%eth0', 32, 64)).toBe('fe80::/64');
    expect(addressGroup('2001:db8:1:3::1', 32, 64)).toBe('2001:db8:1:3::/64');
    expect(addressGroup('2001:db8:1:2::1', 32, 48)).toBe('2001:db8:1::/48');
    expect(addressGroup('2001:db8::7', 32, 128)).toBe('2001:db8::7');
    expect(addressGroup('::1', 32, 128)).toBe('::1');
  });

  test('an odd prefix masks inside a byte', () => {
    expect(addressGroup('192.0.2.255', 25, 64)).toBe('192.0.2.128/25');
    expect(addressGroup('2001:fdb8:ffff::', 32, 20)).toBe('2001:f000::/20');
    expect(addressGroup('2001:db8:ffff::', 32, 20)).toBe('2001::/20');
  });

  test('not an address', () => {
    expect(addressGroup('300.1.1.1', 24, 64)).toBeUndefined();
    expect(addressGroup('example.test', 24, 64)).toBeUndefined();
  });
});
