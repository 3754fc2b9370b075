// strict-dmarc with the spam filter, driven by the plugin test kit against the test DNS server:
// a p=reject failure is refused (the filter alone only tags it), a forwarder's is let through,
// passing mail is untouched, and the config order does not matter.
import { type Plugin, PluginOptionError } from '@tern/plugin-api';
import { testPlugins } from '@tern/plugin-api/testing';
import { spamFilter } from '@tern/plugin-spam';
import { startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { strictDmarc } from '../src/index.js';

let dns: TestDns;

beforeAll(async () => {
  dns = await startDnsServer({
    'bank.test': { TXT: ['v=spf1 ip4:192.0.2.10 -all'] },
    '_dmarc.bank.test': { TXT: ['v=DMARC1; p=reject'] },
  });
});
afterAll(async () => {
  await dns.stop();
});

const message = [
  'From: CEO <ceo@bank.test>',
  'To: alice@example.org',
  'Subject: Wire transfer',
  `Date: ${new Date().toUTCString()}`,
  'Message-ID: <1@bank.test>',
  '',
  'Please pay the attached invoice today.',
  '',
].join('\r\n');

const filter = (): Plugin => spamFilter({ dns: { servers: [dns.server] }, dmarc: { onReject: 'score' } });

async function send(plugins: Plugin[], client: string) {
  const session = testPlugins(plugins, { remoteAddress: client, localDomains: ['example.org'] });
  await session.connect();
  await session.helo('mail.sender.test');
  await session.mailFrom('ceo@bank.test');
  await session.rcptTo('alice@example.org');
  return { result: await session.data(message), logs: session.logs };
}

describe('strict-dmarc', () => {
  test('the spam filter alone only tags a p=reject failure', async () => {
    const { result } = await send([filter()], '203.0.113.9');
    expect(result.verdict.kind).toBe('continue');
    expect(result.message.headers.get('x-spam-status')).toMatch(/^Yes, .*DMARC_POLICY_REJECT/);
  });

  test('refuses it with 550 5.7.1, whatever the config order', async () => {
    for (const plugins of [
      [filter(), strictDmarc()],
      [strictDmarc(), filter()],
    ]) {
      const { result, logs } = await send(plugins, '203.0.113.9');
      expect(result.verdict).toEqual({
        kind: 'reject',
        reply: {
          code: 550,
          enhanced: '5.7.1',
          text: 'Message rejected: its From domain does not authorize it (DMARC)',
        },
      });
      expect(logs).toContainEqual(
        expect.objectContaining({
          message: 'refused: fails DMARC of a p=reject domain',
          fields: expect.objectContaining({ plugin: 'strict-dmarc', domain: 'bank.test' }),
        }),
      );
    }
  });

  test('lets a listed forwarder through (tagged by the filter)', async () => {
    const { result } = await send(
      [filter(), strictDmarc({ forwarders: ['198.51.100.0/24'] })],
      '198.51.100.7',
    );
    expect(result.verdict.kind).toBe('continue');
    expect(result.message.headers.get('x-spam-flag')).toBe('YES');
  });

  test('leaves mail that passes DMARC alone', async () => {
    const { result } = await send([filter(), strictDmarc()], '192.0.2.10');
    expect(result.verdict.kind).toBe('continue');
    expect(result.message.headers.get('authentication-results')).toMatch(/dmarc=pass/);
  });

  test('validates its options when called, naming the field', () => {
    expect(() => strictDmarc({ forwarders: ['198.51.100.0/24', 'mail.example.net'] })).toThrow(
      PluginOptionError,
    );
    expect(() => strictDmarc({ forwarders: ['198.51.100.0/24', 'mail.example.net'] })).toThrow(
      /^plugin strict-dmarc: option forwarders\[1\]: not a CIDR block: "mail\.example\.net": expected an address or a CIDR block/,
    );
  });
});
