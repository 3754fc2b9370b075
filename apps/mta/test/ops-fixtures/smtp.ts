// Sends one message over real SMTP, recording every reply, and returns the queue id from the 250.
import { smtpDialog } from '@tern/testkit';

export interface SentMessage {
  readonly queueId: string;
  readonly messageId: string;
  /** RCPT replies by address. */
  readonly rcpt: Readonly<Record<string, string>>;
}

export async function sendMail(
  port: number,
  message: { from: string; to: readonly string[]; subject: string; messageId?: string; helo?: string },
): Promise<SentMessage> {
  const messageId = message.messageId ?? `<${message.subject.replace(/\W+/g, '.')}.${Date.now()}@src.test>`;
  const smtp = await smtpDialog(port);
  try {
    const banner = await smtp.read();
    if (!banner.startsWith('220')) throw new Error(`banner: ${banner}`);
    await smtp.command(`EHLO ${message.helo ?? 'client.src.test'}`);
    const from = await smtp.command(`MAIL FROM:<${message.from}>`);
    if (!from.startsWith('250')) throw new Error(`MAIL FROM: ${from}`);
    const rcpt: Record<string, string> = {};
    for (const to of message.to) rcpt[to] = await smtp.command(`RCPT TO:<${to}>`);
    const data = await smtp.command('DATA');
    if (!data.startsWith('354')) throw new Error(`DATA: ${data} (RCPT: ${JSON.stringify(rcpt)})`);
    const body = [
      `From: <${message.from}>`,
      `To: ${message.to.join(', ')}`,
      `Subject: ${message.subject}`,
      `Message-ID: ${messageId}`,
      'Date: Sat, 28 Nov 2026 17:00:00 +0000',
      '',
      'A test message for the operations side.',
      '.',
      '',
    ].join('\r\n');
    const done = await smtp.command(body.slice(0, -2));
    const queueId = /queued as (\S+)/.exec(done)?.[1];
    if (!done.startsWith('250') || queueId === undefined) throw new Error(`end of DATA: ${done}`);
    await smtp.command('QUIT').catch(() => '');
    return { queueId, messageId, rcpt };
  } finally {
    smtp.close();
  }
}

/** Says MAIL FROM and RCPT TO for each recipient, from `localAddress`, and returns the RCPT replies (no DATA). */
export async function tryRecipients(
  port: number,
  message: { from: string; to: readonly string[]; localAddress: string },
): Promise<string[]> {
  const smtp = await smtpDialog(port, { localAddress: message.localAddress });
  try {
    await smtp.read();
    await smtp.command('EHLO stranger.test');
    await smtp.command(`MAIL FROM:<${message.from}>`);
    const replies: string[] = [];
    for (const to of message.to) replies.push(await smtp.command(`RCPT TO:<${to}>`));
    await smtp.command('QUIT').catch(() => '');
    return replies;
  } finally {
    smtp.close();
  }
}
