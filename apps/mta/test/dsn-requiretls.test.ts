// DSN (RFC 3461) and REQUIRETLS (RFC 8689) end to end: raw SMTP into a real listener (core) that
// hands messages to the embedded queue, whose worker delivers them (delivery) to real receiving
// servers that offer or lack DSN and REQUIRETLS, found through a test DNS server, with MTA-STS
// policies served over HTTPS by a test CA. Every notice is read back by Python's email package.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createListener, type Listener } from '@tern/core';
import { createDeliverer, type Deliverer } from '@tern/delivery';
import { silentLogger } from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import {
  type DeliveryReport,
  type EmbeddedQueue,
  openEmbeddedQueue,
  openRedisQueue,
  type RedisQueue,
} from '@tern/queue';
import {
  type MtaStsServer,
  makeCertificateAuthority,
  type SinkMessage,
  type SmtpSink,
  smtpDialog,
  startDnsServer,
  startMtaStsServer,
  startRedis,
  startSmtpSink,
  type TestDns,
  type TestRedis,
  waitFor,
} from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const PARSER = resolve(import.meta.dirname, 'fixtures/dsn/parse-dsn.py');
const ca = makeCertificateAuthority('DSN test CA');
const otherCa = makeCertificateAuthority('A CA nobody trusts');

let dir: string;
let dns: TestDns;
let policies: MtaStsServer;
/** 127.0.0.1: no DSN, no TLS; the return path's MX (notices land here) and plain.test. */
let plain: SmtpSink;
/** 127.0.0.2: offers DSN: dsn.test. */
let dsnHop: SmtpSink;
/** 127.0.0.3: TLS with a trusted certificate, DSN and REQUIRETLS: sts.test (MTA-STS enforce), nopolicy.test. */
let secure: SmtpSink;
/** 127.0.0.4: TLS with a trusted certificate, no REQUIRETLS: norequire.test (MTA-STS enforce). */
let noRequire: SmtpSink;
/** 127.0.0.5: TLS with a certificate nobody trusts: badcert.test (MTA-STS enforce). */
let badCert: SmtpSink;
/** LMTP server (offers DSN) for lmtp.test. */
let lmtp: SmtpSink;
let redis: TestRedis;
let mxPort: number;
// Per backend (each describe.each block sets them up in turn).
let queue: EmbeddedQueue | RedisQueue;
let deliverer: Deliverer;
let listener: Listener;
let port: number;
const reports = new Map<string, DeliveryReport[]>();

function pairOf(issued: { key: string; chain: string }): { key: string; cert: string } {
  return { key: issued.key, cert: issued.chain };
}

function policy(mx: string): string {
  return ['version: STSv1', 'mode: enforce', `mx: ${mx}`, 'max_age: 86400', ''].join('\r\n');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tern-dsn-'));
  const names = [
    'mx.sts.test',
    'mx.nopolicy.test',
    'mx.norequire.test',
    'mx.badcert.test',
    'mx1.mixed.test',
    'mx2.mixed.test',
  ];
  const refuse = (address: string) =>
    address.startsWith('gone')
      ? { code: 550, message: '5.1.1 No such user' }
      : address.startsWith('slow')
        ? { code: 451, message: '4.2.1 Try again later' }
        : undefined;
  plain = await startSmtpSink({ rcptReply: refuse });
  mxPort = plain.port;
  dsnHop = await startSmtpSink({ host: '127.0.0.2', port: mxPort, offerDSN: true });
  const tlsSink = { offerDSN: true, port: mxPort };
  secure = await startSmtpSink({
    ...tlsSink,
    host: '127.0.0.3',
    tls: pairOf(ca.issue(names)),
    offerREQUIRETLS: true,
  });
  noRequire = await startSmtpSink({ ...tlsSink, host: '127.0.0.4', tls: pairOf(ca.issue(names)) });
  badCert = await startSmtpSink({ ...tlsSink, host: '127.0.0.5', tls: pairOf(otherCa.issue(names)) });
  lmtp = await startSmtpSink({ lmtp: true, offerDSN: true });
  policies = await startMtaStsServer({
    tls: pairOf(
      ca.issue(['mta-sts.sts.test', 'mta-sts.norequire.test', 'mta-sts.badcert.test', 'mta-sts.mixed.test']),
    ),
  });
  dns = await startDnsServer({});
  const mx = (domain: string, address: string): void => {
    dns.set(domain, { MX: [{ exchange: `mx.${domain}`, priority: 10 }] });
    dns.set(`mx.${domain}`, { A: [address] });
  };
  mx('origin.test', '127.0.0.1');
  mx('plain.test', '127.0.0.1');
  mx('dsn.test', '127.0.0.2');
  mx('nopolicy.test', '127.0.0.3');
  for (const [domain, address] of [
    ['sts.test', '127.0.0.3'],
    ['norequire.test', '127.0.0.4'],
    ['badcert.test', '127.0.0.5'],
  ] as const) {
    mx(domain, address);
    dns.set(`_mta-sts.${domain}`, { TXT: ['v=STSv1; id=1;'] });
    dns.set(`mta-sts.${domain}`, { A: ['127.0.0.1'] });
    policies.set(domain, policy(`mx.${domain}`));
  }
  // mixed.test: the preferred MX lacks REQUIRETLS, the second has it.
  dns.set('mixed.test', {
    MX: [
      { exchange: 'mx1.mixed.test', priority: 10 },
      { exchange: 'mx2.mixed.test', priority: 20 },
    ],
  });
  dns.set('mx1.mixed.test', { A: ['127.0.0.4'] });
  dns.set('mx2.mixed.test', { A: ['127.0.0.3'] });
  dns.set('_mta-sts.mixed.test', { TXT: ['v=STSv1; id=1;'] });
  dns.set('mta-sts.mixed.test', { A: ['127.0.0.1'] });
  policies.set('mixed.test', policy('*.mixed.test'));

  redis = await startRedis({ appendonly: true, appendfsync: 'always', maxmemoryPolicy: 'noeviction' });
}, 60_000);

/** The listener, queue and deliverer of one backend; `tern start` wires the same parts. */
async function startMta(backend: Backend): Promise<void> {
  deliverer = createDeliverer({
    hostname: 'out.tern.test',
    port: mxPort,
    dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 },
    tls: { ca: ca.cert },
    mtaSts: { port: policies.port, timeoutMs: 2000 },
    routes: {
      'maildir.test': { type: 'maildir', path: join(dir, 'mail', backend) },
      'lmtp.test': { type: 'lmtp', host: '127.0.0.1', port: lmtp.port },
    },
    timeouts: { connectMs: 2000, greetingMs: 2000, commandMs: 2000, dataEndMs: 2000 },
    pool: { maxMessagesPerConnection: 1 },
  });
  queue =
    backend === 'embedded'
      ? openEmbeddedQueue({ path: join(dir, 'queue.db'), pollIntervalMs: 50 })
      : await openRedisQueue({
          url: redis.url,
          prefix: 'dsn',
          stalledIntervalMs: 1000,
          lockDurationMs: 2000,
        });
  await queue.startWorker(
    async (job, message, attempt) => {
      const report = await deliverer.deliver(job, message, attempt);
      reports.set(job.queueId, [...(reports.get(job.queueId) ?? []), report]);
      return report;
    },
    // Delay notices after 2 s (to recipients without NOTIFY too, since it is configured).
    { hostname: 'tern.test', retry: { intervals: ['1s'], maxAge: '1h', delayNoticeAfter: '2s' } },
  );
  listener = createListener(
    {
      name: 'mx',
      kind: 'mx',
      host: '127.0.0.1',
      port: 0,
      hostname: 'mx.tern.test',
      trustedNetworks: ['127.0.0.0/8'],
      reverseLookup: false,
      greetingDelayMs: 0,
      tls: pairOf(ca.issue(['mx.tern.test'])),
    },
    { plugins: new PluginHost([]), sink: queue, logger: silentLogger },
  );
  ({ port } = await listener.listen());
}

async function stopMta(): Promise<void> {
  await listener?.close({ graceful: false });
  await queue?.close();
  await deliverer?.close();
  // The next backend starts from empty mailboxes.
  for (const sink of [plain, dsnHop, secure, noRequire, badCert, lmtp]) sink.messages.length = 0;
  reports.clear();
}

afterAll(async () => {
  await redis?.stop();
  await Promise.all([plain, dsnHop, secure, noRequire, badCert, lmtp].map((s) => s?.stop()));
  await policies?.stop();
  await dns?.stop();
  rmSync(dir, { recursive: true, force: true });
});

type Backend = 'embedded' | 'redis';

interface Submission {
  /** Each test sends from its own address: its notices are told apart by recipient. */
  readonly from: string;
  readonly mailParams?: string;
  readonly rcpts: readonly string[];
  readonly subject: string;
  readonly headers?: string;
  readonly tls?: boolean;
}

/** Sends one message over raw SMTP; resolves with the queue id from `250 2.0.0 queued as <id>`. */
async function submit(s: Submission): Promise<string> {
  const c = await smtpDialog(port);
  try {
    expect(await c.read()).toMatch(/^220 /);
    expect(await c.command('EHLO client.test')).toMatch(/^250/);
    if (s.tls) {
      expect(await c.command('STARTTLS')).toMatch(/^220 /);
      await c.startTls('mx.tern.test');
      expect(await c.command('EHLO client.test')).toMatch(/^250/);
    }
    const mail = await c.command(`MAIL FROM:<${s.from}>${s.mailParams ? ` ${s.mailParams}` : ''}`);
    expect(mail, c.transcript.join('\n')).toMatch(/^250 /);
    for (const rcpt of s.rcpts) expect(await c.command(`RCPT TO:${rcpt}`)).toMatch(/^250 /);
    expect(await c.command('DATA')).toMatch(/^354 /);
    const reply = await c.command(
      `From: <${s.from}>\r\nTo: <someone@plain.test>\r\nSubject: ${s.subject}\r\n` +
        `Message-ID: <${s.subject.replace(/\W/g, '')}@origin.test>\r\n${s.headers ?? ''}\r\n` +
        `The body of ${s.subject}.\r\n.`,
    );
    const queueId = /^250 2\.0\.0 queued as (\S+)/.exec(reply)?.[1];
    if (!queueId) throw new Error(`not queued: ${reply}`);
    return queueId;
  } finally {
    c.close();
  }
}

/** Notices (from <>) that reached the return path `to`. */
function noticesTo(to: string): SinkMessage[] {
  return plain.messages.filter((m) => m.mailFrom === '' && m.rcptTo.includes(to));
}

async function waitForNotices(to: string, count = 1): Promise<SinkMessage[]> {
  await waitFor(() => noticesTo(to).length >= count, 20_000);
  return noticesTo(to);
}

/** Waits until the message is finished and no notice to `to` is queued or in flight. */
async function settled(queueId: string, to: string): Promise<void> {
  await waitFor(async () => {
    if ((await queue.inspect(queueId)) !== null) return false;
    const pending = await queue.listJobs({ sender: '<>', recipient: to });
    return pending.jobs.length === 0;
  }, 20_000);
}

function received(sink: SmtpSink, subject: string): SinkMessage[] {
  return sink.messages.filter((m) => m.headers.includes(`Subject: ${subject}\r\n`));
}

interface ParsedDsn {
  readonly subject: string;
  readonly from: string;
  readonly autoSubmitted: string;
  readonly human: string;
  readonly perMessage: Record<string, string>;
  readonly recipients: Record<string, string>[];
  readonly returned: { type: string; subject?: string; body?: string; text?: string };
}

/** Python's email package reads the notice (an independent parser): RFC 3464 fields as JSON. */
function parseDsn(raw: Buffer): Promise<ParsedDsn> {
  return new Promise((done, fail) => {
    const child = spawn('python3', [PARSER], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => {
      out += c;
    });
    child.stderr.on('data', (c) => {
      err += c;
    });
    child.on('error', fail);
    child.on('close', (code) =>
      code === 0 ? done(JSON.parse(out) as ParsedDsn) : fail(new Error(`parse-dsn.py: ${err}`)),
    );
    child.stdin.end(raw);
  });
}

describe.each(['embedded', 'redis'] as const)('on the %s queue', (backend) => {
  beforeAll(() => startMta(backend), 60_000);
  afterAll(stopMta);

  describe('the listener', () => {
    it('offers DSN, and REQUIRETLS only under TLS; refuses bad DSN parameters and plain-text REQUIRETLS', async () => {
      const c = await smtpDialog(port);
      try {
        await c.read();
        const ehlo = await c.command('EHLO client.test');
        expect(ehlo).toMatch(/^250[- ]DSN$/m);
        expect(ehlo).not.toMatch(/REQUIRETLS/);
        expect(await c.command('MAIL FROM:<a@origin.test> REQUIRETLS')).toMatch(/^530 5\.7\.0 /);
        expect(await c.command(`MAIL FROM:<a@origin.test> ENVID=${'x'.repeat(101)}`)).toMatch(
          /^501 5\.5\.4 ENVID/,
        );
        // Encoded, 34 characters become 102: over the bound as sent onward.
        expect(await c.command(`MAIL FROM:<a@origin.test> ENVID=${'+2B'.repeat(34)}`)).toMatch(
          /^501 5\.5\.4 /,
        );
        expect(await c.command('MAIL FROM:<a@origin.test> RET=BODY')).toMatch(/^501 5\.5\.4 /);
        expect(await c.command('MAIL FROM:<a@origin.test> ENVID=ok+2B1')).toMatch(/^250 /);
        expect(await c.command('RCPT TO:<b@plain.test> NOTIFY=NEVER,SUCCESS')).toMatch(/^501 5\.5\.4 /);
        expect(await c.command('RCPT TO:<b@plain.test> NOTIFY=SOMETIMES')).toMatch(/^501 5\.5\.4 /);
        expect(await c.command('RCPT TO:<b@plain.test> ORCPT=b@plain.test')).toMatch(/^501 5\.5\.4 /);
        expect(await c.command(`RCPT TO:<b@plain.test> ORCPT=rfc822;${'b'.repeat(500)}`)).toMatch(
          /^501 5\.5\.4 /,
        );
        expect(
          await c.command('RCPT TO:<b@plain.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@plain.test'),
        ).toMatch(/^250 /);
        expect(await c.command('RSET')).toMatch(/^250 /);
        expect(await c.command('STARTTLS')).toMatch(/^220 /);
        await c.startTls('mx.tern.test');
        expect(await c.command('EHLO client.test')).toMatch(/^250[- ]REQUIRETLS$/m);
        expect(await c.command('MAIL FROM:<a@origin.test> REQUIRETLS')).toMatch(/^250 /);
      } finally {
        c.close();
      }
    });
  });

  describe('delivery status notifications (RFC 3461, RFC 3464)', () => {
    it('sends a relayed notice for NOTIFY=SUCCESS when the next hop lacks DSN, with ENVID and ORCPT decoded', async () => {
      const from = 'relayed@origin.test';
      const queueId = await submit({
        from,
        mailParams: 'RET=HDRS ENVID=env+2B1',
        rcpts: ['<bob@plain.test> NOTIFY=SUCCESS ORCPT=rfc822;Bob+2Bx@plain.test', '<quiet@plain.test>'],
        subject: 'relayed one',
      });
      await waitFor(() => received(plain, 'relayed one').length === 1, 20_000);
      const [msg] = received(plain, 'relayed one');
      expect(msg?.mailArgs.ENVID).toBeUndefined(); // no DSN on that hop: nothing passed on
      const [notice] = await waitForNotices(from);
      const dsn = await parseDsn(notice?.raw ?? Buffer.alloc(0));
      expect(dsn.subject).toBe('Successful Mail Delivery Report');
      expect(dsn.autoSubmitted).toBe('auto-replied');
      expect(dsn.perMessage).toMatchObject({
        'reporting-mta': 'dns; tern.test',
        'original-envelope-id': 'env+1',
      });
      expect(dsn.perMessage['x-tern-queue-id']).toBe(queueId);
      // Only bob asked; quiet@ (no NOTIFY) is not reported on success.
      expect(dsn.recipients).toHaveLength(1);
      expect(dsn.recipients[0]).toMatchObject({
        'final-recipient': 'rfc822; bob@plain.test',
        'original-recipient': 'rfc822; Bob+x@plain.test',
        action: 'relayed',
        status: '2.0.0',
        'remote-mta': 'dns; mx.plain.test',
      });
      expect(dsn.returned.type).toBe('text/rfc822-headers');
      await settled(queueId, from);
      expect(noticesTo(from)).toHaveLength(1);
    });

    it('passes NOTIFY, ORCPT, RET and ENVID (xtext) to a next hop that offers DSN, and sends no notice itself', async () => {
      const from = 'passed@origin.test';
      const queueId = await submit({
        from,
        mailParams: 'RET=FULL ENVID=e+2B2',
        rcpts: ['<carol@dsn.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol+2Bc@dsn.test', '<dan@dsn.test>'],
        subject: 'passed on',
      });
      await waitFor(() => received(dsnHop, 'passed on').length === 1, 20_000);
      const [msg] = received(dsnHop, 'passed on');
      // smtp-server decodes xtext: what arrives decoded is what the client meant.
      expect(msg?.mailArgs).toMatchObject({ RET: 'FULL', ENVID: 'e+2' });
      expect(msg?.rcptArgs).toEqual([{ NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;carol+c@dsn.test' }, {}]);
      await settled(queueId, from);
      expect(reports.get(queueId)?.map((r) => r.successNotice)).toEqual(['next-hop']);
      expect(noticesTo(from)).toEqual([]);
    });

    it('answers NOTIFY=SUCCESS with delivered for local delivery: maildir and LMTP', async () => {
      const from = 'local@origin.test';
      const queueId = await submit({
        from,
        rcpts: [
          '<eve@maildir.test> NOTIFY=SUCCESS',
          '<fay@lmtp.test> NOTIFY=SUCCESS ORCPT=rfc822;fay@lmtp.test',
        ],
        subject: 'local one',
      });
      await waitFor(() => received(lmtp, 'local one').length === 1, 20_000);
      // We report delivery ourselves: the LMTP server is not asked to.
      expect(received(lmtp, 'local one')[0]?.rcptArgs).toEqual([{}]);
      const notices = await waitForNotices(from, 2);
      const parsed = await Promise.all(notices.map((n) => parseDsn(n.raw)));
      const byRecipient = Object.fromEntries(parsed.map((p) => [p.recipients[0]?.['final-recipient'], p]));
      expect(byRecipient['rfc822; eve@maildir.test']?.recipients[0]).toMatchObject({ action: 'delivered' });
      expect(byRecipient['rfc822; fay@lmtp.test']?.recipients[0]).toMatchObject({
        action: 'delivered',
        'original-recipient': 'rfc822; fay@lmtp.test',
      });
      const mailbox = join(dir, 'mail', backend, 'eve', 'new');
      expect(
        readdirSync(mailbox)
          .map((f) => readFileSync(join(mailbox, f), 'utf8'))
          .join(''),
      ).toContain('Subject: local one');
      await settled(queueId, from);
      expect(noticesTo(from)).toHaveLength(2);
    });

    it('never bounces for NOTIFY=NEVER; returns the whole message for RET=FULL', async () => {
      const from = 'never@origin.test';
      const queueId = await submit({
        from,
        mailParams: 'RET=FULL ENVID=never-1',
        rcpts: ['<gone1@plain.test> NOTIFY=NEVER', '<gone2@plain.test> NOTIFY=FAILURE'],
        subject: 'never one',
      });
      const [bounce] = await waitForNotices(from);
      const dsn = await parseDsn(bounce?.raw ?? Buffer.alloc(0));
      expect(dsn.subject).toBe('Undelivered Mail Returned to Sender');
      expect(dsn.recipients).toEqual([
        expect.objectContaining({
          'final-recipient': 'rfc822; gone2@plain.test',
          action: 'failed',
          status: '5.1.1',
        }),
      ]);
      expect(dsn.returned).toMatchObject({ type: 'message/rfc822', subject: 'never one' });
      expect(dsn.returned.body).toContain('The body of never one.');
      await settled(queueId, from);
      expect(noticesTo(from)).toHaveLength(1);
    });

    it('sends one delay notice to NOTIFY=DELAY, none to NOTIFY=NEVER, while the message keeps retrying', async () => {
      const from = 'delay@origin.test';
      const queueId = await submit({
        from,
        rcpts: ['<slow1@plain.test> NOTIFY=DELAY,FAILURE', '<slow2@plain.test> NOTIFY=NEVER'],
        subject: 'delay one',
      });
      const [notice] = await waitForNotices(from);
      const dsn = await parseDsn(notice?.raw ?? Buffer.alloc(0));
      expect(dsn.subject).toBe('Delayed Mail (still being retried)');
      expect(dsn.recipients).toEqual([
        expect.objectContaining({
          'final-recipient': 'rfc822; slow1@plain.test',
          action: 'delayed',
          status: '4.2.1',
        }),
      ]);
      expect(dsn.recipients[0]?.['will-retry-until']).toBeDefined();
      // Two more attempts after the notice: still only one notice.
      const attemptsAtNotice = (await queue.inspect(queueId))?.jobs[0]?.attempts ?? 0;
      await waitFor(
        async () => ((await queue.inspect(queueId))?.jobs[0]?.attempts ?? 0) >= attemptsAtNotice + 2,
        20_000,
      );
      expect(await queue.listJobs({ sender: '<>', recipient: from })).toMatchObject({ jobs: [] });
      expect(noticesTo(from)).toHaveLength(1);
      await queue.remove(queueId);
    });
  });

  describe('REQUIRETLS (RFC 8689)', () => {
    it('delivers over MTA-STS-validated TLS to a hop that offers REQUIRETLS, and passes the flag on', async () => {
      const from = 'rtls-ok@origin.test';
      const queueId = await submit({
        from,
        tls: true,
        mailParams: 'REQUIRETLS',
        rcpts: ['<dave@sts.test> NOTIFY=FAILURE'],
        subject: 'requiretls delivered',
      });
      await waitFor(() => received(secure, 'requiretls delivered').length === 1, 20_000);
      const [msg] = received(secure, 'requiretls delivered');
      expect(msg?.secure).toBe(true);
      expect(msg?.mailArgs.REQUIRETLS).toBe(true);
      await settled(queueId, from);
      expect(reports.get(queueId)?.[0]?.tls).toMatchObject({ applied: 'mta-sts-enforce', validated: true });
      expect(noticesTo(from)).toEqual([]);
    });

    it('passes over an MX host without REQUIRETLS for the next one that offers it', async () => {
      const from = 'rtls-mixed@origin.test';
      const queueId = await submit({
        from,
        tls: true,
        mailParams: 'REQUIRETLS',
        rcpts: ['<jo@mixed.test>'],
        subject: 'requiretls second mx',
      });
      await waitFor(() => received(secure, 'requiretls second mx').length === 1, 20_000);
      expect(received(secure, 'requiretls second mx')[0]?.mailArgs.REQUIRETLS).toBe(true);
      await settled(queueId, from);
      expect(received(noRequire, 'requiretls second mx')).toEqual([]);
      expect(noticesTo(from)).toEqual([]);
    });

    it('bounces with 5.7.10 when the hop does not offer REQUIRETLS, returning headers only despite RET=FULL', async () => {
      const from = 'rtls-hop@origin.test';
      const queueId = await submit({
        from,
        tls: true,
        mailParams: 'REQUIRETLS RET=FULL',
        rcpts: ['<erin@norequire.test>'],
        subject: 'requiretls no hop',
      });
      const [bounce] = await waitForNotices(from);
      const dsn = await parseDsn(bounce?.raw ?? Buffer.alloc(0));
      expect(dsn.recipients[0]).toMatchObject({ action: 'failed', status: '5.7.10' });
      expect(dsn.recipients[0]?.['diagnostic-code']).toMatch(/does not offer REQUIRETLS/);
      expect(dsn.returned.type).toBe('text/rfc822-headers');
      expect(dsn.returned.text).toContain('Subject: requiretls no hop');
      expect(bounce?.raw.toString()).not.toContain('The body of requiretls no hop');
      await settled(queueId, from);
      expect(received(noRequire, 'requiretls no hop')).toEqual([]);
    });

    it('bounces with 5.7.10 when no MTA-STS or DANE policy validates the hop, even one offering REQUIRETLS', async () => {
      const from = 'rtls-nopolicy@origin.test';
      const queueId = await submit({
        from,
        tls: true,
        mailParams: 'REQUIRETLS',
        rcpts: ['<frank@nopolicy.test>'],
        subject: 'requiretls no policy',
      });
      const [bounce] = await waitForNotices(from);
      const dsn = await parseDsn(bounce?.raw ?? Buffer.alloc(0));
      expect(dsn.recipients[0]).toMatchObject({
        'final-recipient': 'rfc822; frank@nopolicy.test',
        status: '5.7.10',
      });
      expect(dsn.recipients[0]?.['diagnostic-code']).toMatch(/no MTA-STS or DANE policy/);
      await settled(queueId, from);
      expect(received(secure, 'requiretls no policy')).toEqual([]);
    });

    it('honours TLS-Required: No (delivers past a failing MTA-STS policy), unless REQUIRETLS was given', async () => {
      const optional = await submit({
        from: 'tlsno@origin.test',
        rcpts: ['<gina@badcert.test>'],
        subject: 'tls optional',
        headers: 'TLS-Required: No\r\n',
      });
      const strict = await submit({
        from: 'tlsno-strict@origin.test',
        tls: true,
        mailParams: 'REQUIRETLS',
        rcpts: ['<hugo@badcert.test>'],
        subject: 'tls strict',
        headers: 'TLS-Required: No\r\n',
      });
      const policyOnly = await submit({
        from: 'tlsyes@origin.test',
        rcpts: ['<ida@badcert.test>'],
        subject: 'tls policy',
      });
      await waitFor(() => received(badCert, 'tls optional').length === 1 && reports.has(optional), 20_000);
      expect(reports.get(optional)?.at(-1)?.tls).toMatchObject({ applied: 'may', validated: false });
      // The other two stay queued: the enforce policy's certificate check fails, over and over.
      const attempted = async (queueId: string) =>
        ((await queue.inspect(queueId))?.jobs[0]?.attempts ?? 0) >= 2;
      await waitFor(async () => (await attempted(strict)) && (await attempted(policyOnly)), 20_000);
      expect(received(badCert, 'tls strict')).toEqual([]);
      expect(received(badCert, 'tls policy')).toEqual([]);
      expect((await queue.inspect(strict))?.jobs[0]?.recipients[0]?.lastReply?.enhanced).toMatch(/^4\.7\./);
      await queue.remove(strict);
      await queue.remove(policyOnly);
    });
  });
});
