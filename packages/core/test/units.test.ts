// The pure parts: option resolution, trusted networks, the users file, line-ending and header
// splitting across arbitrary chunk boundaries, trace-field formatting.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { NetworkList, rfc5322Date } from '@tern/plugin-api';
import { readAll } from '@tern/plugin-api/host';
import { memoryLogger } from '@tern/plugin-api/testing';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { verbOf } from '../src/command-stream.js';
import {
  addUser,
  FileUserStore,
  hashPassword,
  IntakeSpool,
  LISTENER_DEFAULTS,
  type ListenerOptions,
  parseUsersFile,
  resolveListenerOptions,
  verifyPassword,
} from '../src/index.js';
import { HeaderSplitter, LineEndingGuard, LongLineGuard, readMessage } from '../src/intake.js';
import { deadlinesOf, stressLevel } from '../src/options.js';
import { receivedValue, withProtocol } from '../src/received.js';
import { hasRoutingTrick } from '../src/relay.js';
import { missingSmtpServerInternals } from '../src/smtp-server-internals.js';

const base: ListenerOptions = { name: 'mx1', kind: 'mx', port: 25, hostname: 'mx.example.org' };

describe('resolveListenerOptions', () => {
  test('defaults depend on the kind', () => {
    const mx = resolveListenerOptions(base);
    expect([mx.requireTls, mx.requireAuth, mx.auth, mx.host, mx.bareLineEndings]).toEqual([
      false,
      false,
      false,
      '::',
      'reject',
    ]);
    expect(mx.limits).toEqual(LISTENER_DEFAULTS.limits);
    const pem = { key: '-----BEGIN PRIVATE KEY-----', cert: '-----BEGIN CERTIFICATE-----' };
    const sub = resolveListenerOptions({ ...base, kind: 'submission', tls: pem });
    expect([sub.requireTls, sub.requireAuth, sub.auth]).toEqual([true, true, true]);
  });

  test.each([
    [
      { hostname: 'not a host' },
      'listener mx1: hostname: must be a fully qualified host name, got "not a host"',
    ],
    [{ port: 70000 }, 'listener mx1: port: must be a port from 0 to 65535, got 70000'],
    [
      { kind: 'lmtp' },
      `listener mx1: kind: must be one of 'mx' (port 25), 'submission' (587) or 'smtps' (465), got "lmtp"`,
    ],
    [{ kind: 'smtps' }, 'listener mx1: tls: an smtps listener needs a key and certificate'],
    [
      { trustedNetworks: ['10.0.0.0/8', '10.0.0.0/33'] },
      'listener mx1: trustedNetworks[1]: prefix length must be 0 to 32: "10.0.0.0/33"',
    ],
    [{ trustedNetworks: ['mynetwork'] }, 'listener mx1: trustedNetworks[0]: not a CIDR block: "mynetwork"'],
    [
      { localDomains: ['[999.1.1.1]'] },
      'listener mx1: localDomains[0]: not a domain or address literal: "[999.1.1.1]"',
    ],
    [
      { limits: { maxErrors: 0 } },
      'listener mx1: limits.maxErrors: must be a whole number of at least 1, got 0',
    ],
    [
      { limits: { timeouts: { data: -1 } } },
      "listener mx1: limits.timeouts.data: -1 is not a duration above 0: milliseconds, or a string like '30s', '5m', '4h', '5d'",
    ],
    [{ bareLineEndings: 'ignore' }, "listener mx1: bareLineEndings: must be 'reject' or 'normalize'"],
    [
      { limits: { timeouts: { command: 0 } } },
      "listener mx1: limits.timeouts.command: 0 is not a duration above 0: milliseconds, or a string like '30s', '5m', '4h', '5d'",
    ],
    [
      { limits: { timeouts: { session: Number.NaN } } },
      'listener mx1: limits.timeouts.session: NaN is not a duration above 0',
    ],
    [
      { limits: { timeouts: { stress: { socket: '5 fortnights' } } } },
      'listener mx1: limits.timeouts.stress.socket: "5 fortnights" is not a duration above 0',
    ],
    [
      { limits: { stressThreshold: 0 } },
      'listener mx1: limits.stressThreshold: must be a share of maxConnections above 0 and at most 1, got 0',
    ],
    [
      { limits: { stressThreshold: 80 } },
      'listener mx1: limits.stressThreshold: must be a share of maxConnections above 0 and at most 1, got 80',
    ],
  ])('%j is refused naming the field', (patch, message) => {
    expect(() => resolveListenerOptions({ ...base, ...patch } as ListenerOptions)).toThrow(message);
  });

  test('local domains are compared in one form: lower-case IDNA, canonical address literals', () => {
    const o = resolveListenerOptions({
      ...base,
      localDomains: ['Example.ORG', 'bücher.test', '[IPv6:2001:DB8:0::1]', '[192.0.2.1]'],
    });
    expect([...o.localDomains]).toEqual([
      'example.org',
      'xn--bcher-kva.test',
      '[ipv6:2001:db8::1]',
      '[192.0.2.1]',
    ]);
  });

  test('deadlines: a minute per command line, an hour per session, Postfix-like 10 s limits under stress at 80 %', () => {
    const { limits } = resolveListenerOptions(base);
    expect(limits.timeouts).toMatchObject({
      socket: 300_000,
      command: 60_000,
      session: 3_600_000,
      stress: { socket: 10_000, command: 10_000, session: 300_000 },
    });
    expect(stressLevel(limits)).toBe(800);
    expect(deadlinesOf(limits.timeouts, false)).toEqual({
      socket: 300_000,
      command: 60_000,
      session: 3_600_000,
    });
    expect(deadlinesOf(limits.timeouts, true)).toEqual({ socket: 10_000, command: 10_000, session: 300_000 });
    // A stress limit never lengthens a normal one.
    const short = resolveListenerOptions({ ...base, limits: { timeouts: { socket: 5000 } } }).limits;
    expect(deadlinesOf(short.timeouts, true).socket).toBe(5000);
    expect(stressLevel({ ...limits, maxConnections: 3, stressThreshold: 0.1 })).toBe(1);
  });

  test('maxRecipients under 100 is raised with a warning', () => {
    const records: Parameters<typeof memoryLogger>[0] = [];
    const o = resolveListenerOptions({ ...base, limits: { maxRecipients: 10 } }, memoryLogger(records));
    expect(o.limits.maxRecipients).toBe(100);
    expect(records[0]?.level).toBe('warn');
  });
});

describe('command verbs', () => {
  test.each([
    ['MAIL FROM:<a@example.org>', 'MAIL'],
    ['ehlo client.example', 'EHLO'],
    ['XCLIENT ADDR=192.0.2.1', 'XCLIENT'],
    // smtp-server upper-cases UTF-8: ſ (long s) becomes S, so this runs STARTTLS there.
    ['ſtarttls', 'STARTTLS'],
    ['NOOP\t', 'OTHER'],
    [' MAIL FROM:<a@example.org>', 'OTHER'],
    ['XYZZY', 'OTHER'],
    [`${'A'.repeat(5000)} x`, 'OTHER'],
    ['', 'OTHER'],
  ])('%j is %s', (line, verb) => {
    expect(verbOf(Buffer.from(line))).toBe(verb);
  });
});

describe('smtp-server internals', () => {
  test('the installed smtp-server has every private member core relies on', () => {
    expect(missingSmtpServerInternals()).toEqual([]);
  });

  test('a missing one is named', () => {
    const prototype = SMTPConnection.prototype as unknown as Record<string, unknown>;
    const original = prototype._sendGreeting;
    delete prototype._sendGreeting;
    try {
      expect(missingSmtpServerInternals()).toEqual(['SMTPConnection._sendGreeting']);
    } finally {
      prototype._sendGreeting = original;
    }
  });
});

describe('NetworkList', () => {
  const list = NetworkList.parse(['192.0.2.0/24', '2001:db8::/32', '198.51.100.7', '::1']);
  test.each([
    ['192.0.2.200', true],
    ['192.0.3.1', false],
    ['::ffff:192.0.2.9', true],
    ['2001:db8:1::5', true],
    ['2001:db9::1', false],
    ['198.51.100.7', true],
    ['198.51.100.8', false],
    ['::1', true],
    ['not-an-ip', false],
  ])('%s → %s', (address, expected) => {
    expect(list.contains(address)).toBe(expected);
  });
});

describe('routing tricks', () => {
  test.each([
    ['user@local.test', 'RCPT TO:<user@local.test>', false],
    ['user%remote@local.test', 'RCPT TO:<user%remote@local.test>', true],
    ['remote!user@local.test', 'RCPT TO:<remote!user@local.test>', true],
    ['"a b"@local.test', 'RCPT TO:<"a b"@local.test>', true],
    ['user@local.test', 'RCPT TO:<@relay.example:user@local.test>', true],
    ['user@local.test', 'rcpt to: < @relay.example:user@local.test>', true],
  ])('%s from %s → %s', (address, line, expected) => {
    expect(hasRoutingTrick(address, line)).toBe(expected);
  });
});

describe('users', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tern-users-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const fast = { N: 1024, r: 8, p: 1 };

  test('hashPassword makes salted scrypt lines that verifyPassword checks', async () => {
    const a = await hashPassword('secret', fast);
    const b = await hashPassword('secret', fast);
    expect(a).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}$/);
    expect(a).not.toBe(b); // salted
    expect(await verifyPassword('secret', a)).toBe(true);
    expect(await verifyPassword('Secret', a)).toBe(false);
    expect(await verifyPassword('secret', 'scrypt$3$8$1$AAAA$BBBB')).toBe(false);
    expect(await verifyPassword('secret', 'plain:secret')).toBe(false);
    expect((await hashPassword('x')).startsWith('scrypt$32768$8$1$')).toBe(true);
  });

  test('addUser creates the file 0600, adds and replaces users, and the store reads them', async () => {
    const file = join(dir, 'users');
    await addUser(file, 'alice', 'one', fast);
    await addUser(file, 'bob', 'two', fast);
    await addUser(file, 'alice', 'three', fast);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const lines = (await readFile(file, 'utf8')).trim().split('\n');
    expect(lines.map((l) => l.split(':')[0])).toEqual(['alice', 'bob']);
    const store = await FileUserStore.open(file);
    expect(await store.authenticate('alice', 'three')).toBe(true);
    expect(await store.authenticate('alice', 'one')).toBe(false);
    expect(await store.authenticate('bob', 'two')).toBe(true);
    expect(await store.authenticate('carol', 'two')).toBe(false);
  });

  test('bad names, bad lines and missing files are reported with the cause', async () => {
    await expect(addUser(join(dir, 'x'), 'a:b', 'pw', fast)).rejects.toThrow(
      /without spaces, colons or control characters/,
    );
    await expect(addUser(join(dir, 'x'), 'ok', '', fast)).rejects.toThrow('the password must not be empty');
    expect(() =>
      parseUsersFile(
        '# comment\n\nalice:scrypt$1024$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==\nbob:plain\n',
        'users',
      ),
    ).toThrow('users:4: expected user:scrypt$N$r$p$salt$hash');
    await expect(FileUserStore.open(join(dir, 'missing'))).rejects.toThrow(/missing: file not found/);
    const broken = join(dir, 'broken');
    await writeFile(broken, 'garbage\n');
    await expect(addUser(broken, 'alice', 'pw', fast)).rejects.toThrow(/broken:1:/);
  });
});

let spoolDirs: string[] = [];
function spoolDir(): string {
  const dir = join(tmpdir(), `tern-units-spool-${process.pid}-${spoolDirs.length}`);
  spoolDirs.push(dir);
  return dir;
}
afterAll(async () => {
  await Promise.all(spoolDirs.map((dir) => rm(dir, { recursive: true, force: true })));
  spoolDirs = [];
});

describe('intake across chunk boundaries', () => {
  const MESSAGES = [
    'Subject: a\r\nX-B: c\r\n\r\nbody\r\n..dot\r\n',
    '\r\nno headers\r\n',
    'Only: headers\r\n',
    'Subject: bare\nlf\r\n\r\nx\ry\x00z\r\n',
    'A: 1\r\n\r\n\r\n\r\n',
    'A: 1\r\n\r\nends with CR\r',
  ];

  // Every body spills to a file after 8 bytes in one spool, never in the other: both must agree.
  const spools = [new IntakeSpool({ dir: false }), new IntakeSpool({ dir: spoolDir(), memoryPerMessage: 8 })];

  async function read(chunks: Buffer[], policy: 'reject' | 'normalize', spool = spools[0]!) {
    const stream = new PassThrough();
    const result = readMessage(stream, {
      bareLineEndings: policy,
      longLines: 'reject',
      maxMessageSize: 1 << 20,
      maxHeaderBytes: 1 << 16,
      spool,
    });
    for (const chunk of chunks) stream.write(chunk);
    stream.end();
    const r = await result;
    if (!r.ok) return r.reply.code;
    const body = (await readAll(r.body)).toString('latin1');
    await r.release();
    return { headers: r.headers.toString(), body };
  }

  for (const text of MESSAGES) {
    test(`${JSON.stringify(text)}: every split gives the same result as one chunk`, async () => {
      const whole = Buffer.from(text, 'latin1');
      for (const policy of ['reject', 'normalize'] as const) {
        const expected = await read([whole], policy);
        for (const spool of spools) {
          for (let a = 0; a <= whole.length; a++) {
            for (let b = a; b <= whole.length; b += 3) {
              const parts = [whole.subarray(0, a), whole.subarray(a, b), whole.subarray(b)];
              expect(await read(parts, policy, spool)).toEqual(expected);
            }
          }
        }
      }
      for (const spool of spools) expect(spool.stats().memoryBytes).toBe(0);
    });
  }

  test('the guard reports what it repairs', () => {
    const guard = new LineEndingGuard('normalize');
    const out = [...guard.push(Buffer.from('a\r')), ...guard.push(Buffer.from('b\n')), ...guard.end()];
    expect(Buffer.concat(out).toString()).toBe('a\r\nb\r\n');
    expect(guard.found).toBe(true);
    const clean = new LineEndingGuard('reject');
    const chunk = Buffer.from('a\r\nb\r\n');
    expect(clean.push(chunk)[0]).toBe(chunk); // clean chunks are passed on, not copied
    expect(clean.found).toBe(false);
  });

  test('the 998-octet line limit holds across every chunk split, in both policies', () => {
    const run = (policy: 'reject' | 'wrap', parts: Buffer[]) => {
      const guard = new LongLineGuard(policy);
      const out = Buffer.concat(parts.map((p) => guard.push(p))).toString('latin1');
      return { out, found: guard.found };
    };
    const lines = (...lengths: number[]) => Buffer.from(lengths.map((n) => `${'q'.repeat(n)}\r\n`).join(''));
    const cases: [Buffer, boolean][] = [
      [lines(10, 998, 0, 997), false],
      [lines(999), true],
      [lines(5, 1000, 3), true],
      [lines(2500), true],
      [Buffer.from(`${'q'.repeat(998)}\r`), false], // a final CR whose LF comes later
    ];
    for (const [whole, long] of cases) {
      const wrapped = run('wrap', [whole]);
      expect(run('reject', [whole]).found).toBe(long);
      expect(wrapped.found).toBe(long);
      expect(wrapped.out.split('\r\n').every((l) => l.replace(/\r$/, '').length <= 998)).toBe(true);
      expect(wrapped.out.replaceAll('\r\n', '')).toBe(whole.toString('latin1').replaceAll('\r\n', ''));
      for (let a = 0; a <= whole.length; a += 7) {
        for (let b = a; b <= whole.length; b += 331) {
          const parts = [whole.subarray(0, a), whole.subarray(a, b), whole.subarray(b)];
          expect(run('reject', parts).found).toBe(long);
          expect(run('wrap', parts).out).toBe(wrapped.out);
        }
      }
    }
  });

  test('the header splitter stops at maxHeaderBytes', () => {
    const splitter = new HeaderSplitter(10);
    expect(splitter.push(Buffer.from('Subject: 12345\r\n'))).toBeUndefined();
    expect(splitter.tooBig).toBe(true);
  });
});

describe('trace fields', () => {
  test('RFC 5322 dates in UTC', () => {
    expect(rfc5322Date(new Date(Date.UTC(2030, 2, 5, 4, 7, 9)))).toBe('Tue, 05 Mar 2030 04:07:09 +0000');
  });

  test('RFC 3848 protocol names', () => {
    expect([
      withProtocol(false, true, true),
      withProtocol(true, false, false),
      withProtocol(true, true, false),
      withProtocol(true, false, true),
      withProtocol(true, true, true),
    ]).toEqual(['SMTP', 'ESMTP', 'ESMTPS', 'ESMTPA', 'ESMTPSA']);
  });

  test('client-supplied words cannot break out of the Received field', () => {
    const value = receivedValue({
      helo: 'a\r\nX-Injected: yes',
      clientHostname: undefined,
      remoteAddress: '2001:db8::1',
      hostname: 'mx.example.org',
      esmtp: true,
      tls: undefined,
      user: 'bob) (forged',
      id: 'abc.1',
      recipient: 'x>; evil@example.org',
      date: new Date(Date.UTC(2030, 0, 1)),
    });
    expect(value).toBe(
      'from a??X-Injected:?yes ([IPv6:2001:db8::1])\r\n' +
        '\t(authenticated as bob\\) \\(forged)\r\n' +
        '\tby mx.example.org (Tern) with ESMTPA id abc.1\r\n' +
        '\tfor <x>??evil@example.org>; Tue, 01 Jan 2030 00:00:00 +0000',
    );
  });
});
