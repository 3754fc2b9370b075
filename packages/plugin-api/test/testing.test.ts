// The test kit drives every hook with the contexts Tern gives, through the same runner: intake
// to queue and queued, the delivery side (route, beforeSend, delivered, deferred, bounced) and
// the lifecycle (init, shutdown).
import { describe, expect, test } from 'vitest';
import {
  type DeliveredContext,
  definePlugin,
  HookFailure,
  type HookName,
  type NextHop,
  type QueuedContext,
  type RouteContext,
  smtpReply,
} from '../src/index.js';
import { TEST_REPLIES, testDelivery, testPlugins } from '../src/testing/index.js';

const QUEUE_ID = /^[0-9A-Z]{9}[0-9A-F]{12}$/;
const MESSAGE = 'From: a@example.org\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nHello.\r\n';

describe('the intake side', () => {
  test('queue hooks change the message and envelope and may hold it; queued sees the queue id', async () => {
    let queued: QueuedContext<unknown, unknown> | undefined;
    const kit = testPlugins(
      definePlugin({
        name: 'archive',
        queue(ctx) {
          ctx.message.headers.prepend('X-Archived', 'yes');
          ctx.envelope.recipients.push({ address: 'archive@example.test' });
          ctx.hold('awaiting review');
        },
        queued(ctx) {
          queued = ctx;
        },
      }),
    );
    await kit.connect();
    await kit.mailFrom('a@example.org');
    await kit.rcptTo('b@example.test');
    const result = await kit.data(MESSAGE);
    expect(result.verdict.kind).toBe('continue');
    expect(result.message.headers.get('x-archived')).toBe('yes');
    expect(result.envelope.recipients.map((r) => r.address)).toEqual([
      'b@example.test',
      'archive@example.test',
    ]);
    expect(result.held).toBe('awaiting review');
    await kit.queued();
    expect(queued?.queueId).toMatch(QUEUE_ID);
    expect(queued?.envelope.recipients).toEqual([{ address: 'b@example.test' }]);
    expect(queued?.transaction.mailFrom).toBe('a@example.org');
  });

  test("X-Tern-Tag: a trusted client's tags reach the message hook and the envelope; the field is removed", async () => {
    const seen: (readonly string[])[] = [];
    const plugin = definePlugin({
      name: 'tag-reader',
      message(ctx) {
        seen.push(ctx.tags);
      },
    });
    const tagged = `X-Tern-Tag: newsletter, weekly\r\n${MESSAGE}`;
    const trusted = testPlugins([plugin], { trusted: true });
    await trusted.mailFrom('a@example.org');
    await trusted.rcptTo('b@example.test');
    const result = await trusted.data(tagged);
    expect(result.verdict.kind).toBe('continue');
    expect(result.envelope.tags).toEqual(['newsletter', 'weekly']);
    expect(result.message.headers.has('x-tern-tag')).toBe(false);
    // An anonymous client's field is removed and ignored, as core does.
    const anonymous = testPlugins([plugin]);
    await anonymous.mailFrom('a@example.org');
    await anonymous.rcptTo('b@example.test');
    const plain = await anonymous.data(tagged);
    expect(plain.envelope.tags).toBeUndefined();
    expect(plain.message.headers.has('x-tern-tag')).toBe(false);
    expect(seen).toEqual([['newsletter', 'weekly'], []]);
    // A value that is not a tag is refused with 550 5.6.0.
    await trusted.mailFrom('a@example.org');
    await trusted.rcptTo('b@example.test');
    const bad = await trusted.data(`X-Tern-Tag: no spaces allowed\r\n${MESSAGE}`);
    expect(bad.verdict).toEqual({
      kind: 'reject',
      reply: expect.objectContaining({ code: 550, enhanced: '5.6.0' }),
    });
  });

  test('a failing queue hook answers 451 4.3.0 as core does, and says who failed', async () => {
    const kit = testPlugins({
      name: 'broken-signer',
      queue: () => {
        throw new Error('key not readable');
      },
    });
    await kit.mailFrom('a@example.org');
    await kit.rcptTo('b@example.test');
    const { verdict } = await kit.data(MESSAGE);
    expect(verdict).toEqual({
      kind: 'tempfail',
      reply: expect.objectContaining({ code: 451, enhanced: '4.3.0' }),
    });
    expect(kit.failures()).toEqual([
      expect.objectContaining({
        message: 'plugin broken-signer: hook queue threw',
        fields: expect.objectContaining({ hook: 'queue' }),
      }),
    ]);
  });

  test('close aborts a hook still deciding for the client, then runs the close hooks', async () => {
    const seen: string[] = [];
    let started: () => void = () => {};
    const lookingUp = new Promise<void>((resolve) => {
      started = resolve;
    });
    const kit = testPlugins({
      name: 'lookup',
      rcptTo: (ctx) =>
        new Promise((_, fail) => {
          ctx.signal.addEventListener('abort', () => {
            seen.push(`aborted: ${(ctx.signal.reason as Error).message}`);
            fail(ctx.signal.reason);
          });
          started();
        }),
      close: () => void seen.push('close'),
    });
    await kit.mailFrom('a@example.org');
    const rcpt = kit.rcptTo('b@example.test');
    await lookingUp;
    await kit.close();
    expect((await rcpt).kind).toBe('tempfail');
    expect(seen).toEqual(['aborted: the SMTP session closed', 'close']);
  });
});

describe('the delivery side', () => {
  const envelope = {
    mailFrom: 'sender@example.org',
    recipients: [{ address: 'a@one.test' }, { address: 'b@two.test' }, { address: 'c@one.test' }],
  };

  test('route sees one domain’s job, as the worker makes it, and returns the hop', async () => {
    const seen: RouteContext[] = [];
    const kit = testDelivery(
      {
        name: 'router',
        route(ctx) {
          seen.push(ctx);
          return ctx.domain === 'one.test' ? { type: 'smtp', host: 'relay.test', port: 2525 } : undefined;
        },
      },
      { envelope, attempt: 2 },
    );
    expect(await kit.route()).toEqual({ type: 'smtp', host: 'relay.test', port: 2525 });
    expect(await kit.route('two.test')).toBeUndefined();
    expect(seen[0]).toMatchObject({
      hook: 'route',
      domain: 'one.test',
      attempt: 2,
      recipients: [{ address: 'a@one.test' }, { address: 'c@one.test' }],
      envelope: {
        mailFrom: 'sender@example.org',
        recipients: [{ address: 'a@one.test' }, { address: 'c@one.test' }],
      },
    });
    expect(seen[0]?.queueId).toMatch(QUEUE_ID);
    expect(seen[0]?.signal).toBeInstanceOf(AbortSignal);
  });

  test('a route hook naming no real hop rejects with HookFailure', async () => {
    const kit = testDelivery({ name: 'half', route: () => ({ type: 'smtp' }) as NextHop });
    await expect(kit.route()).rejects.toThrow(
      new HookFailure('half', 'route', 'returned something it may not: an smtp hop needs a host'),
    );
  });

  test('beforeSend changes the headers that go out', async () => {
    const kit = testDelivery({
      name: 'stamp',
      beforeSend(ctx) {
        ctx.message.headers.prepend('X-Next-Hop', ctx.hop.type === 'smtp' ? ctx.hop.host : ctx.hop.type);
      },
    });
    const sent = await kit.beforeSend(MESSAGE, { hop: { type: 'smtp', host: 'relay.test' } });
    expect(sent.toBuffer().toString()).toBe(`X-Next-Hop: relay.test\r\n${MESSAGE}`);
    expect((await kit.beforeSend(MESSAGE)).headers.get('x-next-hop')).toBe('mx');
  });

  test('delivered gets the remote MTA and a reply per recipient', async () => {
    const seen: DeliveredContext[] = [];
    const kit = testDelivery({ name: 'observer', delivered: (ctx) => void seen.push(ctx) }, { envelope });
    await kit.delivered();
    await kit.delivered({ domain: 'two.test', remoteMta: 'mx.two.test[198.51.100.7]:25' });
    expect(seen.map((c) => c.remoteMta)).toEqual([
      'mx.one.test[192.0.2.25]:25',
      'mx.two.test[198.51.100.7]:25',
    ]);
    expect(seen[0]?.results).toEqual([
      { recipient: { address: 'a@one.test' }, reply: TEST_REPLIES.delivered },
      { recipient: { address: 'c@one.test' }, reply: TEST_REPLIES.delivered },
    ]);
    expect(seen[0]?.hop).toEqual({ type: 'mx', domain: 'one.test' });
  });

  test('deferred advice is combined, and advice of the wrong shape is a failure left out', async () => {
    const later = new Date(Date.now() + 3_600_000);
    const kit = testDelivery([
      { name: 'backoff', deferred: (ctx) => (ctx.attempt >= 1 ? { retryAt: later } : undefined) },
      { name: 'sloppy', deferred: () => ({ retryAt: 'soon' }) as never },
    ]);
    expect(await kit.deferred()).toEqual({});
    kit.attempt += 1;
    expect(await kit.deferred({ reply: smtpReply(421, '4.4.2', 'Connection dropped') })).toEqual({
      retryAt: later,
    });
    expect(kit.failures().map((r) => r.message)).toEqual([
      'plugin sloppy: hook deferred returned something it may not: retryAt must be a Date, not "soon"',
      'plugin sloppy: hook deferred returned something it may not: retryAt must be a Date, not "soon"',
    ]);
  });

  test('bounced sees why, and may suppress or redirect the notice', async () => {
    const kit = testDelivery({
      name: 'quiet',
      bounced: (ctx) =>
        ctx.reason === 'expired' ? { suppress: true } : { redirectTo: 'postmaster@example.org' },
    });
    expect(await kit.bounced()).toEqual({ redirectTo: 'postmaster@example.org' });
    expect(await kit.bounced({ reason: 'expired' })).toEqual({ suppress: true });
  });
});

describe('the lifecycle', () => {
  test('init and shutdown run through the runner and report failures', async () => {
    const seen: HookName[] = [];
    const kit = testDelivery([
      { name: 'fine', init: (ctx) => void seen.push(ctx.hook), shutdown: (ctx) => void seen.push(ctx.hook) },
      {
        name: 'unreachable',
        init: () => {
          throw new Error('cannot reach the reputation service');
        },
      },
    ]);
    const failures = await kit.init();
    expect(failures.map((f) => f.message)).toEqual(['plugin unreachable: hook init threw']);
    expect(await kit.shutdown()).toEqual([]);
    expect(seen).toEqual(['init', 'shutdown']);
  });
});
