import { describe, expect, expectTypeOf, test } from 'vitest';
import { type HookEvent, PluginHost, StateScope } from '../src/host.js';
import {
  accept,
  definePlugin,
  Headers,
  type Plugin,
  PluginRegistrationError,
  reject,
  tempfail,
} from '../src/index.js';
import { memoryLogger, testPlugins } from '../src/testing/index.js';
import { session } from './fixtures.js';

function recorder(name: string, seen: string[], extra: Partial<Plugin> = {}): Plugin {
  return { name, connect: () => void seen.push(name), ...extra };
}

describe('ordering', () => {
  test('plugin enforce, then hook order, then config order', async () => {
    const seen: string[] = [];
    const plugins: Plugin[] = [
      recorder('a', seen),
      { name: 'b-post', enforce: 'post', connect: () => void seen.push('b-post') },
      { name: 'c-hook-pre', connect: { order: 'pre', handler: () => void seen.push('c-hook-pre') } },
      { name: 'd-pre', enforce: 'pre', connect: () => void seen.push('d-pre') },
      {
        name: 'e-post-hook-pre',
        enforce: 'post',
        connect: { order: 'pre', handler: () => void seen.push('e') },
      },
      recorder('f', seen),
      { name: 'g-hook-post', connect: { order: 'post', handler: () => void seen.push('g-hook-post') } },
    ];
    const host = new PluginHost(plugins);
    await host.runVerdict('connect', { session });
    expect(seen).toEqual(['d-pre', 'c-hook-pre', 'a', 'f', 'g-hook-post', 'e', 'b-post']);
    expect(host.order('connect')).toEqual([
      'd-pre',
      'c-hook-pre',
      'a',
      'f',
      'g-hook-post',
      'e-post-hook-pre',
      'b-post',
    ]);
  });

  test('a verdict stops the stage; continue goes on', async () => {
    const seen: string[] = [];
    const host = new PluginHost([
      recorder('first', seen),
      { name: 'rejecter', connect: () => reject(554, '5.7.1', 'go away') },
      recorder('never', seen),
    ]);
    const outcome = await host.runVerdict('connect', { session });
    expect(seen).toEqual(['first']);
    expect(outcome.plugin).toBe('rejecter');
    expect(outcome.verdict).toEqual({
      kind: 'reject',
      reply: { code: 554, enhanced: '5.7.1', text: 'go away' },
    });
  });

  test('duplicate names and non-plugins are refused at registration', () => {
    expect(() => new PluginHost([{ name: 'x' }, { name: 'x' }])).toThrow(PluginRegistrationError);
    expect(() => new PluginHost([{} as Plugin])).toThrow(/plugins\[0\] is not a plugin/);
    expect(() => new PluginHost([{ name: 'y', connect: 42 } as unknown as Plugin])).toThrow(/hook connect/);
  });
});

describe('failures are bugs, not decisions', () => {
  test('a throwing hook answers 451 4.3.0 without internals and is logged with plugin and hook', async () => {
    const log = memoryLogger();
    const host = new PluginHost(
      [
        {
          name: 'boom',
          rcptTo: () => {
            throw new Error('database password is hunter2');
          },
        },
        { name: 'later', rcptTo: () => accept() },
      ],
      { logger: log },
    );
    const outcome = await host.runVerdict('connect', { session });
    expect(outcome.verdict.kind).toBe('continue');
    const input = {
      session,
      transaction: { id: 't', mailFrom: 'a@b.test', mailParams: {}, recipients: [] },
      recipient: { address: 'c@d.test' },
      params: {},
      isLocalDomain: true,
      mayRelay: false,
    };
    const failed = await host.runVerdict('rcptTo', input);
    expect(failed.failed).toBe(true);
    expect(failed.verdict).toEqual({
      kind: 'tempfail',
      reply: { code: 451, enhanced: '4.3.0', text: 'Temporary local problem, please try again later' },
    });
    expect(JSON.stringify(failed.verdict)).not.toContain('hunter2');
    const record = log.records.find((r) => r.level === 'error');
    expect(record?.fields).toMatchObject({ plugin: 'boom', hook: 'rcptTo', outcome: 'error' });
    expect(String((record?.fields.err as Error).message)).toContain('hunter2');
  });

  test('a hook that outlives its timeout answers 451 4.3.0 and the stage ends', async () => {
    const events: HookEvent[] = [];
    const host = new PluginHost(
      [
        { name: 'slow', timeout: 50, connect: () => new Promise(() => {}) },
        { name: 'after', connect: () => accept() },
      ],
      { onHookEvent: (e) => events.push(e) },
    );
    const started = Date.now();
    const outcome = await host.runVerdict('connect', { session });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(outcome.verdict.kind).toBe('tempfail');
    expect(outcome.failed).toBe(true);
    expect(events).toEqual([
      expect.objectContaining({ plugin: 'slow', hook: 'connect', outcome: 'timeout' }),
    ]);
  });

  test('a hook returning a non-verdict is a failure', async () => {
    const host = new PluginHost([{ name: 'odd', connect: () => ({ kind: 'maybe' }) as never }]);
    expect((await host.runVerdict('connect', { session })).verdict.kind).toBe('tempfail');
  });

  test('a failing transform throws HookFailure; a failing observer does not', async () => {
    const host = new PluginHost([
      {
        name: 'bad',
        headers: () => {
          throw new Error('x');
        },
        close: () => {
          throw new Error('y');
        },
      },
    ]);
    const transaction = { id: 't', mailFrom: '', mailParams: {}, recipients: [] };
    await expect(
      host.runTransform('headers', { session, transaction, headers: new Headers() }),
    ).rejects.toThrow(/plugin bad: hook headers threw/);
    await expect(host.runObserve('close', { session })).resolves.toBeUndefined();
  });
});

describe('state', () => {
  test('session state lives per connection, transaction state resets per transaction', async () => {
    const plugin = definePlugin({
      name: 'counter',
      state: { session: () => ({ mails: 0 }), transaction: () => ({ rcpts: 0 }) },
      mailFrom(ctx) {
        ctx.sessionState.mails += 1;
        expectTypeOf(ctx.sessionState).toEqualTypeOf<{ mails: number }>();
      },
      rcptTo(ctx) {
        ctx.transactionState.rcpts += 1;
        if (ctx.transactionState.rcpts > 2) return tempfail(452, '4.5.3', 'Too many recipients');
        if (ctx.sessionState.mails > 2) return reject(550, '5.7.1', 'enough');
      },
    });
    const t = testPlugins(plugin);
    await t.mailFrom('a@b.test');
    expect((await t.rcptTo('x@example.test')).kind).toBe('continue');
    expect((await t.rcptTo('y@example.test')).kind).toBe('continue');
    expect((await t.rcptTo('z@example.test')).kind).toBe('tempfail');
    await t.mailFrom('a@b.test');
    expect((await t.rcptTo('x@example.test')).kind).toBe('continue');
    await t.mailFrom('a@b.test');
    expect(await t.rcptTo('x@example.test')).toMatchObject({ kind: 'reject', reply: { code: 550 } });
    // A second connection starts from zero.
    const other = testPlugins(plugin);
    await other.mailFrom('a@b.test');
    expect((await other.rcptTo('x@example.test')).kind).toBe('continue');
  });

  test('two scopes do not share state', async () => {
    const host = new PluginHost([
      {
        name: 's',
        state: { session: () => ({ n: 0 }) },
        connect: (ctx) => {
          (ctx.sessionState as { n: number }).n += 1;
          if ((ctx.sessionState as { n: number }).n > 1) return reject();
        },
      },
    ]);
    const a = new StateScope('a');
    const b = new StateScope('b');
    expect((await host.runVerdict('connect', { session }, a)).verdict.kind).toBe('continue');
    expect((await host.runVerdict('connect', { session }, b)).verdict.kind).toBe('continue');
    expect((await host.runVerdict('connect', { session }, a)).verdict.kind).toBe('reject');
  });
});

describe('test kit', () => {
  test('drives headers, message and queue stages over a message', async () => {
    const plugin = definePlugin({
      name: 'tagger',
      headers: (ctx) => ctx.headers.append('X-Seen', 'yes'),
      message: async (ctx) => {
        let text = '';
        for await (const chunk of ctx.message.body()) text += chunk.toString();
        if (text.includes('XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE')) return reject(554, '5.7.1', 'spam');
      },
      queue: (ctx) => {
        ctx.message.headers.prepend('X-Signed', 'by tagger');
        ctx.envelope.recipients.push({ address: 'archive@example.test' });
      },
    });
    const t = testPlugins(plugin);
    await t.mailFrom('a@b.test');
    await t.rcptTo('x@example.test');
    const ok = await t.data('Subject: hi\r\n\r\nhello\r\n');
    expect(ok.verdict.kind).toBe('continue');
    expect(ok.message.toBuffer().toString()).toBe(
      'X-Signed: by tagger\r\nSubject: hi\r\nX-Seen: yes\r\n\r\nhello\r\n',
    );
    expect(ok.envelope.recipients.map((r) => r.address)).toEqual(['x@example.test', 'archive@example.test']);
    const spam = await t.data(
      'Subject: hi\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n',
    );
    expect(spam.verdict.kind).toBe('reject');
    expect(spam.message.headers.has('X-Signed')).toBe(false);
  });
});
