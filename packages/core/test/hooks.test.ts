// Plugin hooks at every SMTP stage, driven over real SMTP: order, state, verdict mapping, and
// failures (throw, hang, bad return) that must become 451 4.3.0 and never a 250.
import {
  accept,
  definePlugin,
  disconnect,
  type HookName,
  type Plugin,
  reject,
  tempfail,
} from '@tern/plugin-api';
import type { RawSmtp } from '@tern/testkit';
import { waitFor } from '@tern/testkit';
import { afterAll, describe, expect, test } from 'vitest';
import {
  closeAll,
  ehlo,
  type Harness,
  LOCAL_DOMAIN,
  message,
  sendMail,
  sleep,
  startListener,
} from './helpers.js';

afterAll(closeAll);

const LOCAL_ERROR = '451 4.3.0 Temporary local problem, please try again later';

describe('the order of stages and plugin state', () => {
  test('every stage runs its hooks in SMTP order with per-connection and per-transaction state', async () => {
    const calls: string[] = [];
    let queuedHookDone = false;
    const recorder = definePlugin<{ connection: number }, { rcpts: number }>({
      name: 'recorder',
      state: { session: () => ({ connection: 0 }), transaction: () => ({ rcpts: 0 }) },
      connect: (ctx) => {
        ctx.sessionState.connection++;
        calls.push(`connect ${ctx.session.remoteAddress} trusted=${ctx.session.trusted}`);
      },
      helo: (ctx) => {
        calls.push(`helo ${ctx.command} ${ctx.hostname}`);
      },
      mailFrom: (ctx) => {
        calls.push(`mailFrom <${ctx.address}> rcpts=${ctx.transactionState.rcpts}`);
      },
      rcptTo: (ctx) => {
        ctx.transactionState.rcpts++;
        calls.push(
          `rcptTo ${ctx.recipient.address} local=${ctx.isLocalDomain} relay=${ctx.mayRelay} n=${ctx.transactionState.rcpts}`,
        );
      },
      headers: (ctx) => {
        calls.push(`headers top=${ctx.headers.fields()[0]?.name} helo=${ctx.session.helo}`);
        ctx.headers.append('X-Recorder', 'seen');
      },
      message: async (ctx) => {
        let size = 0;
        for await (const chunk of ctx.message.stream()) size += (chunk as Buffer).length;
        calls.push(
          `message streamed=${size > ctx.message.bodySize} rcpts=${ctx.transaction.recipients.length}`,
        );
      },
      queue: (ctx) => {
        calls.push(`queue n=${ctx.transactionState.rcpts}`);
        ctx.envelope.recipients.push({ address: `archive@${LOCAL_DOMAIN}` });
      },
      queued: async (ctx) => {
        await sleep(150);
        calls.push(
          `queued ${ctx.queueId} rcpts=${ctx.envelope.recipients.length} n=${ctx.transactionState.rcpts}`,
        );
        queuedHookDone = true;
      },
      close: (ctx) => {
        calls.push(`close connection=${ctx.sessionState.connection}`);
      },
    });
    const h = await startListener({}, { plugins: [recorder] });
    const c = await h.connect();
    await ehlo(c, 'client.example');
    const started = performance.now();
    expect(await sendMail(c, { to: [`a@${LOCAL_DOMAIN}`, `b@${LOCAL_DOMAIN}`] })).toBe(
      '250 2.0.0 queued as mem000001',
    );
    // 250 is sent before the (slow) queued hook finishes.
    expect(performance.now() - started).toBeLessThan(1000);
    expect(queuedHookDone).toBe(false);
    await waitFor(() => queuedHookDone);
    expect(await sendMail(c, { to: [`c@${LOCAL_DOMAIN}`] })).toMatch(/^250 /);
    await c.command('QUIT');
    await waitFor(() => calls.some((line) => line.startsWith('close')));
    expect(calls).toEqual([
      'connect 127.0.0.1 trusted=false',
      'helo EHLO client.example',
      'mailFrom <sender@example.org> rcpts=0',
      `rcptTo a@${LOCAL_DOMAIN} local=true relay=false n=1`,
      `rcptTo b@${LOCAL_DOMAIN} local=true relay=false n=2`,
      'headers top=Received helo=client.example',
      'message streamed=true rcpts=2',
      'queue n=2',
      'queued mem000001 rcpts=3 n=2',
      'mailFrom <sender@example.org> rcpts=0',
      `rcptTo c@${LOCAL_DOMAIN} local=true relay=false n=1`,
      'headers top=Received helo=client.example',
      'message streamed=true rcpts=1',
      'queue n=1',
      'queued mem000002 rcpts=2 n=1',
      'close connection=1',
    ]);
    const first = h.queue.messages[0]!.message;
    expect(first.envelope.recipients.map((r) => r.address)).toEqual([
      `a@${LOCAL_DOMAIN}`,
      `b@${LOCAL_DOMAIN}`,
      `archive@${LOCAL_DOMAIN}`,
    ]);
    expect(h.queue.raw(0).toString()).toContain('\r\nX-Recorder: seen\r\n\r\n');
  });

  test('a refused MAIL FROM leaves no transaction; RSET starts fresh transaction state', async () => {
    const states: number[] = [];
    const plugin = definePlugin<undefined, { n: number }>({
      name: 'tx',
      state: { transaction: () => ({ n: 0 }) },
      mailFrom: (ctx) =>
        ctx.address === 'bad@example.org' ? reject(550, '5.7.1', 'Sender refused') : undefined,
      rcptTo: (ctx) => {
        states.push(++ctx.transactionState.n);
      },
    });
    const h = await startListener({}, { plugins: [plugin] });
    const c = await h.connect();
    await ehlo(c);
    expect(await c.command('MAIL FROM:<bad@example.org>')).toBe('550 5.7.1 Sender refused');
    expect(await c.command(`RCPT TO:<a@${LOCAL_DOMAIN}>`)).toMatch(/^503 5\.5\.1 /);
    expect(await c.command('MAIL FROM:<good@example.org>')).toMatch(/^250 /);
    await c.command(`RCPT TO:<a@${LOCAL_DOMAIN}>`);
    await c.command(`RCPT TO:<b@${LOCAL_DOMAIN}>`);
    await c.command('RSET');
    await c.command('MAIL FROM:<good@example.org>');
    await c.command(`RCPT TO:<a@${LOCAL_DOMAIN}>`);
    expect(states).toEqual([1, 2, 1]);
  });
});

describe('verdicts become replies with exactly one enhanced code', () => {
  test('reject, tempfail and accept at each verdict stage', async () => {
    const plugin = definePlugin({
      name: 'policy',
      helo: (ctx) => (ctx.hostname === 'spammer.example' ? reject(550, '5.7.1', 'Go away') : undefined),
      mailFrom: (ctx) =>
        ctx.address.startsWith('grey') ? tempfail(450, '4.7.1', 'Greylisted, retry later') : undefined,
      rcptTo: (ctx) => {
        if (ctx.recipient.address.startsWith('nobody')) return reject(550, '5.1.1', 'No such user');
        if (ctx.recipient.address.startsWith('vip')) return accept();
        return undefined;
      },
      message: (ctx) =>
        ctx.message.headers.get('subject') === 'spam'
          ? reject(554, '5.7.1', 'Message looks like spam')
          : undefined,
    });
    const h = await startListener({}, { plugins: [plugin] });
    const c = await h.connect();
    expect(await c.command('EHLO spammer.example')).toBe('550 5.7.1 Go away');
    expect(await c.command('MAIL FROM:<x@example.org>')).toMatch(/^503 /); // the refused EHLO did not count
    await ehlo(c, 'client.example');
    expect(await c.command('MAIL FROM:<grey@example.org>')).toBe('450 4.7.1 Greylisted, retry later');
    expect(await c.command('MAIL FROM:<x@example.org>')).toBe('250 2.1.0 Accepted');
    expect(await c.command(`RCPT TO:<nobody@${LOCAL_DOMAIN}>`)).toBe('550 5.1.1 No such user');
    expect(await c.command(`RCPT TO:<vip@${LOCAL_DOMAIN}>`)).toBe('250 2.1.5 Accepted');
    expect(await c.command('RCPT TO:<vip@remote.example>')).toBe('554 5.7.1 Relay access denied');
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send(`${message('spam')}.\r\n`);
    expect(await c.read()).toBe('554 5.7.1 Message looks like spam');
    expect(h.queue.attempts).toBe(0);
  });

  const disconnecting: [string, Plugin, (c: RawSmtp) => Promise<string>, string][] = [
    [
      'helo',
      definePlugin({ name: 'd', helo: () => disconnect(421, '4.7.0', 'Too busy') }),
      (c) => c.command('EHLO client.example'),
      '421 4.7.0 Too busy',
    ],
    [
      'mailFrom',
      definePlugin({ name: 'd', mailFrom: () => disconnect(554, '5.7.1', 'Blocked sender') }),
      async (c) => {
        await ehlo(c);
        return c.command('MAIL FROM:<a@example.org>');
      },
      '554 5.7.1 Blocked sender',
    ],
    [
      'message',
      definePlugin({ name: 'd', message: () => disconnect(554, '5.7.1', 'Virus found') }),
      async (c) => {
        await ehlo(c);
        return sendMail(c);
      },
      '554 5.7.1 Virus found',
    ],
  ];

  test.each(
    disconnecting,
  )('disconnect at %s: the reply, then the connection is closed', async (_stage, plugin, drive, reply) => {
    const h = await startListener({}, { plugins: [plugin] });
    const c = await h.connect();
    expect(await drive(c)).toBe(reply);
    await c.closed;
    expect(h.queue.attempts).toBe(0);
  });

  test('a connect reject refuses the session in the greeting', async () => {
    const h = await startListener(
      {},
      { plugins: [definePlugin({ name: 'block', connect: () => reject(554, '5.7.1', 'Blocked') })] },
    );
    const { smtpDialog } = await import('@tern/testkit');
    const c = await smtpDialog(h.port);
    expect(await c.read()).toBe('554 5.7.1 Blocked');
    await c.closed;
  });
});

describe('a failing hook is a local error: 451 4.3.0, never 250, nothing internal in the reply', () => {
  const SECRET = 'db password hunter2 at /srv/tern/secret.js:12';
  type Failure = 'throw' | 'hang' | 'bad return' | 'reject with a 2xx code';
  const failing = (stage: HookName, how: Failure): Plugin => ({
    name: `failing-${stage}`,
    timeout: 100,
    [stage]: () => {
      if (how === 'throw') throw new Error(SECRET);
      if (how === 'hang') return new Promise(() => {});
      if (how === 'reject with a 2xx code') {
        return { kind: 'reject', reply: { code: 250, enhanced: '2.0.0', text: 'fine' } };
      }
      return { kind: 'maybe' };
    },
  });

  // Drives a session up to the stage under test and returns the reply that stage produced.
  const drive: Record<string, (h: Harness) => Promise<string>> = {
    connect: async (h) => {
      const { smtpDialog } = await import('@tern/testkit');
      const c = await smtpDialog(h.port);
      return c.read();
    },
    helo: async (h) => (await h.connect()).command('EHLO client.example'),
    mailFrom: async (h) => {
      const c = await h.connect();
      await ehlo(c);
      return c.command('MAIL FROM:<a@example.org>');
    },
    rcptTo: async (h) => {
      const c = await h.connect();
      await ehlo(c);
      await c.command('MAIL FROM:<a@example.org>');
      return c.command(`RCPT TO:<user@${LOCAL_DOMAIN}>`);
    },
    headers: async (h) => sendMail(await ehloed(h)),
    message: async (h) => sendMail(await ehloed(h)),
    queue: async (h) => sendMail(await ehloed(h)),
  };
  async function ehloed(h: Harness): Promise<RawSmtp> {
    const c = await h.connect();
    await ehlo(c);
    return c;
  }

  const cases: [string, Failure][] = [];
  for (const stage of Object.keys(drive)) {
    for (const how of ['throw', 'hang', 'bad return', 'reject with a 2xx code'] as Failure[]) {
      // transform hooks return nothing: any value is a bad return
      if (how === 'reject with a 2xx code' && (stage === 'headers' || stage === 'queue')) continue;
      cases.push([stage, how]);
    }
  }

  test.each(cases)('%s hook that does "%s"', async (stage, how) => {
    const h = await startListener({}, { plugins: [failing(stage as HookName, how)] });
    const reply = await drive[stage]!(h);
    expect(reply).toBe(LOCAL_ERROR);
    expect(h.queue.attempts).toBe(0);
    // the runner logged who failed, with the cause, for the operator
    expect(
      h.logs.some(
        (r) =>
          r.level === 'error' &&
          r.fields.plugin === `failing-${stage}` &&
          r.fields.hook === stage &&
          r.message?.startsWith(`plugin failing-${stage}: hook ${stage} `),
      ),
    ).toBe(true);
  });

  test('an observe hook that fails changes nothing', async () => {
    const h = await startListener(
      {},
      {
        plugins: [
          {
            name: 'failing-queued',
            queued: () => {
              throw new Error(SECRET);
            },
          },
        ],
      },
    );
    const c = await ehloed(h);
    expect(await sendMail(c)).toMatch(/^250 2\.0\.0 queued as /);
    expect(await sendMail(c)).toMatch(/^250 2\.0\.0 queued as /);
  });
});

describe('abort signals and the hold a session keeps on its plugin host', () => {
  test('a hook deciding for a client that goes away is aborted; queued and close hooks are not', async () => {
    const reasons: unknown[] = [];
    let started = false;
    let closeSignal: AbortSignal | undefined;
    const h = await startListener(
      {},
      {
        plugins: [
          {
            name: 'slow-lookup',
            rcptTo: (ctx) =>
              new Promise((_, fail) => {
                started = true;
                ctx.signal.addEventListener('abort', () => {
                  reasons.push(ctx.signal.reason);
                  fail(ctx.signal.reason);
                });
              }),
            close: (ctx) => {
              closeSignal = ctx.signal;
            },
          },
        ],
      },
    );
    const c = await h.connect();
    await ehlo(c);
    await c.command('MAIL FROM:<a@example.org>');
    c.send(`RCPT TO:<user@${LOCAL_DOMAIN}>\r\n`);
    await waitFor(() => started);
    c.close();
    await waitFor(() => reasons.length === 1 && closeSignal !== undefined);
    expect(reasons[0]).toMatchObject({ name: 'AbortError', message: 'the SMTP session closed' });
    expect(closeSignal?.aborted).toBe(false);
  });

  test('a hook past its timeout is aborted with a reason naming plugin, hook and timeout', async () => {
    const reasons: unknown[] = [];
    const h = await startListener(
      {},
      {
        plugins: [
          {
            name: 'stuck',
            timeout: 100,
            mailFrom: (ctx) =>
              new Promise(() => {
                ctx.signal.addEventListener('abort', () => reasons.push(ctx.signal.reason));
              }),
          },
        ],
      },
    );
    const c = await h.connect();
    await ehlo(c);
    expect(await c.command('MAIL FROM:<a@example.org>')).toBe(LOCAL_ERROR);
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatchObject({
      name: 'TimeoutError',
      message: 'plugin stuck: hook mailFrom timed out after 100 ms',
    });
  });

  test('the session holds its host until its close hooks have run', async () => {
    const order: string[] = [];
    const h = await startListener(
      {},
      {
        plugins: [
          {
            name: 'slow-close',
            close: async () => {
              await sleep(50);
              order.push('close hook done');
            },
          },
        ],
      },
    );
    const c = await h.connect();
    await ehlo(c);
    expect(h.host.idle).toBe(false);
    const idle = h.host.whenIdle().then(() => order.push('host idle'));
    c.close();
    await idle;
    expect(order).toEqual(['close hook done', 'host idle']);
  });
});

describe('reply events', () => {
  test('every 4xx/5xx reply is reported with listener, session and command', async () => {
    const events: { code: number; command: string | undefined; listener: string }[] = [];
    const { startListener: start } = await import('./helpers.js');
    const h = await start({}, { onReply: (e) => events.push(e) });
    const client = await h.connect();
    await client.command('EHLO client.example');
    expect(await client.command('RCPT TO:<a@local.test>')).toMatch(/^503 /);
    expect(await client.command('MAIL FROM:<a@example.org>')).toMatch(/^250 /);
    expect(await client.command('RCPT TO:<victim@elsewhere.example>')).toMatch(/^554 5\.7\.1/);
    expect(events.map((e) => [e.code, e.command])).toEqual([
      [503, 'RCPT'],
      [554, 'RCPT'],
    ]);
    expect(events[0]?.listener).toBe('test');
  });

  test("each reply event carries the reply's text, enhanced code first, at most 200 characters", async () => {
    const events: { code: number; text?: string }[] = [];
    const { startListener: start } = await import('./helpers.js');
    const wordy = {
      name: 'wordy',
      rcptTo: () => ({
        kind: 'reject' as const,
        reply: { code: 550, enhanced: '5.7.1', text: 'x'.repeat(600) },
      }),
    };
    const h = await start({}, { onReply: (e) => events.push(e), plugins: [wordy] });
    const client = await h.connect();
    await client.command('EHLO client.example');
    await client.command('MAIL FROM:<a@example.org>');
    const denied = await client.command('RCPT TO:<victim@elsewhere.example>');
    expect(denied).toMatch(/^554 5\.7\.1 /);
    expect(await client.command('RCPT TO:<user@local.test>')).toMatch(/^550 5\.7\.1 x{600}$/);
    expect(events).toEqual([
      expect.objectContaining({ code: 554, text: denied.slice(4) }),
      expect.objectContaining({ code: 550, text: `5.7.1 ${'x'.repeat(194)}…` }),
    ]);
  });

  test('the command is one of a closed set: unknown verbs are OTHER, replies to no command NONE', async () => {
    const events: { code: number; command: string }[] = [];
    const { startListener: start } = await import('./helpers.js');
    const h = await start({ limits: { timeouts: { session: 300 } } }, { onReply: (e) => events.push(e) });
    const client = await h.connect();
    await client.command('EHLO client.example');
    for (const verb of ['XYZZY', 'mail\u00e9', 'RCPT\tTO:<a@local.test>']) {
      expect(await client.command(verb)).toMatch(/^5\d\d /);
    }
    expect(await client.read()).toMatch(/^421 4\.4\.2 /); // the session deadline: no command answered
    expect(events.map((e) => [e.code, e.command])).toEqual([
      [500, 'OTHER'],
      [500, 'OTHER'],
      [500, 'OTHER'],
      [421, 'NONE'],
    ]);
  });
});
