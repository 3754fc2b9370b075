// The operations side end to end on the embedded backend: a real tern process, real SMTP in and
// out (a receiving sink as the smarthost), the admin API over HTTP and the `tern queue` commands
// as an operator runs them. "Where is my message?" and "why was it rejected?" answered directly.
import { setTimeout as sleep } from 'node:timers/promises';
import { type SinkMessage, type SmtpSink, startSmtpSink, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendMail } from './ops-fixtures/smtp.js';
import { type OpsTern, startOpsTern, stopAllOpsTern, tern } from './ops-fixtures/tern.js';

// A plugin as a config file writes it: refuses spam@ at RCPT, looks at every message, and
// quarantines (holds) anything whose subject says QUARANTINE.
const GATE = `[{
  name: 'gate',
  rcptTo(ctx) {
    if (ctx.recipient.address.startsWith('spam')) {
      return { kind: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'No spam here' } };
    }
  },
  message() {},
  queue(ctx) {
    if (/QUARANTINE/.test(ctx.message.headers.get('subject') ?? '')) ctx.hold('looks like spam');
  },
}]`;

let sink: SmtpSink;
let other: SmtpSink;
let mta: OpsTern;
/** Recipients the sink answers 451 until told otherwise. */
const busy = new Set<string>();
/** Recipients the sink refuses for good. */
const unknown = new Set<string>();

beforeAll(async () => {
  sink = await startSmtpSink({
    rcptReply: (address) => {
      if (unknown.has(address)) return { code: 550, message: '5.1.1 No such user' };
      if (busy.has(address)) return { code: 451, message: '4.2.0 Mailbox busy, try later' };
      return undefined;
    },
  });
  other = await startSmtpSink({ hostname: 'other.test' });
  mta = await startOpsTern(
    {
      localDomains: ['example.test'],
      delivery: { routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } } },
      // The first retry comes quickly; the next only after an hour, so only an operator's retry helps.
      queue: { backend: 'embedded', retry: { intervals: ['1s', '1h'], maxAge: '1d' } },
    },
    { plugins: GATE },
  );
});

afterAll(async () => {
  await stopAllOpsTern();
  await sink?.stop();
  await other?.stop();
});

const cliApi = (): string[] => ['--admin', mta.url, '--token', mta.token];

function received(to: string): SinkMessage[] {
  return sink.messages.filter((m) => m.rcptTo.includes(to));
}

describe('admin API: access and errors', () => {
  it('needs the token, names what is wrong, and serves /metrics and the page without it', async () => {
    const bare = await fetch(`${mta.url}/api/queue/summary`);
    expect(bare.status).toBe(401);
    expect(((await bare.json()) as { error: string }).error).toMatch(/token/);
    const wrong = await fetch(`${mta.url}/api/queue/summary`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);

    expect((await mta.api('GET', '/api/queue/summary')).status).toBe(200);
    expect(await mta.api('GET', '/api/nothing-here')).toMatchObject({ status: 404 });
    expect(await mta.api('GET', '/api/messages/0MX00000000000000000Z')).toMatchObject({ status: 404 });
    expect(await mta.api('GET', '/api/messages/nobody@nowhere.test')).toMatchObject({
      status: 404,
      body: { error: expect.stringMatching(/Message-ID/) },
    });
    expect(await mta.api('GET', '/api/messages/not-an-id')).toMatchObject({ status: 400 });
    expect(await mta.api('GET', '/api/queue?state=lost')).toMatchObject({
      status: 400,
      body: { error: expect.stringMatching(/state: lost/) },
    });
    expect(await mta.api('GET', '/api/queue?colour=red')).toMatchObject({ status: 400 });
    expect(await mta.api('GET', '/api/queue?limit=0')).toMatchObject({ status: 400 });
    expect(await mta.api('POST', '/api/destinations/x.test/suspend', { for: 'forever' })).toMatchObject({
      status: 400,
      body: { error: expect.stringMatching(/forever/) },
    });
    expect(await mta.api('POST', '/api/destinations/bad domain!/suspend', { for: '1h' })).toMatchObject({
      status: 400,
    });
    expect(await mta.api('DELETE', '/api/queue/summary')).toMatchObject({ status: 405 });

    const metrics = await fetch(`${mta.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^# HELP tern_/m);
    const page = await fetch(`${mta.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'/);
  });
});

describe('where is my message, why was it rejected', () => {
  it('shows intake verdicts, each attempt with the remote server and replies, by Message-ID', async () => {
    busy.add('slow@dest.test');
    const sent = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['bob@dest.test', 'slow@dest.test', 'spam@dest.test'],
      subject: 'Where is it',
    });
    expect(sent.rcpt['spam@dest.test']).toMatch(/^550 5\.7\.1 No spam here/);
    await waitFor(() => received('bob@dest.test').length === 1, 5000);
    busy.delete('slow@dest.test');
    await waitFor(() => received('slow@dest.test').length === 1, 8000);

    const { status, body } = await mta.api('GET', `/api/messages/${encodeURIComponent(sent.messageId)}`);
    expect(status).toBe(200);
    expect(body.queueId).toBe(sent.queueId);
    await waitFor(
      async () => (await mta.api('GET', `/api/messages/${sent.queueId}`)).body.state === 'finished',
      5000,
    );
    const { body: finished } = await mta.api('GET', `/api/messages/${sent.queueId}`);
    const timeline = finished.timeline as { type: string; [k: string]: unknown }[];
    expect(timeline[0]).toMatchObject({
      type: 'received',
      mailFrom: 'alice@src.test',
      recipients: ['bob@dest.test', 'slow@dest.test'],
      remoteAddress: '127.0.0.1',
      helo: 'client.src.test',
    });
    const hooks = timeline.filter((e) => e.type === 'hook');
    expect(hooks).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          plugin: 'gate',
          hook: 'rcptTo',
          outcome: 'reject',
          code: 550,
          text: 'No spam here',
        }),
        expect.objectContaining({ plugin: 'gate', hook: 'rcptTo', outcome: 'continue' }),
        expect.objectContaining({ plugin: 'gate', hook: 'message', outcome: 'continue' }),
        expect.objectContaining({ plugin: 'gate', hook: 'queue', outcome: 'ok' }),
      ]),
    );
    expect(hooks.some((e) => e.plugin === 'tern-ops')).toBe(false);
    const attempts = timeline.filter((e) => e.type === 'attempt');
    expect(attempts).toHaveLength(2);
    expect(attempts[0]).toMatchObject({
      attempt: 1,
      domain: 'dest.test',
      hop: { type: 'smtp', host: '127.0.0.1', port: sink.port },
      remoteMta: expect.stringContaining(`:${sink.port}`),
      recipients: expect.arrayContaining([
        expect.objectContaining({ address: 'bob@dest.test', result: 'delivered', code: 250 }),
        expect.objectContaining({
          address: 'slow@dest.test',
          result: 'deferred',
          code: 451,
          category: 'transient',
        }),
      ]),
    });
    expect(attempts[1]).toMatchObject({
      attempt: 2,
      recipients: [expect.objectContaining({ address: 'slow@dest.test', result: 'delivered' })],
    });

    const { body: activity } = await mta.api('GET', '/api/activity');
    expect(activity.rejections).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          plugin: 'gate',
          hook: 'rcptTo',
          code: 550,
          recipient: 'spam@dest.test',
          sender: 'alice@src.test',
          remoteAddress: '127.0.0.1',
          helo: 'client.src.test',
        }),
      ]),
    );
    expect(activity.deliveries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'delivered', queueId: sent.queueId, recipients: ['bob@dest.test'] }),
        expect.objectContaining({
          kind: 'deferred',
          queueId: sent.queueId,
          recipients: ['slow@dest.test'],
          category: 'transient',
        }),
      ]),
    );

    const inspect = await tern(['queue', 'inspect', sent.messageId, ...cliApi()]);
    expect(inspect.stderr).toBe('');
    expect(inspect.status).toBe(0);
    expect(inspect.stdout).toContain(`queue id:   ${sent.queueId}`);
    expect(inspect.stdout).toMatch(/gate rcptTo: reject 550 5\.7\.1 No spam here/);
    expect(inspect.stdout).toMatch(
      /attempt 1 to dest\.test via .*slow@dest\.test deferred \[transient\] \(451 4\.2\.0/,
    );
  });

  it('bounces a permanent failure and shows it among recent bounces', async () => {
    unknown.add('ghost@dest.test');
    const sent = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['ghost@dest.test'],
      subject: 'Ghost',
    });
    // The bounce goes to alice@src.test, which the smarthost route also takes to the sink.
    await waitFor(() => received('alice@src.test').some((m) => m.raw.includes(sent.queueId)), 8000);
    const { body } = await mta.api('GET', '/api/activity');
    expect(body.bounces[0]).toMatchObject({
      kind: 'bounced',
      queueId: sent.queueId,
      recipients: ['ghost@dest.test'],
      code: 550,
      reason: 'permanent',
      category: 'bad-mailbox',
    });
  });
});

describe('tern queue: operator actions', () => {
  it('suspends a destination, holds and releases a message, with summary and list on the way', async () => {
    const suspend = await tern(['queue', 'suspend', 'hold.test', '--for', '1h', ...cliApi()]);
    expect(suspend.stdout).toMatch(/^hold\.test: suspended until \d{4}-/);
    const sent = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['carol@hold.test'],
      subject: 'Hold me',
    });
    const hold = await tern(['queue', 'hold', sent.queueId, ...cliApi()]);
    expect(hold.stdout).toBe(`${sent.queueId}: held (1 job(s))\n`);
    const summary = await tern(['queue', 'summary', ...cliApi()]);
    expect(summary.stdout).toMatch(/^hold\.test\s+1\s+0\s+0\s+1\s+0\s+\d+s\s+suspended until/m);
    expect((await tern(['queue', 'resume', 'hold.test', ...cliApi()])).stdout).toBe(
      'hold.test: resumed; 0 job(s) due now\n',
    );
    await sleep(1500);
    expect(received('carol@hold.test')).toEqual([]);

    const list = await tern(['queue', 'list', '--state', 'held', '--domain', 'hold.test', ...cliApi()]);
    expect(list.stdout).toMatch(
      new RegExp(
        `^${sent.queueId}  hold\\.test  held  attempts 0 .*<alice@src\\.test> -> carol@hold\\.test$`,
        'm',
      ),
    );
    const json = JSON.parse(
      (await tern(['queue', 'list', '--json', '--domain', 'hold.test', ...cliApi()])).stdout,
    );
    expect(json).toEqual([expect.objectContaining({ queueId: sent.queueId, state: 'held' })]);

    expect((await tern(['queue', 'release', sent.messageId, ...cliApi()])).stdout).toBe(
      `${sent.queueId}: released (1 job(s))\n`,
    );
    await waitFor(() => received('carol@hold.test').length === 1, 5000);
    const actions = (await mta.api('GET', `/api/messages/${sent.queueId}`)).body.timeline
      .filter((e: { type: string }) => e.type === 'operator')
      .map((e: { action: string }) => e.action);
    expect(actions).toEqual(['hold', 'release']);
  });

  it('quarantines through a queue hook; the reason shows until an operator releases it', async () => {
    const sent = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['dan@quarantine.test'],
      subject: 'QUARANTINE me',
    });
    await sleep(1000);
    expect(received('dan@quarantine.test')).toEqual([]);
    const { body } = await mta.api('GET', `/api/messages/${sent.queueId}`);
    expect(body).toMatchObject({ held: true, holdReason: 'looks like spam' });
    const release = await mta.api('POST', `/api/messages/${sent.queueId}/release`);
    expect(release).toMatchObject({ status: 200, body: { released: 1 } });
    await waitFor(() => received('dan@quarantine.test').length === 1, 5000);
  });

  it('retries now a message the schedule would leave for an hour', async () => {
    busy.add('later@retry.test');
    const sent = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['later@retry.test'],
      subject: 'Retry',
    });
    await waitFor(async () => {
      const { body } = await mta.api('GET', `/api/messages/${sent.queueId}`);
      return body.jobs?.[0]?.attempts === 2;
    }, 8000);
    const deferred = await tern([
      'queue',
      'list',
      '--state',
      'deferred',
      '--recipient',
      'later@',
      ...cliApi(),
    ]);
    expect(deferred.stdout).toMatch(/attempts 2/);
    busy.delete('later@retry.test');
    await sleep(500);
    expect(received('later@retry.test')).toEqual([]);
    const retry = await tern(['queue', 'retry', sent.queueId, ...cliApi()]);
    expect(retry.stdout).toBe(`${sent.queueId}: 1 job(s) due now\n`);
    await waitFor(() => received('later@retry.test').length === 1, 5000);
  });

  it('bounces every message of a filter with progress on stderr; each sender gets an RFC 3464 bounce', async () => {
    await tern(['queue', 'suspend', 'bulk.test', '--for', '1h', ...cliApi()]);
    const sent = [];
    for (let i = 0; i < 3; i++) {
      sent.push(
        await sendMail(mta.port, {
          from: `sender${i}@src.test`,
          to: [`x${i}@bulk.test`],
          subject: `Bulk ${i}`,
        }),
      );
    }
    const bounce = await tern([
      'queue',
      'bounce',
      '--domain',
      'bulk.test',
      '--reason',
      'cleanup after a spam run',
      ...cliApi(),
    ]);
    expect(bounce.status).toBe(0);
    expect(bounce.stderr).toMatch(/bounce: 3 message\(s\) found/);
    expect(bounce.stderr).toMatch(/bounce: 3\/3/);
    expect(bounce.stderr).toMatch(/bounce: done, 3 of 3 message\(s\)/);
    for (const [i, s] of sent.entries()) {
      await waitFor(() => received(`sender${i}@src.test`).length === 1, 5000);
      const dsn = received(`sender${i}@src.test`)[0] as SinkMessage;
      expect(dsn.mailFrom).toBe('');
      const text = dsn.raw.toString('utf8');
      expect(text).toMatch(/Content-Type: multipart\/report; report-type=delivery-status/);
      expect(text).toContain(`Final-Recipient: rfc822; x${i}@bulk.test`);
      expect(text).toContain(
        "Diagnostic-Code: smtp; 550 5.0.0 Returned by the mail system's operator: cleanup after a spam run",
      );
      expect(text).toContain(`X-Tern-Queue-ID: ${s.queueId}`);
    }
    expect(received('x0@bulk.test')).toEqual([]);
    const { body } = await mta.api('GET', '/api/queue?domain=bulk.test');
    expect(body.jobs).toEqual([]);
    expect((await tern(['queue', 'bounce', ...cliApi()])).status).toBe(2); // no ids, no filter: refused
    await tern(['queue', 'resume', 'bulk.test', ...cliApi()]);
  });

  it('reroutes one message to another server, and deletes another without a trace on the wire', async () => {
    await tern(['queue', 'suspend', 'moved.test', '--for', '1h', ...cliApi()]);
    const moved = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['eve@moved.test'],
      subject: 'Moved',
    });
    const doomed = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['fay@moved.test'],
      subject: 'Doomed',
    });
    const reroute = await tern([
      'queue',
      'reroute',
      moved.queueId,
      '--to',
      `smtp:127.0.0.1:${other.port}`,
      ...cliApi(),
    ]);
    expect(reroute.stdout).toBe(`${moved.queueId}: 1 job(s) rerouted\n`);
    expect((await tern(['queue', 'reroute', moved.queueId, '--to', 'ftp:nowhere', ...cliApi()])).status).toBe(
      2,
    );
    const bad = await mta.api('POST', `/api/messages/${moved.queueId}/reroute`, { hop: { type: 'smtp' } });
    expect(bad.status).toBe(400);
    expect((await tern(['queue', 'delete', doomed.queueId, ...cliApi()])).stdout).toBe(
      `${doomed.queueId}: deleted\n`,
    );
    expect((await tern(['queue', 'delete', doomed.queueId, ...cliApi()])).stderr).toMatch(
      /no longer in the queue/,
    );
    await tern(['queue', 'resume', 'moved.test', ...cliApi()]);
    await other.waitFor(1, 5000);
    expect(other.messages[0]?.rcptTo).toEqual(['eve@moved.test']);
    await sleep(500);
    expect(received('fay@moved.test')).toEqual([]);
    expect(received('eve@moved.test')).toEqual([]);
    const { body } = await mta.api('GET', `/api/messages/${doomed.queueId}`);
    expect(body.state).toBe('finished');
    expect(body.timeline.at(-1)).toMatchObject({ type: 'operator', action: 'delete' });
  });
});

describe('metrics', () => {
  it('counts connections, acceptances, refusals by plugin and code, hook latency, deliveries and queue depth', async () => {
    await tern(['queue', 'suspend', 'depth.test', '--for', '1h', ...cliApi()]);
    await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['a@depth.test', 'b@depth.test'],
      subject: 'Depth',
    });
    // The queue summary behind the depth gauges is cached for a second.
    let text = '';
    await waitFor(async () => {
      text = await (await fetch(`${mta.url}/metrics`)).text();
      return text.includes('tern_queue_jobs{domain="depth.test",state="scheduled"} 1');
    }, 5000);
    const value = (pattern: RegExp): number => Number(pattern.exec(text)?.[1] ?? Number.NaN);
    const listener = `mx-${mta.port}`;
    expect(
      value(new RegExp(`^tern_smtp_connections_total\\{listener="${listener}"\\} (\\d+)`, 'm')),
    ).toBeGreaterThanOrEqual(10);
    expect(
      value(new RegExp(`^tern_messages_accepted_total\\{listener="${listener}"\\} (\\d+)`, 'm')),
    ).toBeGreaterThanOrEqual(10);
    expect(
      value(
        /^tern_smtp_refusals_total\{listener="mx-\d+",plugin="gate",hook="rcptTo",outcome="reject",code="550"\} (\d+)/m,
      ),
    ).toBe(1);
    // Every error reply, core's own included: the gate's 550 at RCPT is among them.
    expect(
      value(
        new RegExp(
          `^tern_smtp_error_replies_total\\{listener="${listener}",command="RCPT",code="550"\\} (\\d+)`,
          'm',
        ),
      ),
    ).toBe(1);
    expect(
      value(/^tern_hook_duration_seconds_count\{plugin="gate",hook="rcptTo"\} (\d+)/m),
    ).toBeGreaterThanOrEqual(10);
    expect(value(/^tern_delivery_recipients_total\{result="delivered"\} (\d+)/m)).toBeGreaterThanOrEqual(6);
    expect(value(/^tern_delivery_recipients_total\{result="deferred"\} (\d+)/m)).toBeGreaterThanOrEqual(2);
    expect(value(/^tern_bounces_total\{reason="permanent"\} (\d+)/m)).toBe(1);
    expect(value(/^tern_delivery_failures_total\{result="failed",category="bad-mailbox"\} (\d+)/m)).toBe(1);
    expect(
      value(/^tern_delivery_failures_total\{result="deferred",category="transient"\} (\d+)/m),
    ).toBeGreaterThanOrEqual(2);
    expect(value(/^tern_queue_jobs\{domain="depth\.test",state="scheduled"\} (\d+)/m)).toBe(1);
    expect(value(/^tern_queue_jobs_total\{state="total"\} (\d+)/m)).toBe(1);
    expect(text).not.toContain('tern_redis_ping_seconds'); // embedded: no Redis to time
    expect(text).not.toContain('tern-ops');
    await tern(['queue', 'resume', 'depth.test', ...cliApi()]);
  });
});
