// The client host name in Received comes from a forward-confirmed PTR lookup against a real
// (test) DNS server; unconfirmed, failing or slow lookups fall back to the address literal.
import { promises as dns } from 'node:dns';
import { reverseName, startDnsServer, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { HostResolver } from '../src/index.js';
import { closeAll, dialFrom, LOCAL_DOMAIN, message, startListener } from './helpers.js';

let server: TestDns;
let resolver: HostResolver;

beforeAll(async () => {
  server = await startDnsServer({
    [reverseName('127.0.0.2')]: { PTR: ['client.tern.test'] },
    'client.tern.test': { A: ['127.0.0.2'] },
    [reverseName('127.0.0.3')]: { PTR: ['mail.bigbank.example'] },
    'mail.bigbank.example': { A: ['192.0.2.1'] },
  });
  server.servfail(reverseName('127.0.0.4'));
  const r = new dns.Resolver({ timeout: 1000, tries: 1 });
  r.setServers([server.server]);
  resolver = r;
});

afterAll(async () => {
  await closeAll();
  await server.stop();
});

async function receivedFrom(
  port: number,
  localAddress: string,
  queue: { raw(i?: number): Buffer },
  index: number,
): Promise<string> {
  const c = await dialFrom(port, localAddress);
  expect(await c.read()).toMatch(/^220 /);
  await c.command('EHLO helo.example');
  await c.command('MAIL FROM:<a@example.org>');
  await c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`);
  await c.command('DATA');
  c.send(`${message()}.\r\n`);
  expect(await c.read()).toMatch(/^250 /);
  c.close();
  return /^Received: from \S+ \(([^)]*)\)/.exec(queue.raw(index).toString())?.[1] ?? '';
}

describe('forward-confirmed reverse DNS', () => {
  test('a PTR that resolves back to the client is used; a lying, failing or absent one is not', async () => {
    const h = await startListener({ reverseLookup: true }, { resolver });
    expect(await receivedFrom(h.port, '127.0.0.2', h.queue, 0)).toBe('client.tern.test [127.0.0.2]');
    expect(await receivedFrom(h.port, '127.0.0.3', h.queue, 1)).toBe('[127.0.0.3]');
    expect(await receivedFrom(h.port, '127.0.0.4', h.queue, 2)).toBe('[127.0.0.4]');
    expect(await receivedFrom(h.port, '127.0.0.5', h.queue, 3)).toBe('[127.0.0.5]');
    expect(server.queries.some((q) => q.type === 'A' && q.name === 'mail.bigbank.example')).toBe(true);
  });

  test('a lookup that hangs is abandoned after timeouts.dns', async () => {
    const hanging: HostResolver = {
      reverse: () => new Promise(() => {}),
      resolve4: () => new Promise(() => {}),
      resolve6: () => new Promise(() => {}),
    };
    const h = await startListener(
      { reverseLookup: true, limits: { timeouts: { dns: 200 } } },
      { resolver: hanging },
    );
    const started = performance.now();
    expect(await receivedFrom(h.port, '127.0.0.2', h.queue, 0)).toBe('[127.0.0.2]');
    expect(performance.now() - started).toBeGreaterThanOrEqual(200);
  });
});
