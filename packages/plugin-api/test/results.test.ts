// The results channel: typed keys, session and transaction scope, one publisher per key, pending
// values, and what the queue and queued hooks of a message still read after the next MAIL FROM.
import { describe, expect, expectTypeOf, test } from 'vitest';
import { type HookInput, PluginHost, StateScope } from '../src/host.js';
import {
  type AnyResultKey,
  definePlugin,
  defineResult,
  type MessageContext,
  type Plugin,
  PluginRegistrationError,
  type QueuedContext,
  type RecipientResult,
  ResultError,
  type ResultKey,
  type Results,
  type ResultsReader,
  type ResultValue,
} from '../src/index.js';
import { testPlugins } from '../src/testing/index.js';

interface HeloCheck {
  readonly name: string;
  readonly dotted: boolean;
}
interface Score {
  readonly points: number;
}

const heloResult = defineResult<HeloCheck>('test.helo', { scope: 'session' });
const scoreResult = defineResult<Score>('test.score');

const message = 'From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n';

/** Publishes the HELO name (session) and, at MAIL FROM, a score (transaction). */
const publisher = definePlugin({
  name: 'publisher',
  publishes: [heloResult, scoreResult],
  helo(ctx) {
    ctx.results.set(heloResult, { name: ctx.hostname, dotted: ctx.hostname.includes('.') });
  },
  mailFrom(ctx) {
    ctx.results.set(scoreResult, { points: ctx.address.length });
  },
});

describe('defineResult', () => {
  test('makes a frozen key; transaction scope unless told otherwise', () => {
    expect(scoreResult).toEqual({ name: 'test.score', scope: 'transaction' });
    expect(heloResult.scope).toBe('session');
    expect(Object.isFrozen(scoreResult)).toBe(true);
  });

  test.each(['score', 'Spam.dmarc', 'spam.', 'spam dmarc.x', ''])('refuses the name %j', (name) => {
    expect(() => defineResult(name)).toThrow(ResultError);
    expect(() => defineResult(name)).toThrow(/expected lower-case words joined by dots/);
  });

  test('refuses an unknown scope', () => {
    expect(() => defineResult('test.x', { scope: 'message' as never })).toThrow(/scope must be/);
  });
});

describe('reading and writing', () => {
  test('a later hook of another plugin reads what an earlier one published, with its type', async () => {
    const seen: unknown[] = [];
    const reader = definePlugin({
      name: 'reader',
      rcptTo(ctx) {
        seen.push(ctx.results.get(heloResult), ctx.results.get(scoreResult));
      },
    });
    const session = testPlugins([publisher, reader]);
    await session.helo('mail.example.test');
    await session.mailFrom('alice@example.test');
    await session.rcptTo('bob@example.test');
    expect(seen).toEqual([{ name: 'mail.example.test', dotted: true }, { points: 18 }]);
  });

  test('a session result lives across transactions; a transaction result ends with its message', async () => {
    const session = testPlugins(publisher);
    await session.helo('mx.example.test');
    await session.mailFrom('alice@example.test');
    expect(session.results.get(scoreResult)).toEqual({ points: 18 });
    await session.rcptTo('bob@example.test');
    await session.data(message);
    await session.queued('Q1');
    // After the message: the session result stays, the transaction result is gone.
    expect(session.results.get(heloResult)?.name).toBe('mx.example.test');
    expect(session.results.has(scoreResult)).toBe(false);
    await session.mailFrom('carol@example.org');
    expect(session.results.get(scoreResult)).toEqual({ points: 17 });
  });

  test('the queue and queued hooks of a message read its results', async () => {
    const read: Record<string, unknown> = {};
    const observer = definePlugin({
      name: 'observer',
      queue(ctx) {
        read.queue = ctx.results.get(scoreResult);
      },
      queued(ctx) {
        read.queued = ctx.results.get(scoreResult);
        read.snapshot = ctx.results.snapshot();
      },
    });
    const session = testPlugins([publisher, observer]);
    await session.helo('mail.example.test');
    await session.mailFrom('alice@example.test');
    await session.rcptTo('bob@example.test');
    await session.data(message);
    await session.queued('Q1');
    expect(read.queue).toEqual({ points: 18 });
    expect(read.queued).toEqual({ points: 18 });
    expect(read.snapshot).toEqual([
      {
        name: 'test.helo',
        scope: 'session',
        plugin: 'publisher',
        status: 'settled',
        value: { name: 'mail.example.test', dotted: true },
      },
      {
        name: 'test.score',
        scope: 'transaction',
        plugin: 'publisher',
        status: 'settled',
        value: { points: 18 },
      },
    ]);
  });

  test('queued hooks still read their message after the next MAIL FROM reset the transaction', async () => {
    // Core builds the queued contexts, writes the 250, and the client's next MAIL FROM may reset
    // the transaction before an observer gets to read: it must still see its own message.
    let gate!: () => void;
    const opened = new Promise<void>((resolve) => {
      gate = resolve;
    });
    let read: Score | undefined;
    const slowObserver = definePlugin({
      name: 'slow-observer',
      async queued(ctx) {
        await opened;
        read = ctx.results.get(scoreResult);
      },
    });
    const host = new PluginHost([publisher, slowObserver]);
    const scope = new StateScope('s1');
    const info = testPlugins([]).session;
    scope.resetTransaction();
    await host.runVerdict('mailFrom', { session: info, address: 'alice@example.test', params: {} }, scope);
    const transaction = { id: 't1', mailFrom: 'alice@example.test', mailParams: {}, recipients: [] };
    const envelope = { mailFrom: 'alice@example.test', recipients: [] };
    const observing = host.runObserve(
      'queued',
      { session: info, transaction, queueId: 'Q1', envelope },
      scope,
    );
    scope.resetTransaction();
    await host.runVerdict('mailFrom', { session: info, address: 'x@y.test', params: {} }, scope);
    gate();
    await observing;
    expect(read).toEqual({ points: 18 });
  });

  test('the publisher may replace its own value', async () => {
    const log = defineResult<string[]>('test.recipients');
    const collector = definePlugin({
      name: 'collector',
      publishes: [log],
      rcptTo(ctx) {
        ctx.results.set(log, [...(ctx.results.get(log) ?? []), ctx.recipient.address]);
      },
    });
    const session = testPlugins(collector);
    await session.mailFrom('a@example.test');
    await session.rcptTo('b@example.test');
    await session.rcptTo('c@example.test');
    expect(session.results.get(log)).toEqual(['b@example.test', 'c@example.test']);
  });

  test('a reader placed before the publisher in the same stage sees nothing yet', async () => {
    let early: Score | undefined | 'unread' = 'unread';
    const eager = definePlugin({
      name: 'eager',
      mailFrom(ctx) {
        early = ctx.results.get(scoreResult);
      },
    });
    const session = testPlugins([eager, publisher]);
    await session.mailFrom('alice@example.test');
    expect(early).toBeUndefined();
    expect(session.results.get(scoreResult)).toEqual({ points: 18 });
  });
});

describe('pending results', () => {
  const slowResult = defineResult<Score>('test.slow');

  test('a promise published early is awaited by a later reader; get() says nothing until it settles', async () => {
    let settle!: (score: Score) => void;
    const seen: unknown[] = [];
    const slow = definePlugin({
      name: 'slow',
      publishes: [slowResult],
      mailFrom(ctx) {
        ctx.results.set(
          slowResult,
          new Promise<Score>((resolve) => {
            settle = resolve;
          }),
        );
      },
    });
    const reader = definePlugin({
      name: 'reader',
      async message(ctx) {
        seen.push(ctx.results.get(slowResult), ctx.results.has(slowResult));
        settle({ points: 7 });
        seen.push(await ctx.results.wait(slowResult), ctx.results.get(slowResult));
      },
    });
    const session = testPlugins([slow, reader]);
    await session.mailFrom('a@example.test');
    expect(session.results.snapshot()).toEqual([
      { name: 'test.slow', scope: 'transaction', plugin: 'slow', status: 'pending' },
    ]);
    await session.rcptTo('b@example.test');
    await session.data(message);
    expect(seen).toEqual([undefined, true, { points: 7 }, { points: 7 }]);
  });

  test('a rejected promise is logged once for its publisher and reads as absent', async () => {
    let waited: Score | undefined | 'unread' = 'unread';
    const broken = definePlugin({
      name: 'broken',
      publishes: [slowResult],
      mailFrom(ctx) {
        ctx.results.set(slowResult, Promise.reject(new Error('resolver exploded')));
      },
    });
    const reader = definePlugin({
      name: 'reader',
      async rcptTo(ctx) {
        waited = await ctx.results.wait(slowResult);
      },
    });
    const session = testPlugins([broken, reader]);
    await session.mailFrom('a@example.test');
    expect((await session.rcptTo('b@example.test')).kind).toBe('continue');
    expect(waited).toBeUndefined();
    expect(session.results.snapshot()[0]?.status).toBe('failed');
    const errors = session.logs.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({
      message: 'result test.slow failed; read as not published',
      fields: { plugin: 'broken', result: 'test.slow' },
    });
  });

  test('waiting for a result nobody published returns undefined at once', async () => {
    let waited: Score | undefined | 'unread' = 'unread';
    const session = testPlugins({
      name: 'reader',
      async mailFrom(ctx) {
        waited = await ctx.results.wait(slowResult);
      },
    });
    await session.mailFrom('a@example.test');
    expect(waited).toBeUndefined();
  });
});

describe('one publisher per key', () => {
  test('a plugin that sets a key it did not declare fails its hook (451 4.3.0), naming itself and the fix', async () => {
    const forger = definePlugin({
      name: 'forger',
      mailFrom(ctx) {
        ctx.results.set(scoreResult, { points: -100 });
      },
    });
    const session = testPlugins([forger]);
    const verdict = await session.mailFrom('a@example.test');
    expect(verdict).toMatchObject({ kind: 'tempfail', reply: { code: 451, enhanced: '4.3.0' } });
    const error = session.logs.find((l) => l.level === 'error')?.fields.err;
    expect(error).toBeInstanceOf(ResultError);
    expect((error as Error).message).toBe(
      "plugin forger sets result test.score without declaring it: add it to the plugin's publishes",
    );
    expect(session.results.has(scoreResult)).toBe(false);
  });

  test('two plugins declaring one key is refused when the host is built', () => {
    const copy = definePlugin({ name: 'copy', publishes: [scoreResult] });
    expect(() => new PluginHost([publisher, copy])).toThrow(PluginRegistrationError);
    expect(() => new PluginHost([publisher, copy])).toThrow(
      'plugins[1] (copy): result test.score is already published by plugin publisher; keep one of the two',
    );
  });

  test('publishes must hold keys from defineResult', () => {
    const bad = { name: 'bad', publishes: [{ name: 'nope' }] } as unknown as Plugin;
    expect(() => new PluginHost([bad])).toThrow(
      'plugins[0] (bad): publishes[0] is not a key from defineResult()',
    );
    const notList = { name: 'bad', publishes: scoreResult } as unknown as Plugin;
    expect(() => new PluginHost([notList])).toThrow(/publishes must be a list/);
  });

  test('a transaction result cannot be set before MAIL FROM, where it would not survive', async () => {
    const early = definePlugin({
      name: 'early',
      publishes: [scoreResult],
      connect(ctx) {
        ctx.results.set(scoreResult, { points: 1 });
      },
    });
    const session = testPlugins(early);
    expect((await session.connect()).kind).toBe('tempfail');
    expect(String(session.logs.find((l) => l.level === 'error')?.fields.err)).toMatch(
      /sets transaction result test\.score in connect, outside any transaction/,
    );
  });

  test('the test kit reads results but cannot write them', () => {
    const session = testPlugins(publisher);
    const reader = session.results as unknown as Results;
    expect(() => reader.set(scoreResult, { points: 1 })).toThrow('results are read-only here');
  });
});

describe('types', () => {
  test('keys carry their value type to readers and writers', () => {
    expectTypeOf(scoreResult).toEqualTypeOf<ResultKey<Score>>();
    expectTypeOf<ResultValue<typeof heloResult>>().toEqualTypeOf<HeloCheck>();
    expectTypeOf<typeof scoreResult>().toExtend<AnyResultKey>();
    expectTypeOf<MessageContext<unknown, unknown>['results']>().toEqualTypeOf<Results>();
    expectTypeOf<QueuedContext<unknown, unknown>['results']>().toEqualTypeOf<Results>();
    expectTypeOf<ReturnType<typeof testPlugins>['results']>().toEqualTypeOf<ResultsReader>();
    // The runner adds the channel to session hooks; delivery hooks keep their per-recipient results.
    expectTypeOf<HookInput<'message'>>().not.toHaveProperty('results');
    expectTypeOf<HookInput<'queued'>>().not.toHaveProperty('results');
    expectTypeOf<HookInput<'delivered'>['results']>().toEqualTypeOf<readonly RecipientResult[]>();
    expectTypeOf<HookInput<'bounced'>['results']>().toEqualTypeOf<readonly RecipientResult[]>();

    definePlugin({
      name: 'typed',
      publishes: [scoreResult],
      async message(ctx) {
        expectTypeOf(ctx.results.get(scoreResult)).toEqualTypeOf<Score | undefined>();
        expectTypeOf(await ctx.results.wait(heloResult)).toEqualTypeOf<HeloCheck | undefined>();
        ctx.results.set(scoreResult, { points: 1 });
        ctx.results.set(scoreResult, Promise.resolve({ points: 2 }));
        // @ts-expect-error a value of another type
        ctx.results.set(scoreResult, { name: 'x', dotted: false });
        // @ts-expect-error a promise of another type
        ctx.results.set(scoreResult, Promise.resolve('x'));
        // @ts-expect-error a key is not a string
        ctx.results.get('test.score');
      },
    });
    // @ts-expect-error publishes takes keys, not names
    definePlugin({ name: 'untyped', publishes: ['test.score'] });
  });
});
