// Local delivery into Maildir folders (https://cr.yp.to/proto/maildir.html): write to tmp/,
// fsync, rename into new/, fsync the folder. A single box can then receive mail without a
// mailbox server; Dovecot and most IMAP servers read these folders as they are.
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { smtpReply, splitAddress } from '@tern/plugin-api';
import type { DeliveryJob, DeliveryReport, RecipientOutcome } from '@tern/queue';

let sequence = 0;

/** Maildir folder names come from local parts; anything that could escape the root is refused. */
const SAFE_MAILBOX = /^[a-z0-9][a-z0-9._+-]{0,63}$/;

export function mailboxName(address: string): string | undefined {
  const local = splitAddress(address).local.toLowerCase().split('+')[0] ?? '';
  return SAFE_MAILBOX.test(local) && !local.includes('..') ? local : undefined;
}

function uniqueName(): string {
  const now = Date.now();
  sequence += 1;
  const host = hostname().replace(/[/:]/g, '_');
  return `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}Q${sequence}R${randomBytes(4).toString('hex')}.${host}`;
}

/** Writes the message into `<root>/<mailbox>/new/` for each recipient; fsyncs before reporting delivered. */
export async function deliverToMaildir(
  root: string,
  job: DeliveryJob,
  message: () => Promise<Readable>,
): Promise<DeliveryReport> {
  const outcomes: RecipientOutcome[] = [];
  for (const recipient of job.recipients) {
    const mailbox = mailboxName(recipient.address);
    if (!mailbox) {
      outcomes.push({
        address: recipient.address,
        result: 'failed',
        reply: smtpReply(550, '5.1.1', 'Mailbox name not allowed for local delivery'),
      });
      continue;
    }
    try {
      await writeMaildirMessage(
        join(root, mailbox),
        job.envelope.mailFrom,
        recipient.address,
        await message(),
      );
      outcomes.push({
        address: recipient.address,
        result: 'delivered',
        reply: smtpReply(250, '2.0.0', `Delivered to maildir ${mailbox}`),
      });
    } catch {
      outcomes.push({
        address: recipient.address,
        result: 'deferred',
        reply: smtpReply(451, '4.3.0', 'Local mailbox temporarily unavailable'),
      });
    }
  }
  return { recipients: outcomes, hop: { type: 'maildir', path: root }, remoteMta: `maildir[${root}]` };
}

async function writeMaildirMessage(
  folder: string,
  mailFrom: string,
  rcpt: string,
  body: Readable,
): Promise<void> {
  await Promise.all(['tmp', 'new', 'cur'].map((d) => mkdir(join(folder, d), { recursive: true })));
  const name = uniqueName();
  const tmpPath = join(folder, 'tmp', name);
  const file = await open(tmpPath, 'wx', 0o600);
  try {
    // Local mailboxes use LF line ends, as Postfix's local delivery writes them.
    await file.write(`Return-Path: <${mailFrom}>\nDelivered-To: ${rcpt}\n`);
    let carry = '';
    for await (const chunk of body) {
      const text = carry + (chunk as Buffer).toString('latin1');
      // Keep a trailing CR for the next chunk so a CRLF split across chunks still folds to LF.
      carry = text.endsWith('\r') ? '\r' : '';
      await file.write(Buffer.from((carry ? text.slice(0, -1) : text).replace(/\r\n/g, '\n'), 'latin1'));
    }
    if (carry) await file.write(carry);
    await file.sync();
  } catch (error) {
    await file.close();
    await unlink(tmpPath).catch(() => {});
    throw error;
  }
  await file.close();
  await rename(tmpPath, join(folder, 'new', name));
  const dir = await open(join(folder, 'new'), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
