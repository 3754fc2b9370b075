// Self-signed certificates for STARTTLS tests. selfsigned v5 only generates asynchronously, so the
// openssl CLI makes them: a synchronous helper is simpler to use at module level and in beforeAll.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A PEM private key and its self-signed certificate. */
export interface TestCertificate {
  key: string;
  cert: string;
}

const cache = new Map<string, TestCertificate>();

/**
 * A self-signed certificate (EC P-256, valid 30 days) whose SAN lists `hostnames` and IP 127.0.0.1; the
 * first name is also the subject CN. Cached per name list for the life of the process.
 */
export function makeCertificate(hostnames: string[] = ['localhost', 'mx.test']): TestCertificate {
  const names = hostnames.length > 0 ? hostnames : ['localhost'];
  const cacheKey = names.join('\n');
  const cached = cache.get(cacheKey);
  if (cached) return cached;

  const san = [...names.map((name) => (isIP(name) ? `IP:${name}` : `DNS:${name}`))];
  if (!names.includes('127.0.0.1')) san.push('IP:127.0.0.1');
  const dir = mkdtempSync(join(tmpdir(), 'tern-cert-'));
  try {
    const keyPath = join(dir, 'key.pem');
    const certPath = join(dir, 'cert.pem');
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-days',
          '30',
          '-subj',
          `/CN=${names[0]}`,
          '-addext',
          `subjectAltName=${san.join(',')}`,
          '-keyout',
          keyPath,
          '-out',
          certPath,
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
    } catch (error) {
      const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim() ?? '';
      throw new Error(
        `makeCertificate: openssl failed (${(error as Error).message}${stderr ? `: ${stderr}` : ''}); install the openssl CLI (apt-get install openssl)`,
      );
    }
    const certificate = { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8') };
    cache.set(cacheKey, certificate);
    return certificate;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
