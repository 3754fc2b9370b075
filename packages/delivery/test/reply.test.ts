import { describe, expect, it } from 'vitest';
import { classify, toSmtpReply } from '../src/reply.js';
import { parseCapabilities } from '../src/session.js';

describe('toSmtpReply', () => {
  it("keeps the server's enhanced code and strips it from every line", () => {
    const reply = toSmtpReply({ code: 550, lines: ['5.1.1 No such user', '5.1.1 see the docs'] });
    expect(reply).toEqual({ code: 550, enhanced: '5.1.1', text: 'No such user see the docs' });
  });

  it('derives class.0.0 when the server gives no enhanced code', () => {
    expect(toSmtpReply({ code: 451, lines: ['try later'] })).toEqual({
      code: 451,
      enhanced: '4.0.0',
      text: 'try later',
    });
  });

  it('ignores an enhanced code whose class contradicts the basic code', () => {
    expect(toSmtpReply({ code: 250, lines: ['5.0.0 odd'] }).enhanced).toBe('2.0.0');
  });

  it("keeps at most 2048 characters of a server's text", () => {
    const lines = Array.from({ length: 60 }, (_, i) => `5.7.1 line ${i} ${'x'.repeat(500)}`);
    const reply = toSmtpReply({ code: 550, lines });
    expect(reply.text).toHaveLength(2048);
    expect(reply.text.startsWith('line 0 xxx')).toBe(true);
    expect(reply.text.endsWith('x…')).toBe(true);
    expect(toSmtpReply({ code: 354, lines }).text).toHaveLength(2048);
  });

  it('turns a code that is not an outcome into a temporary protocol error', () => {
    const reply = toSmtpReply({ code: 354, lines: ['go ahead'] });
    expect(reply.code).toBe(451);
    expect(reply.enhanced).toBe('4.5.0');
  });

  it('classifies 2xx, 4xx and 5xx', () => {
    expect(classify(toSmtpReply({ code: 250, lines: ['ok'] }))).toBe('delivered');
    expect(classify(toSmtpReply({ code: 452, lines: ['full'] }))).toBe('deferred');
    expect(classify(toSmtpReply({ code: 554, lines: ['no'] }))).toBe('failed');
  });
});

describe('parseCapabilities', () => {
  it('reads the EHLO keywords delivery acts on', () => {
    const caps = parseCapabilities([
      'PIPELINING',
      'SIZE 1000',
      '8BITMIME',
      'smtputf8',
      'STARTTLS',
      'AUTH PLAIN LOGIN',
    ]);
    expect(caps).toMatchObject({
      esmtp: true,
      pipelining: true,
      size: 1000,
      eightBitMime: true,
      smtpUtf8: true,
      startTls: true,
      auth: ['PLAIN', 'LOGIN'],
    });
  });

  it('knows SIZE without a limit from SIZE not offered', () => {
    expect(parseCapabilities(['SIZE']).size).toBe(0);
    expect(parseCapabilities(['PIPELINING']).size).toBeUndefined();
  });
});
