// HTTP injection end to end, on both queue backends: a running MTA (its injection listener, the
// DKIM plugin, the queue, the delivery worker) takes messages over real HTTP (fetch, and curl as an
// independent client), delivers them through the test DNS to a real receiving SMTP server, and
// every answer is checked against the OpenAPI document the server itself serves.
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { definePlugin, type PlatformEvent, type Plugin } from '@tern/plugin-api';
import { memoryLogger } from '@tern/plugin-api/testing';
import { dkim } from '@tern/plugin-dkim';
import { isQueueOperations, type QueueOperations } from '@tern/queue';
import {
  makeCertificate,
  run,
  type SmtpSink,
  startDnsServer,
  startRedis,
  startSmtpSink,
  swaks,
  type TestDns,
  type TestRedis,
  waitFor,
} from '@tern/testkit';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ResolvedConfig, validateConfig } from '../src/config.js';
import { addApiKey } from '../src/http/api-keys.js';
import { type RunningMta, startMta } from '../src/mta.js';

const VERIFY_DKIM = resolve(import.meta.dirname, '../../../packages/plugin-dkim/test/verify_dkim.py');
const FAST_SCRYPT = { N: 1024, r: 8, p: 1 };

const dir = mkdtempSync(join(tmpdir(), 'tern-e2e-inject-'));
let dns: TestDns;
let sink: SmtpSink;
let redis: TestRedis;
let shopToken: string;
let anyToken: string;
const keysFile = join(dir, 'api-keys');
const dkimKey = join(dir, 'shop.test.s1.pem');
const certificate = makeCertificate(['localhost']);
const caFile = join(dir, 'http-cert.pem');

beforeAll(async () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  writeFileSync(dkimKey, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  // The raw 32-byte Ed25519 key is the end of its SPKI DER (RFC 8463 §4.2).
  const raw = (publicKey.export({ type: 'spki', format: 'der' }) as Buffer).subarray(-32);
  writeFileSync(join(dir, 'http-key.pem'), certificate.key);
  writeFileSync(caFile, certificate.cert);
  [sink, dns, redis] = await Promise.all([
    startSmtpSink({ hostname: 'mx.dest.test' }),
    startDnsServer({
      'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
      'mx.dest.test': { A: ['127.0.0.1'] },
      's1._domainkey.shop.test': { TXT: [`v=DKIM1; k=ed25519; p=${raw.toString('base64')}`] },
    }),
    startRedis({ appendonly: true, appendfsync: 'always', maxmemoryPolicy: 'noeviction' }),
  ]);
  shopToken = await addApiKey(keysFile, 'shop-app', ['shop.test'], FAST_SCRYPT);
  anyToken = await addApiKey(keysFile, 'any-app', ['*'], FAST_SCRYPT);
}, 60_000);

afterAll(async () => {
  await Promise.all([sink?.stop(), dns?.stop(), redis?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

const delivered = (subject: string) => sink.messages.filter((m) => m.headers.includes(`Subject: ${subject}`));

/** dkimpy (python3-dkim) on the message as the receiving server got it, the key from the test DNS. */
async function verifyDkim(raw: Buffer): Promise<{ valid: boolean; domain: string; algorithm: string }[]> {
  const result = await run('/usr/bin/python3', [VERIFY_DKIM, dns.host, String(dns.port)], { input: raw });
  expect(result.status, result.stderr).toBe(0);
  return (
    JSON.parse(result.stdout) as { signatures: { valid: boolean; domain: string; algorithm: string }[] }
  ).signatures;
}

describe.each(['embedded', 'redis'] as const)('HTTP injection on the %s queue', (backend) => {
  const work = join(dir, backend);
  let mta: RunningMta;
  let url: string;
  let ops: QueueOperations;
  const events: PlatformEvent[] = [];
  const log = memoryLogger();
  // The embedded run serves HTTPS (and curl checks the certificate); the Redis run plain HTTP.
  const tls = backend === 'embedded';
  let openapi: Record<string, unknown>;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  (addFormats as unknown as (a: Ajv2020) => void)(ajv);

  /** A request to the running server; its answer is checked against the served OpenAPI document. */
  async function post(
    body: unknown,
    headers: Record<string, string> = {},
    token = shopToken,
  ): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
    const res = await curlFetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(token === '' ? {} : { authorization: `Bearer ${token}` }),
        ...headers,
      },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    expectDocumented(res.status, res.body);
    return res;
  }

  function expectDocumented(status: number, body: unknown): void {
    const responses = (openapi.paths as Record<string, { post: { responses: Record<string, unknown> } }>)[
      '/v1/messages'
    ]?.post.responses as Record<string, { content: Record<string, { schema: object }> }>;
    const documented = responses[String(status)] ?? responses.default;
    const schema = documented?.content['application/json']?.schema;
    expect(schema, `status ${status} is documented`).toBeDefined();
    const validate = ajv.compile(schema as object);
    expect(validate(body), JSON.stringify(validate.errors)).toBe(true);
  }

  /**
   * fetch for plain HTTP; curl (an independent client) for HTTPS, trusting the test certificate.
   * Either way: the status, the JSON body and the headers.
   */
  async function curlFetch(
    target: string,
    init: { method: string; headers: Record<string, string>; body?: string | Buffer },
  ): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
    if (!tls) {
      const res = await fetch(target, init);
      return {
        status: res.status,
        body: (await res.json()) as Record<string, unknown>,
        headers: res.headers,
      };
    }
    const bodyFile = join(work, `body-${Math.random().toString(36).slice(2)}`);
    if (init.body !== undefined) writeFileSync(bodyFile, init.body);
    const result = await run('curl', [
      '-sS',
      '--cacert',
      caFile,
      '-X',
      init.method,
      ...Object.entries(init.headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]),
      ...(init.body === undefined ? [] : ['--data-binary', `@${bodyFile}`]),
      '-D',
      '-',
      target,
    ]);
    expect(result.status, result.stderr).toBe(0);
    const [head = '', text = ''] = result.stdout.split(/\r\n\r\n(?=[{[])/);
    const lines = head.split('\r\n').filter((l) => !l.startsWith('HTTP/1.1 100'));
    const statusLine = lines.find((l) => l.startsWith('HTTP/')) ?? '';
    const headers = new Headers();
    for (const line of lines.slice(1)) {
      const at = line.indexOf(':');
      if (at > 0) headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
    }
    return { status: Number(statusLine.split(' ')[1]), body: JSON.parse(text), headers };
  }

  beforeAll(async () => {
    mkdirSync(work, { recursive: true });
    mta = await startMta(configWith([]), log);
    mta.events.on((event) => events.push(event));
    url = mta.injectionUrl as string;
    if (!isQueueOperations(mta.queue)) throw new Error('the queue has no operations');
    ops = mta.queue;
    openapi = await fetchDocument();
  }, 60_000);

  /** The config of this run, with `extra` plugins after the DKIM signer. */
  function configWith(extra: Plugin[]): ResolvedConfig {
    return validateConfig(
      {
        hostname: 'tern.test',
        listeners: [{ kind: 'mx', host: '127.0.0.1', port: 0 }],
        localDomains: ['tern.test'],
        queue:
          backend === 'redis'
            ? {
                backend: 'redis',
                url: redis.url,
                prefix: 'inject',
                retry: { intervals: ['1s'], maxAge: '1h' },
              }
            : { backend: 'embedded', path: 'queue.db', retry: { intervals: ['1s'], maxAge: '1h' } },
        intake: { spoolDir: 'spool' },
        delivery: { dns: { servers: [dns.server] }, port: sink.port },
        plugins: [dkim({ domains: { 'shop.test': { selector: 's1', keyFile: dkimKey } } }), ...extra],
        admin: { listen: '127.0.0.1:0', token: 'admin-token-not-an-api-key' },
        http: {
          listen: '127.0.0.1:0',
          apiKeysFile: keysFile,
          maxMessageSize: 64 * 1024,
          ...(tls ? { tls: { key: join(dir, 'http-key.pem'), cert: caFile } } : {}),
        },
      },
      work,
    );
  }

  async function fetchDocument(): Promise<Record<string, unknown>> {
    const res = await curlFetch(`${url}/v1/openapi.json`, { method: 'GET', headers: {} });
    expect(res.status).toBe(200);
    return res.body;
  }

  afterAll(async () => {
    await mta?.close(5000);
  });

  it('serves an OpenAPI 3.1 document made from the request schemas', () => {
    expect(openapi.openapi).toBe('3.1.0');
    const post = (openapi.paths as Record<string, Record<string, unknown>>)['/v1/messages']?.post as {
      requestBody: { content: Record<string, { schema: { oneOf?: { properties: object }[] } }> };
    };
    const json = post.requestBody.content['application/json']?.schema.oneOf ?? [];
    expect(json.map((s) => Object.keys(s.properties).sort())).toEqual([
      expect.arrayContaining(['from', 'to', 'attachments', 'tags', 'envelope', 'headers']),
      ['envelope', 'raw', 'tags'],
    ]);
    expect(post.requestBody.content['message/rfc822']).toBeDefined();
  });

  it('a JSON message with an attachment and tags is signed by the DKIM plugin and delivered; a queued event names the key and tags', async () => {
    const subject = `json-${backend}`;
    const pdf = Buffer.from('%PDF-1.4 pretend invoice\n');
    const res = await post({
      from: { name: 'Shop', address: 'news@shop.test' },
      to: ['ann@dest.test'],
      subject,
      text: 'Your invoice is attached.',
      html: '<p>Your invoice is attached.</p>',
      attachments: [
        { filename: 'invoice.pdf', contentType: 'application/pdf', content: pdf.toString('base64') },
      ],
      tags: ['invoice', 'eu-1'],
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ recipients: ['ann@dest.test'], tags: ['invoice', 'eu-1'] });
    const queueId = res.body.queueId as string;
    await waitFor(() => delivered(subject).length === 1, 15_000);
    const [message] = delivered(subject);
    expect(message?.mailFrom).toBe('news@shop.test');
    expect(message?.raw.toString()).toContain(pdf.toString('base64').slice(0, 20));
    expect(message?.headers).toMatch(/^Received: from \S+ \(API key shop-app\) by tern\.test with HTTP id/m);
    expect(message?.headers).not.toMatch(/X-Tern-Tag/i);
    const signatures = await verifyDkim(message?.raw as Buffer);
    expect(signatures).toEqual([
      expect.objectContaining({ valid: true, domain: 'shop.test', algorithm: 'ed25519-sha256' }),
    ]);
    expect(events).toContainEqual(
      expect.objectContaining({
        type: 'queued',
        queueId,
        recipient: 'ann@dest.test',
        apiKey: 'shop-app',
        tags: ['invoice', 'eu-1'],
        senderDomain: 'shop.test',
        source: 'injection',
      }),
    );
    const details = await ops.details(queueId);
    expect(details?.timeline[0]).toMatchObject({
      type: 'received',
      listener: 'http',
      user: 'shop-app',
      apiKey: 'shop-app',
      tags: ['invoice', 'eu-1'],
    });
  });

  it('the same Idempotency-Key twice: one queue id, one delivery', async () => {
    const subject = `once-${backend}`;
    const body = { from: 'news@shop.test', to: ['bob@dest.test'], subject, text: 'only once' };
    const first = await post(body, { 'idempotency-key': `order-${backend}` });
    const again = await post(body, { 'idempotency-key': `order-${backend}` });
    expect(first.status).toBe(201);
    expect(again).toMatchObject({ status: 200, body: { queueId: first.body.queueId, duplicate: true } });
    await waitFor(() => delivered(subject).length === 1, 15_000);
    // Nothing else is queued that could deliver it again: the queue has drained.
    await waitFor(async () => (await ops.summary()).totals.total === 0, 15_000);
    expect(delivered(subject)).toHaveLength(1);
    const other = await post({ ...body, text: 'changed' }, { 'idempotency-key': `order-${backend}` });
    expect(other).toMatchObject({ status: 422, body: { code: 'idempotency_mismatch' } });
  });

  it('a suppressed recipient is refused with 422 and since when', async () => {
    await mta.queue.suppressions?.add([
      {
        scope: 'shop.test',
        address: 'gone@dest.test',
        source: 'bounce',
        category: 'bad-mailbox',
        reason: '550 5.1.1 no such user',
        createdAt: Date.UTC(2026, 5, 1),
      },
    ]);
    const res = await post({ from: 'news@shop.test', to: ['gone@dest.test'], subject: 's', text: 'x' });
    expect(res).toMatchObject({
      status: 422,
      body: {
        code: 'recipient_suppressed',
        suppressed: [{ recipient: 'gone@dest.test', scope: 'shop.test', since: '2026-06-01T00:00:00.000Z' }],
      },
    });
  });

  it('refuses: a sender domain outside the key (403), no or a wrong key (401), too large (413), another media type (415), bad JSON (400)', async () => {
    const message = { from: 'news@other.test', to: ['ann@dest.test'], subject: 'x', text: 'x' };
    expect(await post(message)).toMatchObject({ status: 403, body: { code: 'sender_not_allowed' } });
    // The key for any domain may.
    expect((await post({ ...message, subject: `any-${backend}` }, {}, anyToken)).status).toBe(201);
    const noKey = await post(message, {}, '');
    expect(noKey).toMatchObject({ status: 401, body: { code: 'unauthorized' } });
    expect(noKey.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await post(message, {}, `${shopToken.slice(0, -2)}xx`)).toMatchObject({ status: 401 });
    // Declared too large: refused before the body is read.
    const big = 'x'.repeat(400 * 1024);
    expect(await post({ ...message, from: 'news@shop.test', text: big })).toMatchObject({
      status: 413,
      body: { code: 'too_large' },
    });
    // Within the body limit, but the message built from it is over the message size.
    expect(await post({ ...message, from: 'news@shop.test', text: 'y'.repeat(70 * 1024) })).toMatchObject({
      status: 413,
      body: { code: 'too_large' },
    });
    expect(await post('hello', { 'content-type': 'text/plain' })).toMatchObject({
      status: 415,
      body: { code: 'unsupported_media_type' },
    });
    expect(await post('{"from":', {})).toMatchObject({ status: 400, body: { code: 'invalid_request' } });
    expect(await post({ ...message, from: 'news@shop.test', tags: ['no spaces'] })).toMatchObject({
      status: 400,
      body: { code: 'invalid_request', field: 'tags[0]' },
    });
  });

  it('a client that waits for 100 Continue gets its 413 before sending the body', async () => {
    const file = join(work, 'big.json');
    writeFileSync(
      file,
      JSON.stringify({ from: 'news@shop.test', to: ['a@dest.test'], text: 'z'.repeat(2 * 1024 * 1024) }),
    );
    const result = await run('curl', [
      '-sS',
      ...(tls ? ['--cacert', caFile] : []),
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %{size_upload}',
      '-H',
      'Expect: 100-continue',
      '--expect100-timeout',
      '30',
      '-H',
      `Authorization: Bearer ${shopToken}`,
      '-H',
      'Content-Type: application/json',
      '--data-binary',
      `@${file}`,
      `${url}/v1/messages`,
    ]);
    expect(result.status, result.stderr).toBe(0);
    const [status, uploaded] = result.stdout.split(' ');
    expect(status).toBe('413');
    expect(Number(uploaded)).toBe(0);
  });

  it('a raw RFC 5322 message (message/rfc822, envelope in the query) posted with curl is delivered; its X-Tern-Tag is taken and removed', async () => {
    const subject = `raw-${backend}`;
    const raw = [
      'From: News <news@shop.test>',
      'To: cat@dest.test',
      `Subject: ${subject}`,
      'X-Tern-Tag: digest, weekly',
      'Content-Type: text/plain; charset=utf-8',
      '',
      'Raw body, LF line ends as a file has them.',
      '',
    ].join('\n');
    const file = join(work, 'raw.eml');
    writeFileSync(file, raw);
    const result = await run('curl', [
      '-sS',
      ...(tls ? ['--cacert', caFile] : []),
      '-w',
      '\n%{http_code}',
      '-H',
      `Authorization: Bearer ${shopToken}`,
      '-H',
      'Content-Type: message/rfc822',
      '--data-binary',
      `@${file}`,
      `${url}/v1/messages?mailFrom=news@shop.test&to=cat@dest.test&tag=api`,
    ]);
    expect(result.status, result.stderr).toBe(0);
    const [text = '', status] = result.stdout.split('\n');
    const body = JSON.parse(text) as Record<string, unknown>;
    expect(Number(status)).toBe(201);
    expectDocumented(201, body);
    await waitFor(() => delivered(subject).length === 1, 15_000);
    const [message] = delivered(subject);
    expect(message?.rcptTo).toEqual(['cat@dest.test']);
    expect(message?.headers).not.toMatch(/X-Tern-Tag/i);
    expect(message?.body.toString()).toBe('Raw body, LF line ends as a file has them.\r\n');
    expect((await verifyDkim(message?.raw as Buffer))[0]?.valid).toBe(true);
    const details = await ops.details(body.queueId as string);
    expect(details?.timeline[0]).toMatchObject({ tags: ['api', 'digest', 'weekly'] });
    // A raw request without recipients names the parameter.
    const missing = await curlFetch(`${url}/v1/messages?mailFrom=news@shop.test`, {
      method: 'POST',
      headers: { authorization: `Bearer ${shopToken}`, 'content-type': 'message/rfc822' },
      body: raw,
    });
    expect(missing).toMatchObject({ status: 400, body: { code: 'invalid_request', field: 'to' } });
    expectDocumented(missing.status, missing.body);
  });

  it('counts requests by source and result in /metrics; the admin token is not an API key', async () => {
    const admin = { authorization: 'Bearer admin-token-not-an-api-key' };
    const refused = await post({ from: 'news@shop.test', to: ['a@dest.test'], text: 'x' }, admin, '');
    expect(refused).toMatchObject({ status: 401, body: { code: 'unauthorized' } });
    const metrics = await (await fetch(`${mta.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/^tern_http_injections_total\{source="json",result="queued"\} [1-9]/m);
    expect(metrics).toMatch(/^tern_http_injections_total\{source="raw",result="queued"\} 1$/m);
    expect(metrics).toMatch(/^tern_http_injections_total\{source="json",result="too_large"\} 3$/m);
    expect(metrics).toMatch(/^tern_http_injections_total\{source="none",result="unauthorized"\} [1-9]/m);
    expect(metrics).toMatch(/^tern_messages_accepted_total\{listener="http"\} [1-9]/m);
  });

  it('after a reload, injected mail runs through the new plugins', async () => {
    const stamp = definePlugin({
      name: 'stamp',
      headers(ctx) {
        ctx.headers.append('X-Stamp', 'reloaded');
      },
    });
    await mta.reload(configWith([stamp]));
    const subject = `reloaded-${backend}`;
    const res = await post({ from: 'news@shop.test', to: ['eve@dest.test'], subject, text: 'x' });
    expect(res.status).toBe(201);
    await waitFor(() => delivered(subject).length === 1, 15_000);
    expect(delivered(subject)[0]?.headers).toMatch(/^X-Stamp: reloaded\r$/m);
  });

  it('an SMTP client from a trusted network tags by X-Tern-Tag; the field is not sent on', async () => {
    const subject = `smtp-tag-${backend}`;
    const sent = await swaks(mta.listeners[0]?.port as number, [
      '--from',
      'app@tern.test',
      '--to',
      'dan@dest.test',
      '--h-Subject',
      subject,
      '--add-header',
      'X-Tern-Tag: smtp-news',
    ]);
    const queueId = /queued as (\S+)/.exec(sent.output)?.[1];
    expect(queueId, sent.output).toBeDefined();
    await waitFor(() => delivered(subject).length === 1, 15_000);
    expect(delivered(subject)[0]?.headers).not.toMatch(/X-Tern-Tag/i);
    expect((await ops.details(queueId as string))?.timeline[0]).toMatchObject({ tags: ['smtp-news'] });
  });
});
