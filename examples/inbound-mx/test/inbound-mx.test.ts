// The inbound-mx example as a real tern process: swaks (with XCLIENT standing in for clients on
// the Internet) against a test DNS server serving DNSBL, SPF and DMARC records, and a real LMTP
// server behind it.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  freePort,
  run,
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
let adminUrl: string;
const ADMIN_TOKEN = 'inbound-mx-test-token-0123456789';
/** `tern queue ...` against this tern's admin API. */
const operator = (args: string[]) =>
  run(process.execPath, [cli, ...args, '--admin', adminUrl, '--token', ADMIN_TOKEN]);

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
    // 203.0.113.77 is on the PBL part of the list: scored, not refused.
    '77.113.0.203.bl.test': { A: ['127.0.0.10'] },
    // soft.test forbids every client (-all) but asks for no DMARC action; hold.test asks for quarantine.
    'soft.test': { TXT: ['v=spf1 -all'] },
    '_dmarc.soft.test': { TXT: ['v=DMARC1; p=none'] },
    'hold.test': { TXT: ['v=spf1 ip4:198.51.100.1 -all'] },
    '_dmarc.hold.test': { TXT: ['v=DMARC1; p=quarantine'] },
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
      TERN_ADMIN_TOKEN: ADMIN_TOKEN,
      TERN_ADMIN_LISTEN: '127.0.0.1:0',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  tern.stderr?.on('data', (c) => {
    output += c;
  });
  await waitFor(() => output.includes('dashboard:') || tern?.exitCode !== null, 20_000);
  if (tern.exitCode !== null) throw new Error(output);
  adminUrl = /dashboard: (http:\/\/\S+?)\//.exec(output)?.[1] ?? '';
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

  test('a score from 5 tags: delivered with X-Spam-* headers and the subject prefix', async () => {
    const sent = await send('203.0.113.10', 'news@soft.test', ['--h-Subject', 'LIMITED OFFER TODAY']);
    expect(sent.output).toMatch(/<- {2}250 2\.0\.0 queued as/);
    await waitFor(() => lmtp.messages.some((m) => m.headers.includes('LIMITED OFFER')), 15_000);
    const message = lmtp.messages.find((m) => m.headers.includes('LIMITED OFFER'))!;
    expect(message.headers).toMatch(/^Subject: \[SPAM\] LIMITED OFFER TODAY/m);
    expect(message.headers).toMatch(/^X-Spam-Status: Yes, score=\d/m);
    expect(message.headers).toMatch(/SPF_FAIL/);
  });

  test('a score from 10 (or a p=quarantine DMARC failure) holds the message until an operator releases it', async () => {
    const sent = await send('203.0.113.10', 'ceo@hold.test', ['--h-Subject', 'held for review']);
    const queueId = /queued as (\S+)/.exec(sent.output)?.[1];
    expect(queueId).toBeDefined();
    await new Promise((r) => setTimeout(r, 1500));
    expect(lmtp.messages.some((m) => m.headers.includes('held for review'))).toBe(false);
    const inspected = await operator(['queue', 'inspect', queueId!]);
    expect(inspected.output, inspected.output).toMatch(/held/i);
    expect(inspected.output, inspected.output).toMatch(/dmarc policy quarantine for hold\.test/);
    const released = await operator(['queue', 'release', queueId!]);
    expect(released.status, released.output).toBe(0);
    await waitFor(() => lmtp.messages.some((m) => m.headers.includes('held for review')), 15_000);
    const message = lmtp.messages.find((m) => m.headers.includes('held for review'))!;
    expect(message.headers).toMatch(/^X-Tern-Quarantine: dmarc policy quarantine for hold\.test/m);
  });

  test('a score from 12 asks the client to retry later with 451 4.7.1', async () => {
    const sent = await send('203.0.113.77', 'news@soft.test');
    expect(sent.output).toMatch(/<\*\* +451 4\.7\.1/);
    expect(sent.output).not.toMatch(/queued as/);
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
