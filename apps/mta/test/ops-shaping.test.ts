// Traffic shaping through a real tern process: a destination that answers "421 4.7.28 rate
// limited" sets off a back-off rule configured under delivery.shaping; the admin API, `tern queue
// shaping`, /metrics and the message's timeline all show it. A bad rule stops start-up naming it.
import { startSmtpSink, waitFor } from '@tern/testkit';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config.js';
import { sendMail } from './ops-fixtures/smtp.js';
import { startOpsTern, stopAllOpsTern, tern } from './ops-fixtures/tern.js';

afterAll(stopAllOpsTern);

describe('delivery.shaping', () => {
  it('shows a rule a reply set off in the API, the CLI, the metrics and the timeline', async () => {
    const sink = await startSmtpSink({
      rcptReply: () => ({
        code: 421,
        message: '4.7.28 Our system has detected an unusual rate; rate limited',
      }),
    });
    try {
      const mta = await startOpsTern({
        localDomains: ['limited.test'],
        delivery: {
          routes: { 'limited.test': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' } },
          shaping: {
            defaultRules: false,
            rules: [
              {
                name: 'slow-down',
                match: { enhanced: '4.7.28' },
                action: { kind: 'rate', messageRate: { limit: 2, per: 60_000 } },
                durationMs: 600_000,
              },
            ],
          },
        },
      });
      const sent = await sendMail(mta.port, {
        from: 'a@src.test',
        to: ['bob@limited.test'],
        subject: 'Shaped',
      });
      let shaping: { backoffs: { rule: string; action: string; destination: string; detail: string }[] } = {
        backoffs: [],
      };
      for (let i = 0; i < 100 && shaping.backoffs.length === 0; i++) {
        shaping = (await mta.api('GET', '/api/shaping')).body;
        if (shaping.backoffs.length === 0) await new Promise((r) => setTimeout(r, 100));
      }
      expect(shaping.backoffs).toMatchObject([
        {
          rule: 'slow-down',
          action: 'rate',
          destination: 'limited.test',
          source: 'default',
          detail: '2 per 60000 ms',
        },
      ]);
      const cli = await tern(['queue', 'shaping', '--admin', mta.url, '--token', mta.token]);
      expect(cli.status).toBe(0);
      expect(cli.stdout).toMatch(
        /default→limited\.test {2}rate \(2 per 60000 ms\) {2}rule slow-down .* after 421 4\.7\.28/,
      );
      const metrics = (await mta.api('GET', '/metrics')).body as string;
      expect(metrics).toMatch(/^tern_shaping_actions_total\{action="rate",cause="triggered"\} 1$/m);
      const details = (await mta.api('GET', `/api/messages/${sent.queueId}`)).body;
      expect(details.timeline.filter((e: { type: string }) => e.type === 'shaping')).toMatchObject([
        { cause: 'triggered', rule: 'slow-down', action: 'rate', code: 421, enhanced: '4.7.28' },
      ]);
      const inspect = await tern([
        'queue',
        'inspect',
        sent.queueId,
        '--admin',
        mta.url,
        '--token',
        mta.token,
      ]);
      expect(inspect.stdout).toMatch(
        /shaping set off slow-down \(rate: 2 per 60000 ms\) on default→limited\.test/,
      );
    } finally {
      await sink.stop();
    }
  });

  it("sends from the egress source the message's pool names, with its EHLO name", async () => {
    const sink = await startSmtpSink();
    try {
      const mta = await startOpsTern({
        localDomains: ['news.test', 'plain.test'],
        delivery: {
          routes: {
            'news.test': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' },
            'plain.test': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'none' },
          },
          egress: {
            sources: {
              a: {
                address: '127.0.0.4',
                ehlo: 'a.out.test',
                warmup: { since: new Date().toISOString().slice(0, 10), caps: [5, 50] },
              },
              b: { address: '127.0.0.5', ehlo: 'b.out.test' },
            },
            pools: { default: { sources: { a: 1 } }, newsletters: { sources: { b: 1 } } },
            select: [{ pool: 'newsletters', domains: ['news.test'] }],
          },
        },
      });
      await sendMail(mta.port, { from: 'a@src.test', to: ['x@news.test'], subject: 'News' });
      await sendMail(mta.port, { from: 'a@src.test', to: ['y@plain.test'], subject: 'Plain' });
      await waitFor(() => sink.messages.length >= 2, 15_000);
      const seen = Object.fromEntries(
        sink.messages.map((m) => [m.rcptTo[0], `${m.remoteAddress} ${m.helo}`]),
      );
      expect(seen).toEqual({ 'x@news.test': '127.0.0.5 b.out.test', 'y@plain.test': '127.0.0.4 a.out.test' });
      // The warming source's day, cap and use, in the API and the CLI.
      const shaping = (await mta.api('GET', '/api/shaping')).body;
      expect(shaping.warmup).toEqual([
        { source: 'a', day: 1, warmed: false, cap: 5, use: [{ destination: 'plain.test', used: 1, cap: 5 }] },
      ]);
      const cli = await tern(['queue', 'shaping', '--admin', mta.url, '--token', mta.token]);
      expect(cli.stdout).toContain('source a: day 1, cap 5/day per destination; plain.test 1/5');
    } finally {
      await sink.stop();
    }
  });

  it('refuses a pool of unknown sources at start-up, naming the field', () => {
    expect(() =>
      validateConfig(
        {
          hostname: 'tern.test',
          listeners: [{ kind: 'mx', port: 25 }],
          delivery: {
            egress: { sources: { a: { address: '127.0.0.4' } }, pools: { default: { sources: { z: 1 } } } },
          },
        },
        '/tmp',
      ),
    ).toThrow(/delivery\.egress\.pools\.default\.sources: no source named "z"/s);
  });

  it('refuses a bad rule at start-up, naming the field and the fix', () => {
    const base = { hostname: 'tern.test', listeners: [{ kind: 'mx', port: 25 }] };
    const bad = (rule: unknown): string => {
      try {
        validateConfig({ ...base, delivery: { shaping: { rules: [rule] } } }, '/tmp');
        return 'accepted';
      } catch (error) {
        return (error as Error).message;
      }
    };
    expect(bad({ name: 'x', match: {}, action: { kind: 'suspend' }, durationMs: 1000 })).toMatch(
      /delivery\.shaping\.rules\[0\]\.match.*give at least one of codes, enhanced or text/s,
    );
    expect(bad({ name: 'x', match: { text: '(' }, action: { kind: 'suspend' }, durationMs: 1000 })).toMatch(
      /delivery\.shaping\.rules\[0\]\.match\.text.*regular expression/s,
    );
    expect(
      bad({ name: 'x', match: { codes: [700] }, action: { kind: 'suspend' }, durationMs: 1000 }),
    ).toMatch(/delivery\.shaping\.rules\[0\]\.match\.codes\[0\].*SMTP reply code/s);
  });
});
