// The outbound TLS keys (delivery.dns.dnssec, delivery.mtaSts, delivery.tlsPolicy,
// delivery.tlsReports, publish): accepted as documented, refused with the field and the fix.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@tern/plugin-api';
import { makeCertificateAuthority } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import { ConfigError, validateConfig } from '../src/config.js';
import { checkMta } from '../src/mta.js';

const dir = mkdtempSync(join(tmpdir(), 'tern-outbound-tls-'));
writeFileSync(join(dir, 'ca.pem'), makeCertificateAuthority('config test CA').cert);
writeFileSync(join(dir, 'not-a-cert.pem'), 'hello\n');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = { listeners: [{ kind: 'mx' }], localDomains: ['a.test'] };
const problems = (delivery: unknown, extra: Record<string, unknown> = {}): string[] => {
  try {
    validateConfig({ ...base, delivery, ...extra }, dir);
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  return [];
};

describe('outbound TLS config', () => {
  test('the documented keys are accepted', async () => {
    const config = validateConfig(
      {
        ...base,
        delivery: {
          dns: { dnssec: ['127.0.0.1:5353'] },
          mtaSts: { ca: 'ca.pem', port: 8443, timeoutMs: 5000, maxBytes: 32_768 },
          tlsPolicy: {
            'bank.test': 'dane-only',
            '.partner.test': { level: 'verify', match: ['hostname', '.partner.test'] },
            '[relay.test]:587': 'encrypt',
            'legacy.test': 'none',
          },
          tlsReports: {
            organizationName: 'Tern Test',
            contactInfo: 'mailto:postmaster@a.test',
            from: 'tls-reports@a.test',
            sendAt: '02:30',
            maxFailureDetails: 50,
          },
        },
        publish: { mtaSts: { mode: 'enforce', maxAge: 86400 }, tlsRpt: { rua: ['mailto:tlsrpt@a.test'] } },
      },
      dir,
    );
    expect(config.delivery?.tlsPolicy?.['bank.test']).toBe('dane-only');
    // The deliverer takes it too (dane-only needs the validating resolver, which dnssec: [...] names).
    await expect(checkMta(config, silentLogger)).resolves.toBeUndefined();
  });

  test('mistakes name the field and the fix', () => {
    expect(problems({ tlsPolicy: { 'a.test': 'strict' } }).join('\n')).toMatch(
      /config\.delivery\.tlsPolicy\["a\.test"\]: "strict" is not a TLS policy level: use one of none, may, encrypt, verify, secure, dane, dane-only, mta-sts/,
    );
    expect(problems({ tlsPolicy: { 'http://a.test': 'verify' } }).join('\n')).toMatch(
      /config\.delivery\.tlsPolicy.*a domain \('example\.com', '\.example\.com'\) or a next hop/,
    );
    expect(problems({ dns: { dnssec: 'yes' } }).join('\n')).toMatch(
      /config\.delivery\.dns\.dnssec: true when delivery\.dns\.servers are DNSSEC-validating resolvers, or their addresses/,
    );
    expect(problems({ dns: { dnssec: true } }).join('\n')).toMatch(
      /config\.delivery\.dns\.dnssec: true trusts the AD bit of the servers in delivery\.dns\.servers, and there are none/,
    );
    expect(problems({ dns: { dnssec: ['127.0.0.1'], servers: ['127.0.0.2'] } }).join('\n')).toMatch(
      /config\.delivery\.dns\.dnssec: the validating resolvers are listed here and in servers: list them once/,
    );
    expect(problems({ mtaSts: { ca: 'missing.pem' } })).toEqual([
      "config.delivery.mtaSts.ca: file not found: missing.pem (relative paths start at the config's folder)",
    ]);
    expect(problems({ mtaSts: { ca: 'not-a-cert.pem' } }).join('\n')).toMatch(
      /config\.delivery\.mtaSts\.ca: not-a-cert\.pem is not a PEM certificate/,
    );
    expect(problems({ tlsReports: { organizationName: 'X' } }).join('\n')).toMatch(
      /config\.delivery\.tlsReports\.contactInfo: missing/,
    );
    expect(
      problems({ tlsReports: { organizationName: 'X', contactInfo: 'y', sendAt: '25:00' } }).join('\n'),
    ).toMatch(/config\.delivery\.tlsReports\.sendAt: a UTC time of day as HH:MM/);
    expect(problems(undefined, { publish: { tlsRpt: { rua: ['ftp://x'] } } }).join('\n')).toMatch(
      /config\.publish\.tlsRpt\.rua\[0\]: a mailto: or https: URI/,
    );
    expect(problems(undefined, { publish: { mtaSts: { mode: 'strict' } } }).join('\n')).toMatch(
      /config\.publish\.mtaSts\.mode/,
    );
  });

  test('dane-only without a validating resolver is refused at check time, naming the key', async () => {
    const config = validateConfig({ ...base, delivery: { tlsPolicy: { 'bank.test': 'dane-only' } } }, dir);
    await expect(checkMta(config, silentLogger)).rejects.toThrow(
      /config\.delivery\.tlsPolicy\["bank\.test"\]: dane-only needs DNSSEC/,
    );
  });
});
