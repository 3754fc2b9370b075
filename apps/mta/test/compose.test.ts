// The message HTTP injection builds from JSON, read back by an independent parser (python's
// email package), and the errors a bad request gets, each naming its field.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { composeMessage, InjectionInputError } from '../src/http/compose.js';

/** Parses a message with python's email package; returns what the test looks at. */
function parseWithPython(message: Buffer): {
  headers: Record<string, string>;
  parts: { type: string; filename: string | null; cid: string | null; payload: string }[];
} {
  const script = `
import sys, json, email, email.policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
parts = []
for p in m.walk():
    if p.is_multipart(): continue
    payload = p.get_payload(decode=True)
    parts.append({"type": p.get_content_type(), "filename": p.get_filename(), "cid": p.get("Content-ID"),
                  "payload": payload.decode("utf-8", "replace") if p.get_content_maintype() == "text" else payload.hex()})
print(json.dumps({"headers": {k.lower(): str(v) for k, v in m.items()}, "parts": parts, "defects": [str(d) for d in m.defects]}))
`;
  const run = spawnSync('python3', ['-c', script], { input: message });
  if (run.status !== 0) throw new Error(run.stderr.toString());
  const out = JSON.parse(run.stdout.toString());
  expect(out.defects).toEqual([]);
  return out;
}

describe('composeMessage', () => {
  it('builds text, HTML, an inline image and an attachment into MIME any parser reads back', async () => {
    const pdf = Buffer.from('%PDF-1.4 not really\n\u00ff\u0000binary');
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
    const composed = await composeMessage({
      from: { name: 'Shop Ünïcode', address: 'news@shop.test' },
      to: ['ann@dest.test', { name: 'Bob', address: 'bob@dest.test' }],
      bcc: ['audit@shop.test'],
      subject: 'Your order — 42',
      text: 'Plain text with ünïcode\nand two lines',
      html: '<p>HTML <img src="cid:logo@shop"></p>',
      headers: { 'X-Campaign': 'spring' },
      attachments: [
        { filename: 'invoice.pdf', contentType: 'application/pdf', content: pdf.toString('base64') },
        {
          filename: 'logo.png',
          contentType: 'image/png',
          content: png.toString('base64'),
          contentId: 'logo@shop',
        },
      ],
      tags: ['orders', 'spring-2026'],
    });
    expect(composed.envelope).toEqual({
      mailFrom: 'news@shop.test',
      recipients: ['ann@dest.test', 'bob@dest.test', 'audit@shop.test'],
    });
    expect(composed.tags).toEqual(['orders', 'spring-2026']);
    // Every line ends CRLF, and nothing bare.
    expect(/(?<!\r)\n|\r(?!\n)/.test(composed.message.toString('latin1'))).toBe(false);
    const parsed = parseWithPython(composed.message);
    expect(parsed.headers).toMatchObject({
      from: 'Shop Ünïcode <news@shop.test>',
      to: 'ann@dest.test, Bob <bob@dest.test>',
      subject: 'Your order — 42',
      'x-campaign': 'spring',
      'mime-version': '1.0',
    });
    expect(parsed.headers.bcc).toBeUndefined(); // in the envelope only
    expect(parsed.headers['message-id']).toMatch(/^<.+@.+>$/);
    expect(parsed.parts).toEqual([
      expect.objectContaining({
        type: 'text/plain',
        payload: expect.stringContaining('Plain text with ünïcode'),
      }),
      expect.objectContaining({ type: 'text/html', payload: expect.stringContaining('cid:logo@shop') }),
      expect.objectContaining({ type: 'image/png', cid: '<logo@shop>', payload: png.toString('hex') }),
      expect.objectContaining({
        type: 'application/pdf',
        filename: 'invoice.pdf',
        payload: pdf.toString('hex'),
      }),
    ]);
  });

  it('takes a raw message with its envelope, making its line ends CRLF', async () => {
    const composed = await composeMessage({
      raw: 'From: a@shop.test\nTo: b@dest.test\nSubject: raw\n\nbody\n',
      envelope: { mailFrom: 'a@shop.test', recipients: ['b@dest.test'] },
    });
    expect(composed.message.toString()).toBe(
      'From: a@shop.test\r\nTo: b@dest.test\r\nSubject: raw\r\n\r\nbody\r\n',
    );
    expect(composed.tags).toEqual([]);
  });

  it.each([
    [{ from: 'a@shop.test', to: ['b@dest.test'] }, 'text: a message needs text, html or an attachment'],
    [{ from: 'a@shop.test', text: 'x' }, 'to: at least one recipient'],
    [{ from: 'Ann <a@shop.test>', to: ['b@dest.test'], text: 'x' }, 'from: '],
    [{ from: 'a@shop.test', to: ['b@dest.test', 'nope'], text: 'x' }, 'to[1]: '],
    [
      { from: 'a@shop.test', to: ['b@dest.test'], text: 'x', subject: 'a\r\nBcc: evil@x.test' },
      'subject: one line',
    ],
    [
      { from: 'a@shop.test', to: ['b@dest.test'], text: 'x', headers: { 'Message-ID': '<x@y>' } },
      'headers.Message-ID: set by its own field',
    ],
    [
      { from: 'a@shop.test', to: ['b@dest.test'], text: 'x', headers: { 'Bad Name': 'v' } },
      'headers.Bad Name: a header field name',
    ],
    [
      {
        from: 'a@shop.test',
        to: ['b@dest.test'],
        attachments: [{ filename: 'x', path: '/etc/passwd', content: 'AA==' }],
      },
      'attachments[0]: unknown field "path"',
    ],
    [
      { from: 'a@shop.test', to: ['b@dest.test'], attachments: [{ filename: 'x', content: 'not base64!' }] },
      'attachments[0].content: the bytes, base64-encoded',
    ],
    [
      { from: 'a@shop.test', to: ['b@dest.test'], text: 'x', tags: ['no spaces'] },
      'tags[0]: a tag of letters',
    ],
    [{ from: 'a@shop.test', to: ['b@dest.test'], text: 'x', colour: 'red' }, 'unknown field "colour"'],
    [
      { raw: 'no header here', envelope: { mailFrom: 'a@shop.test', recipients: ['b@dest.test'] } },
      'raw: an RFC 5322 message',
    ],
    [
      { raw: 'Subject: x\n\ny', envelope: { mailFrom: 'a@shop.test', recipients: [] } },
      'envelope.recipients: at least one recipient',
    ],
  ])('refuses %j naming the field', async (input, message) => {
    const error = await composeMessage(input).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InjectionInputError);
    expect((error as Error).message).toContain(message);
  });

  it('keeps to the limits it is given', async () => {
    const many = Array.from({ length: 3 }, (_, i) => `r${i}@dest.test`);
    await expect(
      composeMessage(
        { from: 'a@shop.test', to: many, text: 'x' },
        { maxRecipients: 2, maxMessageBytes: 10_000 },
      ),
    ).rejects.toThrow('envelope.recipients: at most 2 recipients');
    await expect(
      composeMessage(
        { from: 'a@shop.test', to: ['b@dest.test'], text: 'x'.repeat(20_000) },
        { maxRecipients: 2, maxMessageBytes: 10_000 },
      ),
    ).rejects.toThrow(/bytes; at most 10000/);
  });
});
