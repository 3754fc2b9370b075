// The one IP module: the union of what plugin-spam (DNS list names, greylisting networks) and
// plugin-ratelimit (address groups, allow-lists) parsed on their own before.
import { describe, expect, test } from 'vitest';
import {
  formatIp,
  NetworkList,
  networkOf,
  normalizeIp,
  parseCidr,
  parseIp,
  reversedLabel,
} from '../src/index.js';

describe('addresses', () => {
  test('normalizes mapped IPv4, zone indexes and case', () => {
    expect(normalizeIp('::FFFF:192.0.2.1')).toBe('192.0.2.1');
    expect(normalizeIp('FE80::1%eth0')).toBe('fe80::1');
    expect(normalizeIp('2001:DB8::1')).toBe('2001:db8::1');
  });

  test('parses every spelling sockets and headers use', () => {
    expect(parseIp('192.0.2.1')).toEqual({ family: 4, bytes: Uint8Array.from([192, 0, 2, 1]) });
    expect(parseIp('::ffff:192.0.2.1')).toEqual(parseIp('192.0.2.1'));
    expect(parseIp('::FFFF:c000:0201')).toEqual(parseIp('192.0.2.1'));
    expect(formatIp(parseIp('[2001:0DB8::0001]')!)).toBe('2001:db8::1');
    expect(formatIp(parseIp('fe80::1%eth0')!)).toBe('fe80::1');
    expect(formatIp(parseIp('::')!)).toBe('::');
    expect(formatIp(parseIp('64:ff9b::192.0.2.1')!)).toBe('64:ff9b::c000:201');
    expect(parseIp('example.test')).toBeUndefined();
    expect(parseIp('300.1.1.1')).toBeUndefined();
  });

  test('RFC 5952: the longest run of two or more zero groups becomes ::', () => {
    expect(formatIp(parseIp('2001:db8:0:0:1:0:0:1')!)).toBe('2001:db8::1:0:0:1');
    expect(formatIp(parseIp('2001:db8:0:1:1:1:1:1')!)).toBe('2001:db8:0:1:1:1:1:1');
    expect(formatIp(parseIp('2001:db8:0:0:1::')!)).toBe('2001:db8:0:0:1::');
  });

  test('networks of an address (greylisting, rate-limit groups)', () => {
    expect(networkOf('192.0.2.77', 24, 64)).toBe('192.0.2.0/24');
    expect(networkOf('192.0.2.77', 16, 64)).toBe('192.0.0.0/16');
    expect(networkOf('192.0.2.77', 32, 64)).toBe('192.0.2.77/32');
    expect(networkOf('192.0.2.255', 25, 64)).toBe('192.0.2.128/25');
    expect(networkOf('::ffff:192.0.2.77', 24, 64)).toBe('192.0.2.0/24');
    expect(networkOf('2001:db8:1:2:3:4:5:6', 24, 64)).toBe('2001:db8:1:2::/64');
    expect(networkOf('2001:0DB8:0001:0002:ffff:ffff:ffff:ffff', 24, 64)).toBe('2001:db8:1:2::/64');
    expect(networkOf('[2001:db8:1:2:a::b]', 24, 48)).toBe('2001:db8:1::/48');
    expect(networkOf('2001:fdb8:ffff::', 32, 20)).toBe('2001:f000::/20');
    expect(networkOf('fe80::1%eth0', 32, 64)).toBe('fe80::/64');
    expect(networkOf('2001:db8:0:0:1:0:0:1', 24, 128)).toBe('2001:db8::1:0:0:1/128');
    expect(networkOf('not an address', 24, 64)).toBeUndefined();
  });

  test('CIDR blocks', () => {
    expect(parseCidr('192.0.2.0/24')).toMatchObject({ address: '192.0.2.0', prefix: 24, ip: { family: 4 } });
    expect(parseCidr(' 2001:DB8::/32 ')).toMatchObject({
      address: '2001:db8::',
      prefix: 32,
      ip: { family: 6 },
    });
    expect(parseCidr('198.51.100.7')).toMatchObject({ prefix: 32 });
    expect(parseCidr('::1')).toMatchObject({ prefix: 128 });
    for (const bad of ['192.0.2.0/33', '192.0.2.0/24/1', '2001:db8::/129', '10.0.0.0/x', 'example.test', ''])
      expect(parseCidr(bad), bad).toBeUndefined();
  });

  test('DNS list query labels (RFC 5782)', () => {
    expect(reversedLabel('192.0.2.1')).toBe('1.2.0.192');
    expect(reversedLabel('::ffff:192.0.2.1')).toBe('1.2.0.192');
    expect(reversedLabel('2001:db8::1')).toBe(
      '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2',
    );
    expect(() => reversedLabel('example.test')).toThrow(/not an IP address/);
  });

  test('network lists match by CIDR, bare addresses, mapped IPv4 and zones', () => {
    const list = NetworkList.parse(['192.0.2.0/25', '2001:db8::/32', '198.51.100.7', 'fe80::/10']);
    expect(list.contains('192.0.2.127')).toBe(true);
    expect(list.contains('192.0.2.128')).toBe(false);
    expect(list.contains('::ffff:198.51.100.7')).toBe(true);
    expect(list.contains('2001:db8:ffff::1')).toBe(true);
    expect(list.contains('fe80::1%eth0')).toBe(true);
    expect(list.contains('nonsense')).toBe(false);
    expect(list.contains('192.0.2.6')).toBe(true);
    expect(list.contains('2001:db9::1')).toBe(false);
    expect(NetworkList.parse([]).contains('10.0.0.1')).toBe(false);
    expect(() => NetworkList.parse(['10.0.0.0/8', '10.0.0.0/x'])).toThrow(/prefix length must be 0 to 32/);
  });
});
