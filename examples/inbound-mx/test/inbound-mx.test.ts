// The inbound-mx example as a real tern process: swaks (with XCLIENT standing in for clients on
// the Internet) against a test DNS server serving DNSBL, SPF and DMARC records, and a real LMTP
// server behind it.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  freePort,
  type SmtpSink,
  startDnsServer,
  startSmtpSink,
  swaks,
  type TestDns,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const root = resolve(import.meta.dirname, '../../..');
const cli = join(root, 'apps/mta/dist/cli.js');
const config = resolve(import.meta.dirname, '../tern.config.js');
const dir = mkdtempSync(join(import.meta.dirname, '.tmp-'));
const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
let dns: TestDns;
let lmtp: SmtpSink;
let tern: ChildProcess | undefined;
let port: number;

beforeAll(async () => {
  dns = await startDnsServer({
    // 203.0.113.66 is listed; the others are not.
    '66.113.0.203.bl.test': { A: ['127.0.0.2'] },
    'bl.test': {},
    // sender.test publishes SPF for 203.0.113.10 and a DMARC record; bank.test asks for rejection.
    'sender.test': { TXT: ['v=spf1 ip4:203.0.113.10 -all'] },
    '_dmarc.sender.test': { TXT: ['v=DMARC1; p=none'] },
    'bank.test': { TXT: ['v=spf1 ip4:198.51.100.1 -all'] },
    '_dmarc.bank.test': { TXT: ['v=DMARC1; p=reject'] },
    'client.sender.test': { A: ['203.0.113.10'] },
  });
  lmtp = await startSmtpSink({ lmtp: true, hostname: 'mailstore.example.org' });
  port = await freePort();
  let output = '';
  tern = spawn(process.execPath, [cli, 'start', '--config', config], {
    env: {
      ...process.env,
      TERN_PORT: String(port),
      TERN_DATA: join(dir, 'data'),
      TERN_DNS: dns.server,
      TERN_DNSBL: 'bl.test',
      TERN_LMTP: `127.0.0.1:${lmtp.port}`,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  tern.stderr?.on('data', (c) => {
    output += c;
  });
  await waitFor(() => output.includes('listening:') || tern?.exitCode !== null, 20_000);
  if (tern.exitCode !== null) throw new Error(output);
});
afterAll(async () => {
  tern?.kill('SIGKILL');
  await Promise.all([dns?.stop(), lmtp?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

/** A message from `client` (given to tern by XCLIENT, as a trusted proxy would). */
const send = (client: string, from: string, args: string[] = []) =>
  swaks(port, [
    '--xclient-addr',
    client,
    '--xclient-name',
    '[UNAVAILABLE]',
    '--ehlo',
    'client.sender.test',
    '--from',
    from,
    '--h-From',
    from,
    '--to',
    'alice@example.org',
    ...args,
  ]);

describe('inbound-mx example', () => {
  test('a client on the DNS block list is refused at RCPT', async () => {
    const sent = await send('203.0.113.66', 'someone@sender.test');
    expect(sent.output).toMatch(/<\*\* +550 5\.7\.1 .*203\.0\.113\.66.*bl\.test/);
    expect(sent.output).not.toMatch(/queued as/);
  });

  test('GTUBE is refused', async () => {
    const sent = await send('203.0.113.10', 'someone@sender.test', ['--body', `test\n${GTUBE}\n`]);
    expect(sent.output).toMatch(/<\*\* +550 5\.7\.1/);
    expect(sent.output).not.toMatch(/queued as/);
  });

  test('an SPF-failing sender of a p=reject domain is refused per DMARC', async () => {
    const sent = await send('203.0.113.10', 'ceo@bank.test');
    expect(sent.output).toMatch(/<\*\* +550 5\.7\.1/);
    expect(sent.output).not.toMatch(/queued as/);
  });

  test('a clean message arrives over LMTP with a correct Authentication-Results header', async () => {
    const sent = await send('203.0.113.10', 'friend@sender.test', ['--h-Subject', 'hello alice']);
    expect(sent.output).toMatch(/<- {2}250 2\.0\.0 queued as/);
    await waitFor(() => lmtp.messages.length === 1, 15_000);
    const message = lmtp.messages[0]!;
    expect(message.rcptTo).toEqual(['alice@example.org']);
    const results = /^Authentication-Results: (.*(?:\r\n[ \t].*)*)/m
      .exec(message.headers)?.[1]
      ?.replace(/\r\n[ \t]+/g, ' ');
    expect(results, message.headers).toMatch(/^mx\.example\.org;/);
    expect(results).toMatch(/spf=pass (\([^)]*\) )?smtp\.mailfrom=friend@sender\.test;/);
    expect(results).toMatch(/dmarc=pass .*header\.from=sender\.test/);
    expect(results).toMatch(/dkim=none/);
    expect(message.headers).toMatch(/^X-Spam-Status: No/m);
    expect(message.headers).toMatch(/Subject: hello alice/);
    expect(message.headers).toMatch(/^Received: from client\.sender\.test \(\[203\.0\.113\.10\]\)/m);
  });

  test('nobody relays through it', async () => {
    const sent = await swaks(port, [
      '--xclient-addr',
      '203.0.113.10',
      '--from',
      'a@sender.test',
      '--to',
      'victim@elsewhere.test',
    ]);
    expect(sent.output).toMatch(/<\*\* +554 5\.7\.1/);
  });
});
