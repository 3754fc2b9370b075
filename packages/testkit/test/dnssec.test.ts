// The DNSSEC test parts against each other and a plain DNS client: signed zones answer with AD set
// through the validating resolver, unsigned ones without, spoiled signatures as SERVFAIL.
import { X509Certificate } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  makeCertificateAuthority,
  startSignedZones,
  startValidatingResolver,
  type TestAuthority,
  type TestResolver,
} from '../src/index.js';

let authority: TestAuthority;
let resolver: TestResolver;

const TLSA = { usage: 3, selector: 1, matchingType: 1, data: 'ab'.repeat(32) };

beforeAll(async () => {
  authority = await startSignedZones([
    {
      name: 'signed.test',
      records: {
        'signed.test': { MX: [{ exchange: 'mx.signed.test', priority: 10 }], TXT: ['v=STSv1; id=1'] },
        'mx.signed.test': { A: ['127.0.0.1'], AAAA: ['::1'] },
        '_25._tcp.mx.signed.test': { TLSA: [TLSA] },
        '_25._tcp.spoiled.signed.test': { TLSA: [TLSA] },
      },
      bogus: [{ name: '_25._tcp.spoiled.signed.test', type: 'TLSA' }],
    },
    { name: 'plain.test', signed: false, records: { 'plain.test': { A: ['127.0.0.2'] } } },
  ]);
  resolver = await startValidatingResolver(authority);
}, 30_000);

afterAll(async () => {
  await resolver?.stop();
  await authority?.stop();
});

/** A minimal DNS query with the DO bit; returns rcode, AD and the answer count. */
async function ask(
  port: number,
  name: string,
  type: number,
): Promise<{ rcode: number; ad: boolean; answers: number }> {
  const labels = name.split('.').flatMap((label) => [Buffer.from([label.length]), Buffer.from(label)]);
  const question = Buffer.concat([...labels, Buffer.from([0, type >> 8, type & 0xff, 0, 1])]);
  const header = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
  // OPT: root name, type 41, UDP size 1232, extended rcode/version 0, flags DO, no data.
  const opt = Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
  const socket = createSocket('udp4');
  try {
    const reply = new Promise<Buffer>((resolve) => socket.once('message', resolve));
    socket.send(Buffer.concat([header, question, opt]), port, '127.0.0.1');
    const message = await reply;
    return {
      rcode: (message[3] ?? 0) & 0x0f,
      ad: ((message[3] ?? 0) & 0x20) !== 0,
      answers: message.readUInt16BE(6),
    };
  } finally {
    socket.close();
  }
}

describe('signed zones behind a validating resolver', () => {
  it('answers a signed zone with the AD bit set', async () => {
    expect(await ask(resolver.port, 'mx.signed.test', 1)).toMatchObject({ rcode: 0, ad: true });
    expect(await ask(resolver.port, '_25._tcp.mx.signed.test', 52)).toMatchObject({ rcode: 0, ad: true });
  });

  it('answers an unsigned zone without the AD bit', async () => {
    expect(await ask(resolver.port, 'plain.test', 1)).toEqual({ rcode: 0, ad: false, answers: 1 });
  });

  it('answers SERVFAIL for an RRset whose signature was spoiled, and only for it', async () => {
    expect((await ask(resolver.port, '_25._tcp.spoiled.signed.test', 52)).rcode).toBe(2);
    expect((await ask(resolver.port, '_25._tcp.mx.signed.test', 52)).rcode).toBe(0);
  });

  it('proves the absence of a name securely (NXDOMAIN with AD)', async () => {
    expect(await ask(resolver.port, 'nothing.signed.test', 1)).toMatchObject({ rcode: 3, ad: true });
  });

  it('serves a changed zone at once after update()', async () => {
    await authority.update({
      name: 'signed.test',
      records: { 'signed.test': { A: ['127.0.0.9'] }, 'new.signed.test': { A: ['127.0.0.8'] } },
    });
    // The A record and its RRSIG (the query asked for DNSSEC records with DO).
    expect(await ask(resolver.port, 'new.signed.test', 1)).toEqual({ rcode: 0, ad: true, answers: 2 });
    expect((await ask(resolver.port, 'mx.signed.test', 1)).rcode).toBe(3);
  });
});

describe('test CA', () => {
  it('issues certificates that chain to it, and expired ones on request', () => {
    const ca = makeCertificateAuthority('Test Root');
    const issued = ca.issue(['mx.ca.test', 'other.ca.test']);
    const leaf = new X509Certificate(issued.cert);
    const root = new X509Certificate(ca.cert);
    expect(leaf.checkIssued(root)).toBe(true);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(leaf.checkHost('other.ca.test')).toBe('other.ca.test');
    expect(issued.chain).toBe(`${issued.cert}${ca.cert}`);
    expect(new Date(leaf.validTo).getTime()).toBeGreaterThan(Date.now());
    const expired = new X509Certificate(ca.issue(['old.ca.test'], { expired: true }).cert);
    expect(new Date(expired.validTo).getTime()).toBeLessThan(Date.now());
  });
});
