// VERP return paths: signed, short, verifiable; and the deliverer's one transaction per recipient
// with them, seen by a real receiving server.
import { type SmtpSink, startSmtpSink } from '@tern/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createDeliverer,
  type Deliverer,
  recipientTag,
  returnPathFor,
  verifyReturnPath,
} from '../src/index.js';
import { makeJob, SIMPLE_MESSAGE, storedMessage } from './helpers/jobs.js';

const verp = { domain: 'Bounce.Example.test', secret: 'a secret of some length' };
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A receiving server, and a deliverer with VERP on that sends everything there. */
async function verpTo(
  options: Parameters<typeof startSmtpSink>[0] = {},
): Promise<{ sink: SmtpSink; d: Deliverer }> {
  const sink = await startSmtpSink(options);
  cleanups.push(() => sink.stop());
  const d = createDeliverer({
    hostname: 'out.tern.test',
    routes: { '*': { type: 'smtp', host: '127.0.0.1', port: sink.port } },
    returnPath: verp,
  });
  cleanups.push(() => d.close());
  return { sink, d };
}

describe('signed return paths', () => {
  it('names the message and a keyed hash of the recipient, under 64 characters, and verifies', () => {
    const address = returnPathFor(verp, 'MF0K2X9AA0C4E1F2A3B4C5', 'Someone@Dest.test');
    expect(address).toMatch(/^b\+mf0k2x9aa0c4e1f2a3b4c5\.[a-z2-7]{6}\.[a-z2-7]{10}@bounce\.example\.test$/);
    expect(address.split('@')[0]?.length).toBeLessThanOrEqual(64);
    expect(address).not.toContain('someone');
    expect(verifyReturnPath(verp, address)).toEqual({
      queueId: 'MF0K2X9AA0C4E1F2A3B4C5',
      tag: recipientTag(verp.secret, 'someone@dest.test'),
    });
    // Case folded by a remote MTA on the way back still verifies.
    expect(verifyReturnPath(verp, address.toUpperCase())?.queueId).toBe('MF0K2X9AA0C4E1F2A3B4C5');
  });

  it('refuses forged, altered, unsigned and foreign addresses', () => {
    const good = returnPathFor(verp, 'MF0K2X9AA0C4E1F2A3B4C5', 'someone@dest.test');
    const [local, domain] = good.split('@') as [string, string];
    const parts = local.split('.');
    const otherId = `b+mf0k2x9aa0c4e1f2a3b4c6.${parts[1]}.${parts[2]}@${domain}`;
    const otherTag = `${parts[0]}.aaaaaa.${parts[2]}@${domain}`;
    const wrongKey = returnPathFor(
      { ...verp, secret: 'another secret entirely' },
      'MF0K2X9AA0C4E1F2A3B4C5',
      'x@y.test',
    );
    for (const forged of [
      otherId,
      otherTag,
      wrongKey,
      `b+mf0k2x9aa0c4e1f2a3b4c5@${domain}`,
      `postmaster@${domain}`,
      `${local}@other.test`,
      `${local}.extra@${domain}`,
      '',
    ]) {
      expect(verifyReturnPath(verp, forged), forged).toBeUndefined();
    }
  });

  it('sends one transaction per recipient, each with its own return path, on one connection', async () => {
    const { sink, d } = await verpTo({
      rcptReply: (a) => (a.startsWith('gone') ? { code: 550, message: '5.1.1 No such user' } : undefined),
    });
    const job = makeJob(['a@x.test', 'gone@x.test', 'b@x.test']);
    const report = await d.deliver(job, storedMessage(SIMPLE_MESSAGE));
    expect(report.recipients.map((r) => [r.address, r.result])).toEqual([
      ['a@x.test', 'delivered'],
      ['gone@x.test', 'failed'],
      ['b@x.test', 'delivered'],
    ]);
    const got = await sink.waitFor(2);
    expect(got.map((m) => m.rcptTo)).toEqual([['a@x.test'], ['b@x.test']]);
    for (const m of got) {
      const token = verifyReturnPath(verp, m.mailFrom);
      expect(token?.queueId).toBe(job.queueId.toUpperCase());
      expect(token?.tag).toBe(recipientTag(verp.secret, m.rcptTo[0] as string));
    }
    expect(new Set(got.map((m) => m.sessionId)).size).toBe(1);
  });

  it('leaves <> (notices) alone', async () => {
    const { sink, d } = await verpTo();
    await d.deliver(makeJob(['a@x.test', 'b@x.test'], { mailFrom: '' }), storedMessage(SIMPLE_MESSAGE));
    const [m] = await sink.waitFor(1);
    expect(m?.mailFrom).toBe('');
    expect(m?.rcptTo).toEqual(['a@x.test', 'b@x.test']);
  });
});
