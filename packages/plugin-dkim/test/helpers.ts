// Shared test parts: drive the plugin through the queue stage with the plugin-api test kit, and verify
// the result with two independent verifiers (dkimpy, mailauth) that fetch keys from a test DNS server.
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Plugin } from '@tern/plugin-api';
import { type TestSessionOptions, testPlugins } from '@tern/plugin-api/testing';
import type { TestDns } from '@tern/testkit';

const here = dirname(fileURLToPath(import.meta.url));

export const CRLF = '\r\n';

/** A small message with CRLF line ends. */
export function message(
  from = 'Alice <alice@example.com>',
  body = 'Hello,\r\n\r\nthis  is\ta test.  \r\n\r\n\r\n',
  extra: string[] = [],
): string {
  return [
    `From: ${from}`,
    'To: Bob <bob@example.net>',
    'Subject: DKIM test',
    'Date: Thu, 27 Nov 2025 10:00:00 +0000',
    'Message-ID: <test-1@example.com>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    ...extra,
    '',
    body,
  ].join(CRLF);
}

/** Runs one transaction through the plugins (as a trusted client unless told) and returns the queued message. */
export async function sendThrough(
  plugins: Plugin | Plugin[],
  raw: string | Buffer,
  options: TestSessionOptions = { trusted: true },
): Promise<{ raw: Buffer; logs: ReturnType<typeof testPlugins>['logs'] }> {
  const session = testPlugins(plugins, options);
  await session.connect();
  await session.helo('client.example.com');
  await session.mailFrom('alice@example.com');
  await session.rcptTo('bob@example.net');
  const result = await session.data(raw);
  if (result.verdict.kind !== 'continue' && result.verdict.kind !== 'accept') {
    throw new Error(`message refused: ${JSON.stringify(result.verdict)}`);
  }
  return { raw: result.message.toBuffer(), logs: session.logs };
}

export interface DkimpyResult {
  index: number;
  valid: boolean;
  error?: string;
  domain: string;
  selector: string;
  algorithm: string | null;
}

let python: string | undefined;

/**
 * The Python that has dkimpy, PyNaCl (Ed25519) and dnspython. Fails (never skips) when there is none:
 * an unverified signer is the thing these tests exist to prevent.
 */
export function dkimpyPython(): string {
  if (python) return python;
  const tried: string[] = [];
  for (const candidate of ['/usr/bin/python3', 'python3']) {
    const probe = spawnSync(candidate, ['-c', 'import dkim, nacl.signing, dns.resolver'], {
      encoding: 'utf8',
    });
    if (probe.status === 0) {
      python = candidate;
      return candidate;
    }
    tried.push(
      `${candidate}: ${(probe.stderr || probe.error?.message || 'failed').trim().split('\n').at(-1)}`,
    );
  }
  throw new Error(
    `python3-dkim (dkimpy) with python3-nacl and python3-dnspython is required to verify DKIM signatures independently; install it with: apt-get install -y python3-dkim python3-nacl python3-dnspython (${tried.join('; ')})`,
  );
}

/** Verifies every DKIM-Signature of a message with dkimpy, keys from the test DNS server. */
export async function verifyWithDkimpy(raw: Buffer | Readable, dns: TestDns): Promise<DkimpyResult[]> {
  const out = await runWithStdin(
    dkimpyPython(),
    [join(here, 'verify_dkim.py'), dns.host, String(dns.port)],
    raw,
  );
  return (JSON.parse(out) as { signatures: DkimpyResult[] }).signatures;
}

/** Runs a program with `input` on its stdin; resolves with its stdout, rejects with its stderr when it fails. */
async function runWithStdin(command: string, args: string[], input: Buffer | Readable): Promise<string> {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  // A verifier that exits early closes stdin under us; its exit code and stderr tell why.
  child.stdin.on('error', () => {});
  (Buffer.isBuffer(input) ? Readable.from([input]) : input).pipe(child.stdin);
  const code = await exited;
  if (code !== 0) throw new Error(`${args[0]} exited ${code}: ${err}`);
  return out;
}

export interface MailauthResult {
  domain: string | undefined;
  selector: string | undefined;
  algorithm: string | undefined;
  result: string;
  comment: string | undefined;
}

/** Verifies with mailauth's verifier (in a plain node process), keys from the test DNS server. */
export async function verifyWithMailauth(raw: Buffer, dns: TestDns): Promise<MailauthResult[]> {
  const out = await runWithStdin(process.execPath, [join(here, 'verify_mailauth.mjs'), dns.server], raw);
  return JSON.parse(out) as MailauthResult[];
}

/** The DKIM-Signature values of a message, top to bottom, unfolded. */
export function signaturesOf(raw: Buffer): string[] {
  const text = raw.toString('latin1');
  const head = text.slice(0, text.indexOf('\r\n\r\n') + 2);
  return [...head.matchAll(/^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)/gim)].map((m) =>
    (m[1] as string).replace(/\r\n[ \t]+/g, ' ').trim(),
  );
}
