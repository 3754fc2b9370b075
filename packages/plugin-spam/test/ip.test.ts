// Address arithmetic used for DNS list names and greylisting networks.

import { NetworkList } from '@tern/plugin-api';
import { describe, expect, it } from 'vitest';
import { expandIpv6, isNonPublic, networkOf, normalizeIp, parseCidr } from '../src/ip.js';

describe('ip helpers', () => {
  it('normalizes mapped IPv4 and zone indexes', () => {
    expect(normalizeIp('::FFFF:192.0.2.1')).toBe('192.0.2.1');
    expect(normalizeIp('FE80::1%eth0')).toBe('fe80::1');
  });

  it('expands IPv6, including an embedded IPv4 tail', () => {
    expect(expandIpv6('2001:db8::1')).toEqual([
      '2001',
      '0db8',
      '0000',
      '0000',
      '0000',
      '0000',
      '0000',
      '0001',
    ]);
    expect(expandIpv6('::ffff:192.0.2.1').slice(-2)).toEqual(['c000', '0201']);
    expect(expandIpv6('::')).toEqual(Array(8).fill('0000'));
  });

  it('computes greylisting networks', () => {
    expect(networkOf('192.0.2.77', 24, 64)).toBe('192.0.2.0/24');
    expect(networkOf('192.0.2.77', 16, 64)).toBe('192.0.0.0/16');
    expect(networkOf('192.0.2.77', 32, 64)).toBe('192.0.2.77/32');
    expect(networkOf('2001:db8:1:2:3:4:5:6', 24, 64)).toBe('2001:db8:1:2::/64');
    expect(networkOf('2001:db8:1:2:3:4:5:6', 24, 48)).toBe('2001:db8:1::/48');
    // RFC 5952 §4.2.3: the longest run of zeros is compressed.
    expect(networkOf('2001:db8:0:0:1::', 24, 128)).toBe('2001:db8:0:0:1::/128');
    expect(networkOf('2001:db8:0:0:1:0:0:1', 24, 128)).toBe('2001:db8::1:0:0:1/128');
  });

  it('matches allow-lists and rejects malformed networks', () => {
    const list = NetworkList.parse(['192.0.2.0/25', '2001:db8::/32', '198.51.100.7']);
    expect(list.contains('192.0.2.127')).toBe(true);
    expect(list.contains('192.0.2.128')).toBe(false);
    expect(list.contains('::ffff:198.51.100.7')).toBe(true);
    expect(list.contains('2001:db8:ffff::1')).toBe(true);
    expect(parseCidr('192.0.2.0/33')).toBeUndefined();
    expect(parseCidr('192.0.2.0/24/1')).toBeUndefined();
    expect(parseCidr('example.test')).toBeUndefined();
  });

  it('knows which addresses no public list can judge', () => {
    expect(isNonPublic('10.1.2.3')).toBe(true);
    expect(isNonPublic('::1')).toBe(true);
    expect(isNonPublic('fd00::1')).toBe(true);
    expect(isNonPublic('192.0.2.1')).toBe(false);
  });
});
