// Provider grouping: domains whose MX hosts end in one provider's suffix share its limit and its
// back-off state; others keep their own. A real DNS server serves the MX records, a real sink answers.
import { type SmtpSink, startDnsServer, startSmtpSink, type TestDns } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeliverer, type Deliverer, type DelivererOptions, Providers } from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';

let dns: TestDns;
let sink: SmtpSink;
let blockNext = false;
const deliverers: Deliverer[] = [];

beforeAll(async () => {
  sink = await startSmtpSink({
    rcptReply: () => {
      if (!blockNext) return undefined;
      blockNext = false;
      return { code: 554, message: '5.7.1 Service unavailable; client host blocked' };
    },
  });
  dns = await startDnsServer({
    // Two Workspace-hosted domains and one on its own servers.
    'one.test': { MX: [{ exchange: 'aspmx.l.google.com', priority: 1 }] },
    'two.test': { MX: [{ exchange: 'alt1.aspmx.l.google.com', priority: 5 }] },
    'aspmx.l.google.com': { A: ['127.0.0.1'] },
    'alt1.aspmx.l.google.com': { A: ['127.0.0.1'] },
    'own.test': { MX: [{ exchange: 'mx.own.test', priority: 10 }] },
    'mx.own.test': { A: ['127.0.0.1'] },
    'acme-a.test': { MX: [{ exchange: 'in1.acme-mail.test', priority: 10 }] },
    'acme-b.test': { MX: [{ exchange: 'in2.acme-mail.test', priority: 10 }] },
    'in1.acme-mail.test': { A: ['127.0.0.1'] },
    'in2.acme-mail.test': { A: ['127.0.0.1'] },
  });
});

afterAll(async () => {
  await Promise.all(deliverers.map((d) => d.close()));
  await Promise.all([sink.stop(), dns.stop()]);
});

function make(extra: Partial<DelivererOptions>): Deliverer {
  const d = createDeliverer({
    hostname: 'out.tern.test',
    port: sink.port,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
    ...extra,
  });
  deliverers.push(d);
  return d;
}

const deliver = (d: Deliverer, to: string) => d.deliver(makeJob([to]), storedMessage(SIMPLE_MESSAGE));

describe('provider grouping', () => {
  it('gives every Google-hosted domain one shared budget, and other domains their own', async () => {
    const d = make({ limits: { providers: { google: { messageRate: { limit: 1, per: 60_000 } } } } });
    expect((await deliver(d, 'a@one.test')).recipients[0]?.result).toBe('delivered');
    const second = await deliver(d, 'b@two.test');
    expect(second.wait).toMatchObject({ key: 'provider:google' });
    expect((await deliver(d, 'c@own.test')).recipients[0]?.result).toBe('delivered');
  });

  it('shares back-off state: a block from one Google-hosted domain holds the others', async () => {
    const d = make({});
    blockNext = true;
    const blocked = await deliver(d, 'a@one.test');
    expect(blocked.recipients[0]).toMatchObject({ result: 'failed', reply: { code: 554 } });
    expect(blocked.shaping).toMatchObject([{ cause: 'triggered', rule: 'blocked', destination: 'google' }]);
    const held = await deliver(d, 'b@two.test');
    expect(held.wait?.key).toBe('backoff:google');
    expect(held.shaping).toMatchObject([{ cause: 'waiting', destination: 'google' }]);
    expect((await deliver(d, 'c@own.test')).recipients[0]?.result).toBe('delivered');
  });

  it('groups by configured suffixes, and not at all with providers: false', async () => {
    const limits = { default: undefined, providers: { acme: { messageRate: { limit: 1, per: 60_000 } } } };
    const d = make({ providers: { acme: { mx: ['acme-mail.test'] } }, limits });
    expect((await deliver(d, 'a@acme-a.test')).recipients[0]?.result).toBe('delivered');
    expect((await deliver(d, 'b@acme-b.test')).wait?.key).toBe('provider:acme');
    expect(() => make({ providers: false, limits })).toThrow(
      'delivery.limits.providers.acme: no provider named acme (known: none); define it under delivery.providers',
    );
  });

  it('knows the large providers by domain without DNS, and remembers MX answers', async () => {
    let lookups = 0;
    const providers = new Providers(undefined, async (domain) => {
      lookups++;
      return domain === 'corp.test' ? ['corp-test.mail.protection.outlook.com'] : ['mx.elsewhere.test'];
    });
    expect(await providers.of('gmail.com')).toBe('google');
    expect(await providers.of('aol.com')).toBe('yahoo');
    expect(lookups).toBe(0);
    expect(await providers.of('corp.test')).toBe('microsoft');
    expect(await providers.of('corp.test')).toBe('microsoft');
    expect(await providers.of('small.test')).toBeUndefined();
    expect(lookups).toBe(2);
  });
});
