// The runner's contract with plugins: unknown keys refused at registration, what hooks return
// checked before use, abort signals, the count of a host's users, and where option paths start.
import { resolve } from 'node:path';
import { describe, expect, expectTypeOf, test } from 'vitest';
import { PluginHost, StateScope, withConfigDir } from '../src/host.js';
import {
  HookFailure,
  type Plugin,
  type PluginMeta,
  PluginRegistrationError,
  reject,
  resolveConfigPath,
} from '../src/index.js';
import type { PLUGIN_META_KEYS } from '../src/registration.js';
import { type LogRecord, memoryLogger } from '../src/testing/index.js';
import { session } from './fixtures.js';

const transaction = { id: 't1', mailFrom: 'a@example.org', mailParams: {}, recipients: [] };
const delivery = { queueId: 'Q1', envelope: { mailFrom: 'a@example.org', recipients: [] }, attempt: 0 };

/** A plugin from JavaScript: any keys, no compiler to check them. */
const js = (plugin: Record<string, unknown>): Plugin => plugin as unknown as Plugin;

describe('registration refuses what a JavaScript plugin gets wrong', () => {
  test.each([
    ['mailfrom', 'mailFrom'],
    ['rcpt', 'rcptTo'],
    ['onConnect', 'connect'],
    ['hook_rcpt', 'rcptTo'],
    ['ehlo', 'helo'],
    ['data', 'message'],
    ['beforesend', 'beforeSend'],
    ['deliverd', 'delivered'],
    ['enforced', 'enforce'],
  ])('%s: did you mean %s?', (given, meant) => {
    expect(() => new PluginHost([js({ name: 'x', [given]: () => undefined })])).toThrow(
      new PluginRegistrationError(`plugin x: unknown hook "${given}"; did you mean "${meant}"?`),
    );
  });

  test('a key like no hook or metadata is refused too, and told where its data belongs', () => {
    expect(() => new PluginHost([js({ name: 'x', cacheSize: 100 })])).toThrow(
      /^plugin x: unknown key "cacheSize": a plugin holds hooks \(connect, .*\) and name, enforce, timeout, state, publishes, api; keep data of your own under api$/,
    );
  });

  test('api is the plugin’s own; metadata and hook options must have their shape', () => {
    expect(() => new PluginHost([js({ name: 'x', api: { anything: true } })])).not.toThrow();
    const refused: [Record<string, unknown>, RegExp][] = [
      [{ enforce: 'first' }, /enforce must be 'pre' or 'post'/],
      [{ timeout: -1 }, /timeout must be a whole number of milliseconds above 0/],
      [{ state: { session: {} } }, /state must be \{ session\?: \(\) => S/],
      [
        { connect: { handler: () => undefined, ordr: 'pre' } },
        /hook connect: unknown option "ordr"; did you mean "order"\?/,
      ],
      [
        { connect: { handler: () => undefined, order: 'last' } },
        /hook connect: order must be 'pre' or 'post'/,
      ],
      [{ connect: 'accept' }, /hook connect must be a function or \{ handler, order\?, timeout\? \}/],
    ];
    for (const [extra, message] of refused) {
      expect(() => new PluginHost([js({ name: 'x', ...extra })])).toThrow(message);
    }
  });

  test('the list of metadata keys is the PluginMeta interface', () => {
    expectTypeOf<(typeof PLUGIN_META_KEYS)[number]>().toEqualTypeOf<keyof PluginMeta<unknown, unknown>>();
  });
});

describe('what hooks return is checked: a failure naming plugin and hook, never a silent default', () => {
  async function run(plugin: Plugin, call: (host: PluginHost) => Promise<unknown>) {
    const records: LogRecord[] = [];
    const host = new PluginHost([plugin], { logger: memoryLogger(records) });
    const outcome = await call(host).catch((error: unknown) => error);
    return { outcome, error: records.find((r) => r.level === 'error') };
  }

  test('a reject with a 2xx code at connect answers 451 4.3.0', async () => {
    const { outcome, error } = await run(
      js({
        name: 'gate',
        connect: () => ({ kind: 'reject', reply: { code: 250, enhanced: '2.0.0', text: 'ok' } }),
      }),
      (host) => host.runVerdict('connect', { session }),
    );
    expect(outcome).toEqual({
      verdict: { kind: 'tempfail', reply: { code: 451, enhanced: '4.3.0', text: expect.any(String) } },
      plugin: 'gate',
      failed: true,
    });
    expect(error).toMatchObject({
      message:
        'plugin gate: hook connect returned something it may not: a reject verdict needs a 5xx code, not 250',
      fields: { plugin: 'gate', hook: 'connect', outcome: 'error' },
    });
  });

  test.each([
    [
      { kind: 'tempfail', reply: { code: 451, enhanced: '5.7.1', text: 'x' } },
      /enhanced code must be n\.n\.n with the class/,
    ],
    [
      { kind: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'no\r\n250 ok' } },
      /reply text must be one line/,
    ],
    [
      { kind: 'accept', reply: { code: 550, enhanced: '5.7.1', text: 'x' } },
      /accept verdict needs a 2xx code/,
    ],
    [{ kind: 'maybe' }, /verdict kind "maybe" is not one of/],
    ['OK', /"OK" is not a verdict/],
  ])('a verdict hook returning %j fails', async (value, problem) => {
    const { outcome, error } = await run(js({ name: 'v', rcptTo: () => value }), (host) =>
      host.runVerdict('rcptTo', {
        session,
        transaction,
        recipient: { address: 'b@example.net' },
        params: {},
        isLocalDomain: true,
        mayRelay: false,
      }),
    );
    expect(outcome).toMatchObject({ verdict: { kind: 'tempfail', reply: { code: 451 } }, failed: true });
    expect(error?.message).toMatch(problem);
  });

  test.each([
    [{ type: 'smtp' }, 'an smtp hop needs a host'],
    [{ type: 'ftp', host: 'x' }, 'next hop type "ftp" is not one of mx, smtp, lmtp, maildir'],
    [
      { type: 'smtp', host: 'relay.test', prot: 2525 },
      'a smtp hop has no field "prot" (it has type, host, port, tls, auth)',
    ],
    [{ type: 'smtp', host: 'relay.test', port: 70000 }, 'port 70000 is not a TCP port'],
    [
      { type: 'mx', domain: 'example.net', tls: 'always' },
      'tls "always" is not one of opportunistic, require, none, implicit',
    ],
    [{ type: 'maildir' }, 'a maildir hop needs a path'],
  ])('a route hook returning %j throws HookFailure', async (hop, problem) => {
    const { outcome, error } = await run(js({ name: 'router', route: () => hop }), (host) =>
      host.runRoute({ ...delivery, domain: 'example.net', recipients: [] }),
    );
    expect(outcome).toBeInstanceOf(HookFailure);
    expect(outcome).toMatchObject({ plugin: 'router', hook: 'route' });
    expect(error?.message).toBe(`plugin router: hook route returned something it may not: ${problem}`);
  });

  test('a route hook naming a good hop wins; one with no opinion lets the next decide', async () => {
    const host = new PluginHost([
      { name: 'none', route: () => undefined },
      { name: 'relay', route: () => ({ type: 'smtp', host: 'relay.test', port: 2525, tls: 'require' }) },
    ]);
    expect(await host.runRoute({ ...delivery, domain: 'example.net', recipients: [] })).toEqual({
      type: 'smtp',
      host: 'relay.test',
      port: 2525,
      tls: 'require',
    });
  });

  test('advice of the wrong shape is logged and left out: the schedule stands', async () => {
    const input = { ...delivery, results: [], nextAttemptAt: new Date(60_000) };
    const records: LogRecord[] = [];
    const host = new PluginHost(
      [
        js({ name: 'soon', deferred: () => ({ retryAt: 'soon' }) }),
        js({ name: 'typo', deferred: () => ({ retryIn: 5000 }) }),
        { name: 'later', deferred: () => ({ retryAt: new Date(120_000) }) },
      ],
      { logger: memoryLogger(records) },
    );
    expect(await host.runAdvise('deferred', input)).toEqual({ retryAt: new Date(120_000) });
    expect(records.filter((r) => r.level === 'error').map((r) => r.message)).toEqual([
      'plugin soon: hook deferred returned something it may not: retryAt must be a Date, not "soon"',
      'plugin typo: hook deferred returned something it may not: advice has no field "retryIn" (it has retryAt)',
    ]);
    const bounced = new PluginHost([
      js({ name: 'b', bounced: () => ({ suppress: 'yes', redirectTo: 'x' }) }),
    ]);
    expect(await bounced.runAdvise('bounced', { ...delivery, results: [], reason: 'permanent' })).toEqual({});
  });

  test('a transform hook that returns a value fails: it changes the context in place', async () => {
    const { outcome, error } = await run(
      js({ name: 'stamp', headers: () => reject(550, '5.7.1', 'no') }),
      (host) => host.runTransform('headers', { session, transaction, headers: undefined as never }),
    );
    expect(outcome).toBeInstanceOf(HookFailure);
    expect(error?.message).toBe(
      'plugin stamp: hook headers returned something it may not: an object; a headers hook changes the context in place and returns nothing',
    );
  });
});

describe('every hook gets an AbortSignal', () => {
  const waitForAbort =
    (seen: unknown[]) =>
    (ctx: { signal: AbortSignal }): Promise<undefined> =>
      new Promise((resolve) => {
        const stop = (): void => {
          seen.push(ctx.signal.reason);
          resolve(undefined);
        };
        if (ctx.signal.aborted) stop();
        else ctx.signal.addEventListener('abort', stop);
      });

  test('a hook past its timeout is aborted with a TimeoutError naming plugin, hook and timeout', async () => {
    const seen: unknown[] = [];
    const host = new PluginHost([{ name: 'slow', timeout: 20, connect: waitForAbort(seen) }]);
    const outcome = await host.runVerdict('connect', { session });
    expect(outcome).toMatchObject({ failed: true, verdict: { reply: { code: 451, enhanced: '4.3.0' } } });
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBeInstanceOf(DOMException);
    expect(seen[0]).toMatchObject({
      name: 'TimeoutError',
      message: 'plugin slow: hook connect timed out after 20 ms',
    });
  });

  test('the end of the session aborts hooks deciding for its client, not its close hooks', async () => {
    const seen: unknown[] = [];
    let closeSignal: AbortSignal | undefined;
    const host = new PluginHost([
      {
        name: 'p',
        helo: waitForAbort(seen),
        close: (ctx) => {
          closeSignal = ctx.signal;
        },
      },
    ]);
    const scope = new StateScope('s1');
    const helo = host.runVerdict('helo', { session, command: 'EHLO', hostname: 'client.test' }, scope);
    scope.end();
    await helo;
    await host.runObserve('close', { session }, scope);
    expect(seen[0]).toMatchObject({ name: 'AbortError', message: 'the SMTP session closed' });
    expect(closeSignal?.aborted).toBe(false);
  });

  test('abort() stops hooks running and later ones, but never init or shutdown', async () => {
    const seen: unknown[] = [];
    let shutdownSignal: AbortSignal | undefined;
    const host = new PluginHost([
      {
        name: 'p',
        delivered: waitForAbort(seen),
        shutdown: (ctx) => {
          shutdownSignal = ctx.signal;
        },
      },
    ]);
    const input = { ...delivery, hop: { type: 'mx', domain: 'x.test' } as const, remoteMta: '', results: [] };
    const running = host.runObserve('delivered', input);
    host.abort(new Error('stopping'));
    await running;
    await host.runObserve('delivered', input);
    expect(seen.map((r) => (r as Error).message)).toEqual(['stopping', 'stopping']);
    await host.runLifecycle('shutdown');
    expect(shutdownSignal?.aborted).toBe(false);
  });

  test('a signal nobody reads costs nothing and a finished hook no longer follows the session', async () => {
    let kept: AbortSignal | undefined;
    const host = new PluginHost([
      {
        name: 'p',
        helo: (ctx) => {
          kept = ctx.signal;
        },
      },
    ]);
    const scope = new StateScope('s1');
    await host.runVerdict('helo', { session, command: 'EHLO', hostname: 'client.test' }, scope);
    scope.end();
    expect(kept?.aborted).toBe(false);
  });

  test('a hook that reads the signal after its session ended finds it aborted', async () => {
    let reason: unknown;
    const host = new PluginHost([
      {
        name: 'p',
        helo: (ctx) => {
          reason = ctx.signal.aborted ? ctx.signal.reason : 'not aborted';
        },
      },
    ]);
    const scope = new StateScope('s1');
    scope.end();
    await host.runVerdict('helo', { session, command: 'EHLO', hostname: 'client.test' }, scope);
    expect(scope.ended).toBe(true);
    expect(reason).toMatchObject({ name: 'AbortError', message: 'the SMTP session closed' });
  });
});

describe('a host counts its users', () => {
  test('idle once every retain is released and no hook runs', async () => {
    let finish: () => void = () => {};
    let started: () => void = () => {};
    const hookStarted = new Promise<void>((resolve) => {
      started = resolve;
    });
    const host = new PluginHost([
      {
        name: 'p',
        queued: () =>
          new Promise<void>((resolve) => {
            finish = resolve;
            started();
          }),
      },
    ]);
    expect(host.idle).toBe(true);
    const release = host.retain();
    expect(host.idle).toBe(false);
    release();
    release(); // twice is once
    expect(host.idle).toBe(true);
    const running = host.runObserve('queued', {
      session,
      transaction,
      queueId: 'Q',
      envelope: delivery.envelope,
    });
    expect(host.idle).toBe(false);
    const idle = host.whenIdle();
    await hookStarted;
    finish();
    await running;
    await idle;
    expect(host.idle).toBe(true);
  });
});

describe('paths in plugin options', () => {
  test('start at the folder of the config being loaded, through awaits, else at the working directory', async () => {
    expect(resolveConfigPath('/etc/tern/k.pem')).toBe('/etc/tern/k.pem');
    expect(resolveConfigPath('k.pem')).toBe(resolve('k.pem'));
    const seen = await withConfigDir('/srv/tern', async () => {
      await new Promise((r) => setTimeout(r, 1));
      return resolveConfigPath('keys/k.pem');
    });
    expect(seen).toBe('/srv/tern/keys/k.pem');
    expect(resolveConfigPath('k.pem')).toBe(resolve('k.pem'));
  });

  test('a second load (a reload) starts at its own folder again, and overlapping loads keep theirs', async () => {
    const load = (dir: string): Promise<string> =>
      withConfigDir(dir, async () => {
        await new Promise((r) => setTimeout(r, 1));
        return resolveConfigPath('k.pem');
      });
    expect(await load('/srv/a')).toBe('/srv/a/k.pem');
    expect(await Promise.all([load('/srv/b'), load('/srv/c')])).toEqual(['/srv/b/k.pem', '/srv/c/k.pem']);
    expect(withConfigDir('/srv/d', () => resolveConfigPath('k.pem'))).toBe('/srv/d/k.pem');
    expect(resolveConfigPath('k.pem')).toBe(resolve('k.pem'));
  });
});
