// strict-dmarc inside a real tern process (tern.dmarc.config.js) behind the spam filter, judged by
// swaks (an independent SMTP client; XCLIENT names the client, as a trusted proxy would), against
// a test DNS server publishing bank.test's SPF, DKIM key and DMARC p=reject, and delivering into
// Maildir: a spoofed sender is refused with 550 5.7.1, a forwarder's copy is delivered tagged, and
// a DKIM-signed message passes DMARC from a host SPF does not list.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testPlugins } from '@tern/plugin-api/testing';
import { dkim, generateKey } from '@tern/plugin-dkim';
import { freePort, startDnsServer, swaks, type TestDns, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTern, type TernProcess } from './tern-process.js';

const dir = mkdtempSync(join(import.meta.dirname, '.tmp-'));
const key = generateKey({ domain: 'bank.test', selector: 'sel' });
let dns: TestDns;
let tern: TernProcess | undefined;
let port: number;

beforeAll(async () => {
  dns = await startDnsServer({
    // bank.test sends from 192.0.2.10 only, signs with selector "sel" and asks to reject failures.
    'bank.test': { TXT: ['v=spf1 ip4:192.0.2.10 -all'] },
    '_dmarc.bank.test': { TXT: ['v=DMARC1; p=reject'] },
    [key.dnsName]: { TXT: [key.txtRecord] },
  });
  port = await freePort();
  tern = await startTern('tern.dmarc.config.js', {
    TERN_PORT: String(port),
    TERN_DATA: dir,
    TERN_DNS: dns.server,
  });
  expect(tern.output()).toContain('plugins: spam, strict-dmarc');
});
afterAll(async () => {
  tern?.stop();
  await dns?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Messages delivered to alice, as files in her Maildir. */
function inbox(): string[] {
  const folder = join(dir, 'maildir', 'alice', 'new');
  return existsSync(folder) ? readdirSync(folder).map((f) => readFileSync(join(folder, f), 'latin1')) : [];
}

/** A message from ceo@bank.test, handed over by `client` (XCLIENT, from the trusted 127.0.0.1). */
const send = (client: string, args: string[]) =>
  swaks(port, [
    '--xclient-addr',
    client,
    '--xclient-name',
    '[UNAVAILABLE]',
    '--ehlo',
    'mail.sender.test',
    '--from',
    'ceo@bank.test',
    '--to',
    'alice@example.org',
    ...args,
  ]);

describe('strict-dmarc behind the spam filter, in a running MTA', () => {
  test('a spoofed sender of a p=reject domain is refused with 550 5.7.1 at the end of DATA', async () => {
    const sent = await send('203.0.113.9', ['--h-From', 'CEO <ceo@bank.test>', '--h-Subject', 'spoofed']);
    expect(sent.output).toMatch(
      / -> \.\n<\*\* +550 5\.7\.1 Message rejected: its From domain does not authorize it \(DMARC\)/,
    );
    expect(sent.output).not.toMatch(/queued as/);
    await waitFor(() => tern?.output().includes('refused: fails DMARC of a p=reject domain') === true, 5000);
  });

  test('the same from the listed forwarder is delivered, only tagged by the spam filter', async () => {
    const sent = await send('198.51.100.7', ['--h-From', 'CEO <ceo@bank.test>', '--h-Subject', 'forwarded']);
    expect(sent.output).toMatch(/<- {2}250 2\.0\.0 queued as/);
    await waitFor(() => inbox().some((m) => m.includes('Subject: forwarded')), 15_000);
    const message = inbox().find((m) => m.includes('Subject: forwarded')) ?? '';
    expect(message).toMatch(
      /^X-Spam-Status: Yes, score=\d+\.\d, required=5\.0, tests=.*DMARC_POLICY_REJECT/m,
    );
    expect(message).toMatch(/^Authentication-Results: mx\.example\.org;[\s\S]*dmarc=fail /m);
  });

  test('a DKIM-signed message passes DMARC from a host that SPF does not list', async () => {
    // Signed by bank.test's key through the DKIM plugin, as bank.test's own MTA would.
    const signer = testPlugins(
      dkim({ domains: { 'bank.test': { selector: 'sel', key: key.privateKeyPem } }, signUntrusted: true }),
    );
    await signer.mailFrom('ceo@bank.test');
    await signer.rcptTo('alice@example.org');
    const raw = [
      'From: CEO <ceo@bank.test>',
      'To: alice@example.org',
      'Subject: signed and relayed',
      `Date: ${new Date().toUTCString()}`,
      '',
      'This one is genuine.',
      '',
    ].join('\r\n');
    const signed = (await signer.data(raw)).message.toBuffer();
    const file = join(dir, 'signed.eml');
    writeFileSync(file, signed);

    const sent = await send('203.0.113.9', ['--data', file]);
    expect(sent.output).toMatch(/<- {2}250 2\.0\.0 queued as/);
    await waitFor(() => inbox().some((m) => m.includes('Subject: signed and relayed')), 15_000);
    const message = inbox().find((m) => m.includes('Subject: signed and relayed')) ?? '';
    const results = /^Authentication-Results: (.*(?:\r?\n[ \t].*)*)/m
      .exec(message)?.[1]
      ?.replace(/\r?\n[ \t]+/g, ' ');
    expect(results, message).toMatch(/spf=fail .*smtp\.mailfrom=ceo@bank\.test/);
    expect(results).toMatch(/dkim=pass .*header\.[di]=@?bank\.test/);
    expect(results).toMatch(/dmarc=pass .*header\.from=bank\.test/);
  });
});
