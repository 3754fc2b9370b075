// The log lines an operator greps, from a real tern process delivering over STARTTLS to a real
// receiving server: `queued` with the whole message's size, and one `delivered`, `deferred` or
// `bounced` line per recipient with what Postfix puts on its line.
import { makeCertificate, type SmtpSink, startSmtpSink, waitFor } from '@tern/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendMail } from './ops-fixtures/smtp.js';
import { type OpsTern, startOpsTern, stopAllOpsTern } from './ops-fixtures/tern.js';

let sink: SmtpSink;
let mta: OpsTern;

beforeAll(async () => {
  sink = await startSmtpSink({
    tls: makeCertificate(['localhost']),
    rcptReply: (address) =>
      address.startsWith('ghost')
        ? { code: 550, message: '5.1.1 No such user here' }
        : address.startsWith('later')
          ? { code: 451, message: '4.2.0 Mailbox busy, try later' }
          : undefined,
  });
  mta = await startOpsTern({
    localDomains: ['example.test'],
    delivery: {
      routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port, tls: 'opportunistic' } },
    },
    queue: { backend: 'embedded', retry: { intervals: ['1h'], maxAge: '1d' } },
  });
});

afterAll(async () => {
  await stopAllOpsTern();
  await sink?.stop();
});

/** The JSON log records tern wrote so far (pino, one object a line). */
function records(): Record<string, unknown>[] {
  return mta
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('delivery log lines', () => {
  it('logs queued with the full message size, then one line per recipient with relay, TLS, delays, DSN code and reply', async () => {
    const sent = await sendMail(mta.port, {
      from: 'alice@src.test',
      to: ['bob@dest.test', 'carol@dest.test', 'ghost@dest.test', 'later@dest.test'],
      subject: 'Log lines',
    });
    const of = (msg: string): Record<string, unknown>[] =>
      records().filter((r) => r.msg === msg && r.queueId === sent.queueId);
    await waitFor(() => of('bounced').length > 0 && of('deferred').length > 0, 10_000);

    // The size is the whole stored message (our Received header, the rest of the header block,
    // the empty line, the body): byte for byte what the next hop received.
    const [queued] = of('queued');
    const [received] = await sink.waitFor(1);
    expect(queued?.size).toBe(received?.raw.length);
    const { body: details } = await mta.api('GET', `/api/messages/${sent.queueId}`);
    expect(details.timeline[0]).toMatchObject({ type: 'received', size: queued?.size });

    const relay = `127.0.0.1[127.0.0.1]:${sink.port}`;
    const delays = /^\d+(\.\d+)?\/\d+(\.\d+)?\/\d+(\.\d+)?\/\d+(\.\d+)?$/;
    const common = {
      level: 'info',
      queueId: sent.queueId,
      domain: 'dest.test',
      attempt: 1,
      remoteMta: relay,
      tls: expect.stringMatching(/^TLSv1\.[23]$/),
      tlsCipher: expect.stringMatching(/^[A-Z0-9_-]+$/),
      delay: expect.any(Number),
      delays: expect.stringMatching(delays),
    };
    expect(of('delivered')).toEqual([
      expect.objectContaining({ ...common, recipient: 'bob@dest.test', code: 250, enhanced: '2.0.0' }),
      expect.objectContaining({ ...common, recipient: 'carol@dest.test', code: 250, enhanced: '2.0.0' }),
    ]);
    expect(of('delivered')[0]?.text).toMatch(/queued/);
    expect(of('deferred')).toEqual([
      expect.objectContaining({
        ...common,
        recipient: 'later@dest.test',
        code: 451,
        enhanced: '4.2.0',
        text: 'Mailbox busy, try later',
        retryAt: expect.any(String),
      }),
    ]);
    expect(of('bounced')).toEqual([
      expect.objectContaining({
        ...common,
        recipient: 'ghost@dest.test',
        code: 550,
        enhanced: '5.1.1',
        text: 'No such user here',
        reason: 'permanent',
        notice: expect.stringMatching(/^[0-9A-Z]{21}$/),
        bounceTo: 'alice@src.test',
      }),
    ]);
    // delays add up to delay (within the rounding of each part).
    const line = of('delivered')[0] as { delay: number; delays: string };
    const parts = line.delays.split('/').map(Number);
    expect(Math.abs(parts.reduce((a, b) => a + b, 0) - line.delay)).toBeLessThan(0.05);
  });
});
