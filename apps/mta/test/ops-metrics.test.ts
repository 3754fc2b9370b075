// Metric labels come from closed sets: whatever verbs, reply codes and recipient domains clients
// produce, the number of series stays bounded and /metrics stays small. First the label rules on
// their own, then thousands of hostile sessions against a real tern process.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReplyEvent } from '@tern/core';
import { PLATFORM_EVENT_TYPES, silentLogger } from '@tern/plugin-api';
import type { HookEvent } from '@tern/plugin-api/host';
import { smtpDialog, waitFor } from '@tern/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config.js';
import { startMta } from '../src/mta.js';
import { labelledDestinations, replyCodeLabel, TernMetrics, tagLabels } from '../src/ops/metrics.js';
import { sendMail } from './ops-fixtures/smtp.js';
import { startOpsTern, stopAllOpsTern } from './ops-fixtures/tern.js';

afterAll(stopAllOpsTern);

const random = (): string => randomBytes(6).toString('hex');

/** Series per metric name in an exposition text (comment lines left out). */
function seriesByName(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0] ?? line;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

/** The distinct values of one label of one metric. */
function labelValues(text: string, metric: string, label: string): Set<string> {
  const values = new Set<string>();
  const pattern = new RegExp(`^${metric}\\{[^}]*\\b${label}="([^"]*)"`, 'gm');
  for (const match of text.matchAll(pattern)) values.add(match[1] as string);
  return values;
}

describe('label values', () => {
  it('reply codes: known codes as themselves, other SMTP codes as their class, the rest as other', () => {
    expect([550, 421, 452, 299, 599, 471, 99, 1000, 4.5, undefined].map(replyCodeLabel)).toEqual([
      '550',
      '421',
      '452',
      '2xx',
      '5xx',
      '4xx',
      'other',
      'other',
      'other',
      'other',
    ]);
  });

  it('destinations: every configured one, then the largest others, ties in name order', () => {
    const d = (domain: string, total: number) => ({
      domain,
      total,
      scheduled: total,
      active: 0,
      held: 0,
      deferred: 0,
    });
    const chosen = labelledDestinations(
      [d('big.test', 9), d('b.test', 1), d('a.test', 1), d('c.test', 1), d('routed.test', 1)],
      new Set(['routed.test', 'idle.test']),
      3,
    );
    expect([...chosen]).toEqual(['routed.test', 'big.test', 'a.test', 'b.test']);
  });

  it('tags: the listed ones as themselves, any other once as other, none for untagged mail', () => {
    const allowed = new Set(['newsletter', 'receipts']);
    expect(tagLabels(['Newsletter', 'x', 'y', 'receipts'], allowed)).toEqual([
      'newsletter',
      'other',
      'receipts',
    ]);
    expect(tagLabels([], allowed)).toEqual(['none']);
    expect(tagLabels(undefined, allowed)).toEqual(['none']);
  });

  it('10 000 events with random tags and types count under the listed tags, other and none only', async () => {
    const metrics = new TernMetrics({ connections: () => ({}), tags: ['newsletter', 'receipts'] });
    const types = [...PLATFORM_EVENT_TYPES, 'nonsense'];
    for (let i = 0; i < 10_000; i++) {
      metrics.tagEvent({
        type: types[i % types.length] as 'queued',
        at: 0,
        tags: i % 5 === 0 ? [] : [random(), i % 2 === 0 ? 'newsletter' : random()],
      });
    }
    const { body } = await metrics.render();
    expect(labelValues(body, 'tern_tag_events_total', 'tag')).toEqual(
      new Set(['newsletter', 'receipts', 'other', 'none']),
    );
    // 4 tag labels by 7 event types, every one from the start; the unknown type is not counted.
    expect(seriesByName(body).get('tern_tag_events_total')).toBe(28);
    expect(body).toMatch(/^tern_tag_events_total\{tag="receipts",event="held"\} 0$/m);
    expect(body).toMatch(/^tern_tag_events_total\{tag="none",event="queued"\} 250$/m);
    // Without metrics.tags there is no such family (and nothing listens to the events for it).
    const plain = new TernMetrics({ connections: () => ({}) });
    expect(plain.tagEvents).toBeUndefined();
    expect((await plain.render()).body).not.toContain('tern_tag_events_total');
  });

  it('the tag counters listen to the platform events only when metrics.tags is set', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tern-tag-metrics-'));
    try {
      for (const [metrics, listening] of [
        [undefined, false],
        [{ tags: ['newsletter'] }, true],
      ] as const) {
        const config = validateConfig(
          {
            listeners: [{ kind: 'mx', host: '127.0.0.1', port: 0 }],
            localDomains: ['x.test'],
            queue: { backend: 'embedded', path: `q-${listening}.db` },
            intake: { spoolDir: 'spool' },
            ...(metrics ? { metrics } : {}),
          },
          dir,
        );
        const mta = await startMta(config, silentLogger, { worker: false });
        try {
          // Nothing else listens here (no webhooks): producers build no events unless counted.
          expect(mta.events.listening).toBe(listening);
        } finally {
          await mta.close(1000);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('20 000 events with random verbs, codes, plugin and hook outcomes leave a bounded registry', async () => {
    const metrics = new TernMetrics({ connections: () => ({}) });
    const outcomes = ['continue', 'reject', 'tempfail', 'error', 'timeout'] as const;
    for (let i = 0; i < 20_000; i++) {
      // A reply event as a buggy or future core could send it: the label is checked all the same.
      metrics.errorReply({
        listener: 'mx',
        sessionId: random(),
        code: 400 + (i % 200),
        command: random().toUpperCase() as ReplyEvent['command'],
      });
      const event: HookEvent = {
        plugin: i < 10_000 ? 'gate' : `plugin-${i}`,
        hook: 'rcptTo',
        durationMs: 1,
        outcome: outcomes[i % outcomes.length] as HookEvent['outcome'],
        code: 400 + (i % 200),
        sessionId: random(),
      };
      metrics.hookCall(event, 'mx');
    }
    const { body } = await metrics.render();
    const series = seriesByName(body);
    expect(labelValues(body, 'tern_smtp_error_replies_total', 'command')).toEqual(new Set(['OTHER']));
    expect(series.get('tern_smtp_error_replies_total')).toBeLessThanOrEqual(2 * 25);
    expect(labelValues(body, 'tern_hook_calls_total', 'plugin').size).toBeLessThanOrEqual(101);
    expect(series.get('tern_smtp_refusals_total')).toBeLessThan(2000);
    expect(body.length).toBeLessThan(512 * 1024);
  });

  it('process metrics carry one tern_ prefix', async () => {
    const { body } = await new TernMetrics({ connections: () => ({}) }).render();
    expect(body).toMatch(/^tern_process_cpu_seconds_total /m);
    expect(body).toMatch(/^tern_nodejs_eventloop_lag_seconds /m);
    expect(body).not.toMatch(/tern_process_process_|tern_process_nodejs_/);
  });
});

describe('a real tern under hostile traffic', () => {
  it('thousands of sessions with random verbs and random recipient domains leave /metrics small; XCLIENT counts once', async () => {
    const mta = await startOpsTern(
      {
        localDomains: ['example.test'],
        // Every client on loopback may relay (to random domains) and use XCLIENT.
        trustedNetworks: ['127.0.0.0/8'],
        delivery: {
          // Nothing listens there: every job is deferred and stays in the queue for an hour.
          routes: {
            '*': { type: 'smtp', host: '127.0.0.1', port: 9, tls: 'none' },
            'routed.test': { type: 'smtp', host: '127.0.0.1', port: 9, tls: 'none' },
          },
        },
        queue: { backend: 'embedded', retry: { intervals: ['1h'], maxAge: '1d' } },
        log: { level: 'warn' },
      },
      // No reverse lookups: thousands of them would test the machine's DNS, not the metrics.
      { listener: { xclient: true, reverseLookup: false } },
    );
    const metrics = async (): Promise<string> => (await mta.api('GET', '/metrics')).body as string;
    const value = (text: string, pattern: RegExp): number => Number(pattern.exec(text)?.[1] ?? 0);
    const listener = `mx-${mta.port}`;
    const connections = new RegExp(`^tern_smtp_connections_total\\{listener="${listener}"\\} (\\d+)`, 'm');
    const accepted = new RegExp(`^tern_messages_accepted_total\\{listener="${listener}"\\} (\\d+)`, 'm');

    // One XCLIENT session: a proxy hands over a client, who sends a message.
    const before = await metrics();
    const proxy = await smtpDialog(mta.port);
    expect(await proxy.read()).toMatch(/^220 /);
    await proxy.command('EHLO proxy.test');
    expect(await proxy.command('XCLIENT ADDR=192.0.2.9 NAME=client.test')).toMatch(/^220 /);
    await proxy.command('EHLO client.test');
    await proxy.command('MAIL FROM:<a@src.test>');
    expect(await proxy.command('RCPT TO:<b@example.test>')).toMatch(/^250 /); // 192.0.2.9 may not relay
    await proxy.command('DATA');
    expect(await proxy.command('Subject: via XCLIENT\r\n\r\nHi.\r\n.')).toMatch(/^250 /);
    proxy.close();
    let after = '';
    await waitFor(async () => {
      after = await metrics();
      return value(after, accepted) === value(before, accepted) + 1;
    });
    expect(value(after, connections) - value(before, connections)).toBe(1);

    // Thousands of sessions, each with random verbs and a recipient at a random domain; every
    // tenth sends its message, so the queue holds a few hundred destinations (each message is
    // made durable with an fsync, which is what bounds how many a test can afford).
    const sessions = 2000;
    const messages = sessions / 10;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < sessions) {
        const n = next++;
        const c = await smtpDialog(mta.port);
        try {
          await c.read();
          await c.command('EHLO hostile.test');
          for (let i = 0; i < 3; i++) await c.command(`X${random()} ${random()}`);
          await c.command('MAIL FROM:<a@src.test>');
          await c.command(`RCPT TO:<u@${random()}.test>`);
          if (n % 10 === 0) {
            await c.command('DATA');
            await c.command('Subject: x\r\n\r\nx\r\n.');
          }
          await c.command('QUIT');
        } finally {
          c.close();
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    await sendMail(mta.port, { from: 'a@src.test', to: ['last@routed.test'], subject: 'last' });

    let text = '';
    await waitFor(async () => {
      text = await metrics();
      return value(text, accepted) >= value(before, accepted) + messages + 2;
    }, 20_000);
    const series = seriesByName(text);
    const commands = labelValues(text, 'tern_smtp_error_replies_total', 'command');
    expect([...commands]).toEqual(['OTHER']);
    // Queue depth: the configured destination, the 50 largest others and "(other)", four states
    // each. The summary behind it is cached for a second: wait for one with the last message.
    await waitFor(async () => {
      text = await metrics();
      return labelValues(text, 'tern_queue_jobs', 'domain').has('routed.test');
    }, 5000);
    const domains = labelValues(text, 'tern_queue_jobs', 'domain');
    expect(domains.has('(other)')).toBe(true);
    expect(domains.size).toBeLessThanOrEqual(1 + 50 + 1 + 1);
    expect(series.get('tern_queue_jobs')).toBeLessThanOrEqual(4 * domains.size);
    const total = [...series.values()].reduce((a, b) => a + b, 0);
    console.info(`/metrics after ${sessions} hostile sessions: ${total} series, ${text.length} bytes`);
    expect(total).toBeLessThan(800);
    expect(text.length).toBeLessThan(128 * 1024);
    expect(text).not.toMatch(/tern_process_process_/);
  }, 240_000);
});
