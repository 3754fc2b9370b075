import { createPrivateKey, X509Certificate } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { makeCertificate, type RawSmtp, type SmtpSink, smtpDialog, startSmtpSink } from '../src/index.js';

const sinks: SmtpSink[] = [];
const dialogs: RawSmtp[] = [];

async function sink(opts?: Parameters<typeof startSmtpSink>[0]): Promise<SmtpSink> {
  const started = await startSmtpSink(opts);
  sinks.push(started);
  return started;
}

async function dial(port: number): Promise<RawSmtp> {
  const dialog = await smtpDialog(port);
  dialogs.push(dialog);
  return dialog;
}

afterEach(async () => {
  for (const dialog of dialogs.splice(0)) dialog.close();
  await Promise.all(sinks.splice(0).map((s) => s.stop()));
});

const message = [
  'From: <alice@sender.test>',
  'To: <bob@mx.test>',
  'Subject: hello',
  '',
  'line one',
  '..leading dot',
  '',
].join('\r\n');

describe('startSmtpSink', () => {
  it('receives a message over SMTP, with a recipient refused by rcptReply', async () => {
    const mx = await sink({
      rcptReply: (address) =>
        address === 'nobody@mx.test' ? { code: 550, message: '5.1.1 No such user' } : undefined,
    });
    expect(mx.host).toBe('127.0.0.1');
    const c = await dial(mx.port);
    expect(await c.read()).toMatch(/^220 mx\.test ESMTP/);
    const ehlo = await c.command('EHLO client.test');
    expect(ehlo.split('\n')[0]).toBe('250-mx.test Nice to meet you, [127.0.0.1]');
    expect(ehlo).toContain('250-PIPELINING');
    expect(ehlo).not.toContain('STARTTLS');
    expect(ehlo).not.toContain('AUTH');
    expect(await c.command('MAIL FROM:<alice@sender.test> BODY=8BITMIME')).toMatch(/^250 /);
    expect(await c.command('RCPT TO:<bob@mx.test>')).toMatch(/^250 /);
    expect(await c.command('RCPT TO:<nobody@mx.test>')).toBe('550 5.1.1 No such user');
    expect(await c.command('DATA')).toMatch(/^354 /);
    expect(await c.command(`${message}.`)).toBe('250 OK: message queued');
    expect(await c.command('QUIT')).toMatch(/^221 /);
    await c.closed;

    const [msg] = await mx.waitFor(1);
    expect(msg).toMatchObject({
      mailFrom: 'alice@sender.test',
      rcptTo: ['bob@mx.test'],
      accepted: ['bob@mx.test'],
      secure: false,
      helo: 'client.test',
      mailArgs: { BODY: '8BITMIME' },
    });
    // Dot-unstuffed, otherwise byte for byte.
    expect(msg?.raw.toString()).toBe(message.replace('..leading', '.leading'));
    expect(msg?.headers).toBe('From: <alice@sender.test>\r\nTo: <bob@mx.test>\r\nSubject: hello\r\n');
    expect(msg?.body.toString()).toBe('line one\r\n.leading dot\r\n');
    expect(msg?.sessionId).toEqual(expect.any(String));
    expect(msg?.receivedAt).toBeLessThanOrEqual(Date.now());
    expect(msg?.user).toBeUndefined();
    expect(mx.connections).toBe(1);
  });

  it('keeps bare LF, bare CR and 8-bit bytes in raw exactly as sent', async () => {
    const mx = await sink();
    const c = await dial(mx.port);
    await c.read();
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<a@sender.test>');
    await c.command('RCPT TO:<b@mx.test>');
    await c.command('DATA');
    const body = Buffer.from('Subject: raw\r\n\r\nbare\nlf and bare\rcr \u00e9\u0000\r\n', 'latin1');
    c.send(Buffer.concat([body, Buffer.from('.\r\n')]));
    expect(await c.read()).toMatch(/^250 /);
    expect((await mx.waitFor(1))[0]?.raw).toEqual(body);
  });

  it('records the null sender as ""', async () => {
    const mx = await sink();
    const c = await dial(mx.port);
    await c.read();
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<>');
    await c.command('RCPT TO:<postmaster@mx.test>');
    await c.command('DATA');
    expect(await c.command('Subject: bounce\r\n\r\nbody\r\n.')).toMatch(/^250 /);
    expect((await mx.waitFor(1))[0]?.mailFrom).toBe('');
  });

  it('answers DATA with dataReply, and keeps only accepted messages', async () => {
    const mx = await sink();
    mx.setDataReply(() => ({ code: 451, message: '4.3.0 try later' }));
    const c = await dial(mx.port);
    await c.read();
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<a@sender.test>');
    await c.command('RCPT TO:<b@mx.test>');
    await c.command('DATA');
    expect(await c.command('Subject: x\r\n\r\nx\r\n.')).toBe('451 4.3.0 try later');
    expect(mx.messages).toEqual([]);

    mx.setDataReply(undefined);
    mx.setRcptReply(() => ({ code: 452, message: '4.2.2 mailbox full' }));
    await c.command('MAIL FROM:<a@sender.test>');
    expect(await c.command('RCPT TO:<b@mx.test>')).toBe('452 4.2.2 mailbox full');
    mx.setRcptReply(undefined);
    expect(await c.command('RCPT TO:<b@mx.test>')).toMatch(/^250 /);
    await c.command('DATA');
    expect(await c.command('Subject: x\r\n\r\nx\r\n.')).toMatch(/^250 /);
    expect(mx.messages).toHaveLength(1);
  });

  it('waitFor() resolves on arrival and times out with a count', async () => {
    const mx = await sink();
    await expect(mx.waitFor(1, 100)).rejects.toThrow(/0 of 1 messages after 100 ms/);
    const pending = mx.waitFor(2, 5000);
    for (let i = 0; i < 2; i++) {
      const c = await dial(mx.port);
      await c.read();
      // Pipelined: the replies come back in order and are buffered.
      c.send('EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n');
      for (const code of ['250', '250', '250', '354']) expect((await c.read()).slice(0, 3)).toBe(code);
      expect(await c.command(`Subject: ${i}\r\n\r\n.`)).toMatch(/^250 /);
    }
    expect((await pending).map((m) => m.headers)).toEqual(['Subject: 0\r\n', 'Subject: 1\r\n']);
    expect(mx.connections).toBe(2);
  });

  it('offers STARTTLS with a certificate from makeCertificate and records the TLS session', async () => {
    const mx = await sink({ tls: makeCertificate(), hostname: 'mx.test', authUsers: { alice: 'pw' } });
    const c = await dial(mx.port);
    await c.read();
    const ehlo = await c.command('EHLO client.test');
    expect(ehlo).toMatch(/^250[- ]STARTTLS$/m);
    // smtp-server advertises AUTH before TLS too, but refuses it until STARTTLS when TLS is on offer.
    expect(await c.command(`AUTH PLAIN ${Buffer.from('\0alice\0pw').toString('base64')}`)).toMatch(/^538 /);
    expect(await c.command('STARTTLS')).toMatch(/^220 /);
    await c.startTls('mx.test');
    const secureEhlo = await c.command('EHLO client.test');
    expect(secureEhlo).not.toContain('STARTTLS');
    expect(secureEhlo).toMatch(/^250[- ]AUTH LOGIN PLAIN$/m);
    const badAuth = await c.command(`AUTH PLAIN ${Buffer.from('\0alice\0nope').toString('base64')}`);
    expect(badAuth).toMatch(/^535 /);
    expect(await c.command(`AUTH PLAIN ${Buffer.from('\0alice\0pw').toString('base64')}`)).toMatch(/^235 /);
    await c.command('MAIL FROM:<alice@sender.test>');
    await c.command('RCPT TO:<bob@mx.test>');
    await c.command('DATA');
    expect(await c.command('Subject: tls\r\n\r\nsecret\r\n.')).toMatch(/^250 /);
    const [msg] = await mx.waitFor(1);
    expect(msg).toMatchObject({ secure: true, servername: 'mx.test', user: 'alice' });
    expect(c.transcript).toContain('C: <TLS handshake done>');
  });

  it('gives one DATA reply per recipient in LMTP mode', async () => {
    const lmtp = await sink({
      lmtp: true,
      hostname: 'lmtp.test',
      dataReply: (_msg, rcpt) => {
        if (rcpt === 'full@mx.test') return { code: 452, message: '4.2.2 mailbox full' };
        if (rcpt === 'gone@mx.test') return { code: 550, message: '5.1.1 gone' };
        return undefined;
      },
    });
    const c = await dial(lmtp.port);
    expect(await c.read()).toMatch(/^220 lmtp\.test LMTP/);
    expect(await c.command('EHLO client.test')).toMatch(/^500 /);
    expect(await c.command('LHLO client.test')).toMatch(/^250-lmtp\.test/);
    await c.command('MAIL FROM:<a@sender.test>');
    for (const rcpt of ['ok@mx.test', 'full@mx.test', 'gone@mx.test']) {
      expect(await c.command(`RCPT TO:<${rcpt}>`)).toMatch(/^250 /);
    }
    expect(await c.command('DATA')).toMatch(/^354 /);
    c.send('Subject: lmtp\r\n\r\nhi\r\n.\r\n');
    const replies = [await c.read(), await c.read(), await c.read()];
    expect(replies).toEqual(['250 OK: message accepted', '452 4.2.2 mailbox full', '550 5.1.1 gone']);
    const [msg] = await lmtp.waitFor(1);
    expect(msg?.rcptTo).toEqual(['ok@mx.test', 'full@mx.test', 'gone@mx.test']);
    expect(msg?.accepted).toEqual(['ok@mx.test']);
  });

  it('refuses a message over the size limit with 552', async () => {
    const mx = await sink({ size: 100 });
    const c = await dial(mx.port);
    await c.read();
    expect(await c.command('EHLO client.test')).toMatch(/^250[- ]SIZE 100$/m);
    await c.command('MAIL FROM:<a@sender.test>');
    await c.command('RCPT TO:<b@mx.test>');
    await c.command('DATA');
    expect(await c.command(`Subject: big\r\n\r\n${'x'.repeat(200)}\r\n.`)).toMatch(/^552 /);
    expect(mx.messages).toEqual([]);
  });

  it('hides extensions on request', async () => {
    const mx = await sink({ hidePIPELINING: true, hide8BITMIME: true, hideSMTPUTF8: true });
    const c = await dial(mx.port);
    await c.read();
    const ehlo = await c.command('EHLO client.test');
    expect(ehlo).not.toMatch(/PIPELINING|8BITMIME|SMTPUTF8/);
  });

  it('survives a client that resets its connection mid-session', async () => {
    const mx = await sink();
    const c = await dial(mx.port);
    await c.read();
    c.send('EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n');
    c.close();
    await c.closed;
    const d = await dial(mx.port);
    expect(await d.read()).toMatch(/^220 /);
  });
});

describe('makeCertificate', () => {
  it('makes a self-signed certificate for the names and 127.0.0.1, cached per name list', () => {
    const pair = makeCertificate(['mx.example.test', 'mx2.example.test']);
    const cert = new X509Certificate(pair.cert);
    expect(cert.subjectAltName).toBe('DNS:mx.example.test, DNS:mx2.example.test, IP Address:127.0.0.1');
    expect(cert.subject).toBe('CN=mx.example.test');
    expect(cert.checkPrivateKey(createPrivateKey(pair.key))).toBe(true);
    expect(makeCertificate(['mx.example.test', 'mx2.example.test'])).toBe(pair);
    expect(new X509Certificate(makeCertificate().cert).subjectAltName).toBe(
      'DNS:localhost, DNS:mx.test, IP Address:127.0.0.1',
    );
  });
});
