// One injected message through the real pieces: an embedded queue store (suppression list,
// idempotency keys, durable enqueue), core's intake with plugin hooks, and a key scoped to a
// sender domain. The HTTP routes on top of this are tested separately once they exist.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IntakeSpool } from '@tern/core';
import { reject } from '@tern/plugin-api';
import { PluginHost } from '@tern/plugin-api/host';
import { memoryLogger } from '@tern/plugin-api/testing';
import { rateLimit } from '@tern/plugin-ratelimit';
import { type EmbeddedQueue, openEmbeddedQueue } from '@tern/queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type InjectionDeps, injectMessage } from '../src/http/inject.js';

const dir = mkdtempSync(join(tmpdir(), 'tern-inject-'));
let queue: EmbeddedQueue;
const seen: { headers: string[]; queued: string[] } = { headers: [], queued: [] };
const plugins = new PluginHost([
  {
    name: 'watch',
    headers(ctx) {
      seen.headers.push(ctx.headers.get('received') ?? '');
      ctx.headers.append('X-Seen-By', 'watch');
    },
    message(ctx) {
      if (ctx.message.headers.get('subject') === 'forbidden') return reject(550, '5.7.1', 'Not this one');
    },
    queue(ctx) {
      if (ctx.message.headers.get('subject') === 'hold me') ctx.hold('held by watch');
    },
    queued(ctx) {
      seen.queued.push(ctx.queueId);
    },
  },
]);
let deps: InjectionDeps;
const key = { id: 'shop-app', domains: ['shop.test'] };
const message = (subject: string, to = ['ann@dest.test']) => ({
  from: 'news@shop.test',
  to,
  subject,
  text: 'Hello',
});

beforeAll(() => {
  queue = openEmbeddedQueue({ path: join(dir, 'queue.db') });
  deps = {
    plugins: () => plugins,
    sink: queue,
    spool: new IntakeSpool({ dir: join(dir, 'spool') }),
    suppressions: queue.suppressions,
    idempotency: queue.idempotency,
    hostname: 'mta.test',
    log: memoryLogger(),
  };
});
afterAll(async () => {
  await queue?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('injectMessage', () => {
  it('queues the message durably through the intake hooks, with our Received field', async () => {
    const out = await injectMessage(deps, { key, body: message('Hi'), remoteAddress: '192.0.2.7' });
    expect(out).toMatchObject({ status: 201, body: { recipients: ['ann@dest.test'], tags: [] } });
    const queueId = (out.body as { queueId: string }).queueId;
    const stored = (await queue.readMessage(queueId))?.toString() ?? '';
    expect(stored).toMatch(
      /^Received: from 192\.0\.2\.7 \(API key shop-app\) by mta\.test with HTTP id http-[0-9a-f]+; /,
    );
    expect(stored).toContain('X-Seen-By: watch');
    expect(stored).toMatch(/\r\nMessage-ID: <.+>\r\n/);
    expect(seen.headers.at(-1)).toMatch(/with HTTP/);
    await expect.poll(() => seen.queued.includes(queueId)).toBe(true);
    const details = await queue.details(queueId);
    expect(details?.timeline[0]).toMatchObject({
      type: 'received',
      mailFrom: 'news@shop.test',
      listener: 'http',
      user: 'shop-app',
    });
  });

  it('the same Idempotency-Key gives the same queue id and queues nothing more; another request under it is refused', async () => {
    const before = (await queue.summary()).totals.total;
    const first = await injectMessage(deps, {
      key,
      body: message('Once'),
      idempotencyKey: 'order-1',
      remoteAddress: '::1',
    });
    const again = await injectMessage(deps, {
      key,
      body: message('Once'),
      idempotencyKey: 'order-1',
      remoteAddress: '::1',
    });
    expect(first.status).toBe(201);
    expect(again).toEqual({
      status: 200,
      body: { queueId: (first.body as { queueId: string }).queueId, duplicate: true },
    });
    expect((await queue.summary()).totals.total).toBe(before + 1);
    expect(
      await injectMessage(deps, {
        key,
        body: message('Other'),
        idempotencyKey: 'order-1',
        remoteAddress: '::1',
      }),
    ).toMatchObject({ status: 422, body: { code: 'idempotency_mismatch' } });
    // Another key's idempotency keys are its own.
    const other = await injectMessage(deps, {
      key: { id: 'other-app', domains: ['*'] },
      body: message('Once'),
      idempotencyKey: 'order-1',
      remoteAddress: '::1',
    });
    expect(other.status).toBe(201);
  });

  it('a refusal releases the Idempotency-Key, so the corrected request goes through', async () => {
    const refused = await injectMessage(deps, {
      key,
      body: message('forbidden'),
      idempotencyKey: 'k2',
      remoteAddress: '::1',
    });
    expect(refused).toMatchObject({
      status: 422,
      body: { code: 'rejected', reply: { code: 550, enhanced: '5.7.1', text: 'Not this one' } },
    });
    const fixed = await injectMessage(deps, {
      key,
      body: message('forbidden'),
      idempotencyKey: 'k2',
      remoteAddress: '::1',
    });
    expect(fixed.status).toBe(422); // still refused by the plugin, but not blocked by the key
    expect(fixed.body).toMatchObject({ code: 'rejected' });
  });

  it('refuses a sender domain the key does not have, and suppressed recipients, saying since when', async () => {
    expect(
      await injectMessage(deps, {
        key,
        body: { ...message('x'), from: 'news@other.test' },
        remoteAddress: '::1',
      }),
    ).toMatchObject({ status: 403, body: { code: 'sender_not_allowed', field: 'from' } });
    await queue.suppressions.add([
      {
        scope: 'shop.test',
        address: 'gone@dest.test',
        source: 'bounce',
        category: 'bad-mailbox',
        reason: '550 5.1.1',
        createdAt: Date.UTC(2026, 0, 2),
      },
    ]);
    expect(
      await injectMessage(deps, {
        key,
        body: message('x', ['ann@dest.test', 'Gone@dest.test']),
        remoteAddress: '::1',
      }),
    ).toEqual({
      status: 422,
      body: {
        code: 'recipient_suppressed',
        error: '1 recipient(s) are suppressed: gone@dest.test',
        suppressed: [
          {
            recipient: 'gone@dest.test',
            scope: 'shop.test',
            since: '2026-01-02T00:00:00.000Z',
            source: 'bounce: bad-mailbox',
          },
        ],
      },
    });
  });

  it('holds what a queue hook holds, and names the field of a bad request', async () => {
    const held = await injectMessage(deps, { key, body: message('hold me'), remoteAddress: '::1' });
    expect((await queue.details((held.body as { queueId: string }).queueId))?.held).toBe(true);
    expect(
      await injectMessage(deps, { key, body: { from: 'news@shop.test' }, remoteAddress: '::1' }),
    ).toMatchObject({
      status: 400,
      body: { code: 'invalid_request', field: 'text' },
    });
    expect(
      await injectMessage(deps, {
        key,
        body: message('x'),
        idempotencyKey: 'has space',
        remoteAddress: '::1',
      }),
    ).toMatchObject({ status: 400, body: { field: 'Idempotency-Key' } });
  });

  it('a request under an Idempotency-Key still being handled gets 409', async () => {
    // The same request, claimed by another node a moment ago.
    const fingerprint = createHash('sha256')
      .update(JSON.stringify(message('x')))
      .digest('base64url');
    await queue.idempotency.claim('shop-app:busy', fingerprint, 60_000);
    expect(
      await injectMessage(deps, { key, body: message('x'), idempotencyKey: 'busy', remoteAddress: '::1' }),
    ).toMatchObject({ status: 409, body: { code: 'idempotency_in_progress' } });
  });

  it('rate limits see the API key as the authenticated user: over the limit is 429 with the plugin reply', async () => {
    const host = new PluginHost([
      rateLimit({ rules: [{ key: 'user', count: 'messages', limit: 1, per: '1h', listeners: ['http'] }] }),
    ]);
    const limited: InjectionDeps = { ...deps, plugins: () => host };
    const burst = { id: 'burst-app', domains: ['shop.test'] };
    const first = await injectMessage(limited, { key: burst, body: message('one'), remoteAddress: '::1' });
    expect(first.status).toBe(201);
    expect(
      await injectMessage(limited, { key: burst, body: message('two'), remoteAddress: '::1' }),
    ).toMatchObject({
      status: 429,
      body: {
        code: 'temporarily_refused',
        reply: { code: 451, enhanced: '4.7.1', text: expect.stringContaining('user burst-app') },
      },
    });
  });

  it('a queue that cannot take the message answers 503 without saying why, and releases the Idempotency-Key', async () => {
    const broken: InjectionDeps = {
      ...deps,
      sink: {
        enqueue: async () => {
          throw new Error('SQLITE_FULL: database or disk is full at /var/lib/tern/queue.db');
        },
      },
    };
    const out = await injectMessage(broken, {
      key,
      body: message('full'),
      idempotencyKey: 'disk-full',
      remoteAddress: '::1',
    });
    expect(out).toEqual({
      status: 503,
      body: { code: 'unavailable', error: 'the message could not be queued now; retry later' },
    });
    const retried = await injectMessage(deps, {
      key,
      body: message('full'),
      idempotencyKey: 'disk-full',
      remoteAddress: '::1',
    });
    expect(retried.status).toBe(201);
  });

  it('a raw message keeps its 8-bit bytes, gets CRLF line ends, and takes its envelope from the query', async () => {
    const bytes = Buffer.concat([
      Buffer.from(
        'From: news@shop.test\nTo: ann@dest.test\nSubject: raw\nContent-Type: text/plain; charset=iso-8859-1\n\nCaf',
      ),
      Buffer.from([0xe9]),
      Buffer.from('\n'),
    ]);
    const query = new URLSearchParams('mailFrom=news@shop.test&to=ann@dest.test&tag=weekly');
    const out = await injectMessage(deps, {
      key,
      body: undefined,
      raw: { bytes, query },
      remoteAddress: '::1',
    });
    expect(out).toMatchObject({ status: 201, body: { recipients: ['ann@dest.test'], tags: ['weekly'] } });
    const stored = (await queue.readMessage((out.body as { queueId: string }).queueId)) as Buffer;
    expect(stored.subarray(-6)).toEqual(Buffer.from([0x43, 0x61, 0x66, 0xe9, 0x0d, 0x0a]));
    expect(
      await injectMessage(deps, {
        key,
        body: undefined,
        raw: { bytes, query: new URLSearchParams('mailFrom=news@shop.test&to=ann@dest.test&bcc=x@y.test') },
        remoteAddress: '::1',
      }),
    ).toMatchObject({ status: 400, body: { code: 'invalid_request', field: 'bcc' } });
  });
});
