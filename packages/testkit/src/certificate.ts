// Certificates for TLS tests: self-signed ones, and test CAs that issue chains (valid, expired, for any
// names). selfsigned v5 only generates asynchronously, so the openssl CLI makes them: a synchronous
// helper is simpler to use at module level and in beforeAll.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
    selfSigned(keyPath, certPath, `/CN=${names[0]}`, [`subjectAltName=${san.join(',')}`]);
    const certificate = { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8') };
    cache.set(cacheKey, certificate);
    return certificate;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A certificate issued by a {@link TestCertificateAuthority}. */
export interface IssuedCertificate extends TestCertificate {
  /** The leaf followed by the CA certificate, as a server presents it (`cert` is the leaf alone). */
  chain: string;
}

export interface IssueOptions {
  /** Validity in the past (2020), so the certificate has expired (default false). */
  expired?: boolean;
}

/** A test CA (EC P-256, valid 30 days) that issues server certificates. */
export interface TestCertificateAuthority {
  /** The CA certificate: what a client is configured to trust. */
  cert: string;
  key: string;
  /** A server certificate for `hostnames` (SANs; the first is also the CN), signed by this CA. */
  issue(hostnames: string[], options?: IssueOptions): IssuedCertificate;
}

/** A new test CA named `name` (its subject CN). Each call makes a new key: two CAs never trust each other. */
export function makeCertificateAuthority(name = 'Tern Test CA'): TestCertificateAuthority {
  const dir = mkdtempSync(join(tmpdir(), 'tern-ca-'));
  try {
    const keyPath = join(dir, 'ca.key');
    const certPath = join(dir, 'ca.pem');
    selfSigned(keyPath, certPath, `/CN=${name}`, [
      'basicConstraints=critical,CA:TRUE',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    const ca = { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8') };
    let serial = 1;
    return {
      ...ca,
      issue: (hostnames, options = {}) => issue(ca, serial++, hostnames, options),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function issue(
  ca: TestCertificate,
  serial: number,
  hostnames: string[],
  options: IssueOptions,
): IssuedCertificate {
  const names = hostnames.length > 0 ? hostnames : ['localhost'];
  const dir = mkdtempSync(join(tmpdir(), 'tern-issue-'));
  try {
    const path = (file: string): string => join(dir, file);
    writeFileSync(path('ca.pem'), ca.cert);
    writeFileSync(path('ca.key'), ca.key);
    writeFileSync(path('index.txt'), '');
    writeFileSync(path('serial'), `${serial.toString(16).padStart(2, '0')}\n`);
    const san = names.map((name) => (isIP(name) ? `IP:${name}` : `DNS:${name}`)).join(',');
    // `openssl ca` (unlike `x509 -req` on OpenSSL 3.0) takes explicit start and end dates: expired certificates.
    writeFileSync(
      path('ca.cnf'),
      [
        '[ca]',
        'default_ca = test_ca',
        '[test_ca]',
        `database = ${path('index.txt')}`,
        `new_certs_dir = ${dir}`,
        `serial = ${path('serial')}`,
        'default_md = sha256',
        'policy = any_name',
        'unique_subject = no',
        'email_in_dn = no',
        '[any_name]',
        'commonName = supplied',
        '[server]',
        'basicConstraints = critical,CA:FALSE',
        'keyUsage = critical,digitalSignature',
        'extendedKeyUsage = serverAuth',
        `subjectAltName = ${san}`,
        '',
      ].join('\n'),
    );
    openssl([
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-subj',
      `/CN=${names[0]}`,
      '-keyout',
      path('leaf.key'),
      '-out',
      path('leaf.csr'),
    ]);
    const now = Date.now();
    const dates = options.expired
      ? ['-startdate', '20200101000000Z', '-enddate', '20200201000000Z']
      : ['-startdate', asn1Time(now - 3_600_000), '-enddate', asn1Time(now + 30 * 86_400_000)];
    openssl([
      'ca',
      '-batch',
      '-config',
      path('ca.cnf'),
      '-cert',
      path('ca.pem'),
      '-keyfile',
      path('ca.key'),
      '-in',
      path('leaf.csr'),
      '-out',
      path('leaf.pem'),
      '-extensions',
      'server',
      '-notext',
      ...dates,
    ]);
    const cert = readFileSync(path('leaf.pem'), 'utf8');
    return { key: readFileSync(path('leaf.key'), 'utf8'), cert, chain: `${cert}${ca.cert}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A new EC P-256 key and a self-signed certificate for it, valid 30 days, with these extensions. */
function selfSigned(keyPath: string, certPath: string, subject: string, extensions: string[]): void {
  openssl([
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
    subject,
    ...extensions.flatMap((extension) => ['-addext', extension]),
    '-keyout',
    keyPath,
    '-out',
    certPath,
  ]);
}

/** YYYYMMDDHHMMSSZ, as `openssl ca -startdate` takes it. */
function asn1Time(ms: number): string {
  return `${new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim() ?? '';
    throw new Error(
      `openssl ${args[0]} failed (${(error as Error).message}${stderr ? `: ${stderr}` : ''}); install the openssl CLI (apt-get install openssl)`,
    );
  }
}
