// A deliver function that speaks real SMTP to a test's receiving server (the testkit's sink), for
// tests that need the path to the next hop without @tern/delivery (which depends on this package).
import type { SmtpReply } from '@tern/plugin-api';
import { smtpDialog } from '@tern/testkit';
import type { Deliver, RecipientOutcome } from '../src/contract.js';

function replyOf(line: string): SmtpReply {
  const last = line.split('\n').at(-1) ?? line;
  const code = Number(last.slice(0, 3));
  const text = last.slice(4);
  const enhanced = /^[245]\.\d{1,3}\.\d{1,3}/.exec(text)?.[0] ?? `${Math.floor(code / 100)}.0.0`;
  return { code, enhanced, text };
}

function resultOf(reply: SmtpReply): RecipientOutcome['result'] {
  return reply.code < 300 ? 'delivered' : reply.code < 500 ? 'deferred' : 'failed';
}

/** One SMTP transaction per attempt to 127.0.0.1:`port`; the DATA reply is every accepted recipient's. */
export function smtpDeliver(port: number, before: () => Promise<void> = async () => {}): Deliver {
  return async (job, open) => {
    await before();
    const c = await smtpDialog(port);
    try {
      await c.read();
      await c.command('EHLO tern.test');
      await c.command(`MAIL FROM:<${job.envelope.mailFrom}>`);
      const rcpt = new Map<string, SmtpReply>();
      for (const r of job.recipients) rcpt.set(r.address, replyOf(await c.command(`RCPT TO:<${r.address}>`)));
      let data: SmtpReply | undefined;
      if ([...rcpt.values()].some((reply) => reply.code < 300)) {
        await c.command('DATA');
        const chunks: Buffer[] = [];
        for await (const chunk of await open()) chunks.push(chunk as Buffer);
        // Test messages are small; dot-stuffing per RFC 5321 4.5.2.
        const text = Buffer.concat(chunks).toString('latin1').replace(/^\./gm, '..');
        c.send(Buffer.from(`${text}${text.endsWith('\r\n') ? '' : '\r\n'}.\r\n`, 'latin1'));
        data = replyOf(await c.read());
      }
      await c.command('QUIT').catch(() => '');
      return {
        recipients: job.recipients.map((r) => {
          const first = rcpt.get(r.address) as SmtpReply;
          const reply = first.code < 300 && data ? data : first;
          return { address: r.address, result: resultOf(reply), reply };
        }),
        remoteMta: `127.0.0.1[127.0.0.1]:${port}`,
      };
    } finally {
      c.close();
    }
  };
}
