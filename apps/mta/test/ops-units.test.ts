// The small parts of the operations side on their own: the admin config section, next hops as
// operators type them, and the intake recorder's limits (a hostile client cannot grow memory).
import type { ReplyEvent } from '@tern/core';
import type { HookEvent } from '@tern/plugin-api/host';
import { describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../src/config.js';
import { IntakeRecorder } from '../src/ops/intake-recorder.js';
import { parseHop } from '../src/ops/queue-cli.js';

const base = { listeners: [{ kind: 'mx', port: 2525 }], localDomains: ['example.test'] };

function problems(input: unknown): readonly string[] {
  try {
    validateConfig(input, '/tmp');
    return [];
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
}

describe('config.admin', () => {
  it('listens on loopback by default and needs exactly one of token or tokenFile', () => {
    const config = validateConfig({ ...base, admin: { token: 'a-long-enough-token' } }, '/tmp');
    expect(config.admin?.listen).toBe('127.0.0.1:8025');
    expect(problems({ ...base, admin: {} })).toEqual([
      expect.stringMatching(/^config\.admin: set exactly one of token or tokenFile/),
    ]);
    expect(problems({ ...base, admin: { token: 'a-long-enough-token', tokenFile: 'x' } })).toHaveLength(1);
    expect(problems({ ...base, admin: { token: 'short' } })).toEqual([
      expect.stringMatching(/^config\.admin\.token: at least 16/),
    ]);
    expect(problems({ ...base, admin: { tokenFile: 't', listen: '8025' } })).toEqual([
      expect.stringMatching(/^config\.admin\.listen: host:port/),
    ]);
    expect(problems({ ...base, admin: { token: 'a-long-enough-token', listen: '[::1]:8025' } })).toEqual([]);
  });
});

describe('parseHop', () => {
  it('reads the hops operators type, and refuses the rest with the forms it takes', () => {
    expect(parseHop('smtp:relay.example.net')).toEqual({ type: 'smtp', host: 'relay.example.net', port: 25 });
    expect(parseHop('smtp:192.0.2.1:2525')).toEqual({ type: 'smtp', host: '192.0.2.1', port: 2525 });
    expect(parseHop('smtp:[2001:db8::1]:587')).toEqual({ type: 'smtp', host: '2001:db8::1', port: 587 });
    expect(parseHop('mx:example.org')).toEqual({ type: 'mx', domain: 'example.org' });
    expect(parseHop('lmtp:/run/dovecot/lmtp')).toEqual({ type: 'lmtp', path: '/run/dovecot/lmtp' });
    expect(parseHop('lmtp:mail.internal')).toEqual({ type: 'lmtp', host: 'mail.internal', port: 24 });
    expect(parseHop('maildir:/var/mail')).toEqual({ type: 'maildir', path: '/var/mail' });
    expect(parseHop('none')).toBeNull();
    expect(parseHop('{"type":"mx","domain":"a.test"}')).toEqual({ type: 'mx', domain: 'a.test' });
    expect(() => parseHop('ftp:x')).toThrow(/use smtp:HOST\[:PORT\]/);
    expect(() => parseHop('maildir:relative')).toThrow(/absolute/);
    expect(() => parseHop('{nope')).toThrow(/JSON/);
  });
});

describe('IntakeRecorder', () => {
  const event = (
    sessionId: string,
    hook: HookEvent['hook'],
    outcome: HookEvent['outcome'] = 'continue',
  ): HookEvent => ({
    plugin: 'p',
    hook,
    outcome,
    durationMs: 0.5,
    sessionId,
  });

  it("hands a message its session's verdicts once; a new MAIL FROM starts the transaction's afresh", () => {
    const r = new IntakeRecorder();
    r.opened('s1', 'mx', '192.0.2.1');
    r.record(event('s1', 'connect'));
    r.mailFrom('s1', 'a@x.test');
    r.record(event('s1', 'rcptTo', 'reject'));
    // RSET and a new transaction: the refused RCPT belonged to the first one.
    r.mailFrom('s1', 'b@x.test');
    r.record(event('s1', 'rcptTo'));
    expect(r.take('s1').map((e) => `${e.hook}:${e.outcome}`)).toEqual([
      'connect:continue',
      'rcptTo:continue',
    ]);
    expect(r.take('s1').map((e) => e.hook)).toEqual(['connect']); // the session part stays for the next message
    expect(r.rejections()).toEqual([
      expect.objectContaining({
        sessionId: 's1',
        sender: 'a@x.test',
        remoteAddress: '192.0.2.1',
        listener: 'mx',
      }),
    ]);
    r.closed('s1');
    expect(r.take('s1')).toEqual([]);
  });

  it("lists core's own refusals beside plugin refusals, each reply once", () => {
    const r = new IntakeRecorder();
    const reply = (code: number, command: ReplyEvent['command'], text?: string): ReplyEvent => ({
      listener: 'mx',
      sessionId: 's1',
      code,
      command,
      ...(text === undefined ? {} : { text }),
    });
    r.opened('s1', 'mx', '192.0.2.1');
    r.helo('s1', 'client.test');
    r.mailFrom('s1', 'a@x.test');
    r.rcptTo('s1', 'spam@local.test');
    r.record({ ...event('s1', 'rcptTo', 'reject'), code: 550, enhanced: '5.7.1', text: 'No spam' });
    r.reply(reply(550, 'RCPT', '5.7.1 No spam'));
    r.reply(reply(554, 'RCPT', '5.7.1 Relay access denied'));
    // A failed hook has no code of its own: its reply gives it.
    r.record(event('s1', 'message', 'timeout'));
    r.reply(reply(451, 'DATA', '4.3.0 Local error in processing'));
    // An observe hook that fails answers nobody: the next reply is core's own.
    r.record(event('s1', 'queued', 'error'));
    r.reply(reply(500, 'OTHER', '5.5.2 command not recognized'));
    const listed = r.rejections().reverse();
    expect(listed.map((x) => [x.by, x.plugin ?? '', x.command, x.code, x.enhanced, x.text])).toEqual([
      ['plugin', 'p', 'RCPT', 550, '5.7.1', 'No spam'],
      ['core', '', 'RCPT', 554, '5.7.1', 'Relay access denied'],
      ['plugin', 'p', 'DATA', 451, '4.3.0', 'Local error in processing'],
      ['plugin', 'p', undefined, undefined, undefined, undefined],
      ['core', '', 'OTHER', 500, '5.5.2', 'command not recognized'],
    ]);
    // Core refused the RCPT before any plugin saw it: the last recipient given is not the one refused.
    expect(listed[1]).toMatchObject({
      outcome: 'reject',
      remoteAddress: '192.0.2.1',
      helo: 'client.test',
      sender: 'a@x.test',
      listener: 'mx',
    });
    expect(listed[1]).not.toHaveProperty('recipient');
    expect(listed[4]).not.toHaveProperty('sender');
  });

  it('bounds events per session, sessions and refusals', () => {
    const r = new IntakeRecorder({ maxEventsPerSession: 5, maxSessions: 3, maxRejections: 4 });
    r.mailFrom('loop', 'a@x.test');
    for (let i = 0; i < 1000; i++) r.record(event('loop', 'rcptTo', 'reject'));
    expect(r.take('loop')).toHaveLength(5);
    expect(r.rejections()).toHaveLength(4);
    for (const id of ['a', 'b', 'c', 'd']) r.opened(id, 'mx', '192.0.2.1');
    expect(r.sessions).toBe(3);
    expect(r.listenerOf('loop')).toBeUndefined(); // the least recently seen went first
    expect(r.listenerOf('d')).toBe('mx');
  });
});
