import { describe, expect, test } from 'vitest';
import { makeField } from '../src/headers.js';
import { disconnect, Headers, parseOptions, reject, smtpReply, tempfail } from '../src/index.js';

describe('verdict helpers', () => {
  test('carry code, enhanced code and text', () => {
    expect(reject(550, '5.7.1', 'no')).toEqual({
      kind: 'reject',
      reply: { code: 550, enhanced: '5.7.1', text: 'no' },
    });
    expect(tempfail().reply.code).toBe(451);
    expect(disconnect().reply).toMatchObject({ code: 421, enhanced: '4.7.0' });
  });
  test('refuse impossible pairings and strip line breaks that would inject a reply', () => {
    expect(() => reject(450, '4.7.1', 'x')).toThrow(/5xx/);
    expect(() => tempfail(550, '5.7.1', 'x')).toThrow(/4xx/);
    expect(() => smtpReply(550, '4.7.1', 'x')).toThrow(/class/);
    expect(() => smtpReply(550, '5.7', 'x')).toThrow();
    expect(smtpReply(550, '5.7.1', 'a\r\n250 ok').text).toBe('a 250 ok');
  });
});

describe('headers', () => {
  test('parse keeps raw folding; get unfolds; set, remove, prepend', () => {
    const h = Headers.parse('Subject: hello\r\n  world\r\nTo: a@b\r\nReceived: one\r\nReceived: two\r\n');
    expect(h.get('subject')).toBe('hello  world');
    expect(h.getAll('Received')).toEqual(['one', 'two']);
    h.prepend('Received', 'zero');
    expect(h.count('received')).toBe(3);
    h.set('To', 'c@d');
    expect(h.remove('Received', (v) => v === 'one')).toBe(1);
    expect(h.toString()).toBe('Received: zero\r\nSubject: hello\r\n  world\r\nTo: c@d\r\nReceived: two\r\n');
  });
  test('UTF-8 values round-trip as text and go on the wire as UTF-8 bytes', () => {
    const h = Headers.parse(Buffer.from('Subject: caf\u00e9 \u2615\r\n', 'utf8'));
    expect(h.get('Subject')).toBe('caf\u00e9 \u2615');
    h.append('X-Note', 'na\u00efve');
    expect(h.get('X-Note')).toBe('na\u00efve');
    expect(
      h.toBuffer().equals(Buffer.from('Subject: caf\u00e9 \u2615\r\nX-Note: na\u00efve\r\n', 'utf8')),
    ).toBe(true);
  });
  // Found by fuzz-checks (plugin-spam): a block opening with a folded line, which has no field to
  // belong to, made it a continuation of the field prepended above it: a sender could append text of
  // its choice to our Authentication-Results (or Received, or DKIM-Signature).
  test('prepend goes below a folded line that opens the block, so that line joins no field of ours', () => {
    const h = Headers.parse(' ; dkim=pass header.d=bank.example\r\nSubject: hi\r\n');
    h.prepend('Authentication-Results', 'mx.tern.test; dkim=none');
    const reparsed = Headers.parse(h.toBuffer());
    expect(reparsed.size).toBe(h.size);
    expect(reparsed.get('Authentication-Results')).toBe('mx.tern.test; dkim=none');
    expect(h.toString()).toBe(
      ' ; dkim=pass header.d=bank.example\r\nAuthentication-Results: mx.tern.test; dkim=none\r\nSubject: hi\r\n',
    );
  });
  test('refuse header injection', () => {
    expect(() => makeField('X-A', 'x\r\nBcc: evil@x')).toThrow(/line break/);
    expect(() => makeField('X-A', 'x\nBcc: evil@x')).toThrow(/line break/);
    expect(() => makeField('Bad Name', 'x')).toThrow(/field name/);
    expect(makeField('X-A', 'x\r\n y').raw).toBe('X-A: x\r\n y');
  });
});

describe('parseOptions', () => {
  const schema = {
    '~standard': {
      version: 1 as const,
      vendor: 'test',
      validate: (value: unknown) =>
        typeof (value as { zone?: unknown }).zone === 'string'
          ? { value: value as { zone: string } }
          : { issues: [{ message: 'expected a string', path: ['zones', 0, { key: 'zone' }] }] },
    },
  };
  test('names the plugin and the field', () => {
    expect(parseOptions('dnsbl', schema, { zone: 'x' })).toEqual({ zone: 'x' });
    expect(() => parseOptions('dnsbl', schema, {})).toThrow(
      'plugin dnsbl: option zones[0].zone: expected a string',
    );
  });
});
