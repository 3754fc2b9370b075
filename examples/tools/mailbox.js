#!/usr/bin/env node
// A stand-in mailbox server for trying the examples on one machine, where a smarthost or a Dovecot
// would be in production: it receives SMTP (or LMTP with --lmtp) on a local port and files each
// message it accepts as DIR/<recipient>/<time>-<n>.eml. It accepts every recipient, offers no TLS
// and no AUTH: never expose it.
//
//   node examples/tools/mailbox.js --listen 127.0.0.1:2626 --dir mailbox [--lmtp]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { SMTPServer } from 'smtp-server';

/** The largest message it takes (bytes); larger ones get 552. */
const MAX_MESSAGE_BYTES = 25 * 1024 * 1024;

const usage = 'usage: node mailbox.js --listen HOST:PORT --dir FOLDER [--lmtp]';
let args;
try {
  args = parseArgs({
    options: { listen: { type: 'string' }, dir: { type: 'string' }, lmtp: { type: 'boolean' } },
  }).values;
} catch (error) {
  console.error(`mailbox: ${error.message}\n${usage}`);
  process.exit(2);
}
const listen = /^(.+):(\d{1,5})$/.exec(args.listen ?? '');
if (!listen || args.dir === undefined) {
  console.error(`mailbox: --listen HOST:PORT and --dir FOLDER are required\n${usage}`);
  process.exit(2);
}
const [, host, port] = listen;
const dir = resolve(args.dir);
const protocol = args.lmtp ? 'LMTP' : 'SMTP';
let count = 0;

/** Where a recipient's messages go: its address, made safe as one folder name. */
function folderOf(address) {
  return join(dir, address.toLowerCase().replace(/[^a-z0-9@._+-]/g, '_'));
}

const server = new SMTPServer({
  lmtp: args.lmtp === true,
  name: 'mailbox.localhost',
  banner: `stand-in mailbox (${protocol}), not for production`,
  // No certificate: without these smtp-server would offer STARTTLS with its published test key.
  disabledCommands: ['STARTTLS', 'AUTH'],
  authOptional: true,
  disableReverseLookup: true,
  size: MAX_MESSAGE_BYTES,
  logger: false,
  onData(stream, session, callback) {
    const chunks = [];
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.once('error', callback);
    stream.once('end', () => {
      if (stream.sizeExceeded) {
        callback(Object.assign(new Error('5.3.4 Message too big'), { responseCode: 552 }));
        return;
      }
      const message = Buffer.concat(chunks);
      const recipients = session.envelope.rcptTo.map((r) => r.address);
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      for (const recipient of recipients) {
        const folder = folderOf(recipient);
        mkdirSync(folder, { recursive: true });
        count += 1;
        const file = join(folder, `${stamp}-${count}.eml`);
        writeFileSync(file, message);
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        console.log(`mailbox: <${from}> to <${recipient}>: ${file}`);
      }
      // LMTP answers each recipient on its own line.
      callback(null, args.lmtp ? recipients.map(() => 'Saved') : 'Saved');
    });
  },
});
// A client that resets its connection makes smtp-server emit 'error'; unhandled, it would end this process.
server.on('error', (error) => console.error(`mailbox: ${error.message}`));
server.server.once('error', (error) => {
  console.error(
    `mailbox: cannot listen on ${host}:${port}: ${error.code ?? error.message}` +
      (error.code === 'EADDRINUSE' ? ' (another process listens there: pick another port)' : ''),
  );
  process.exit(1);
});
server.listen(Number(port), host, () => {
  console.log(`mailbox: listening on ${host}:${port} (${protocol}), filing messages under ${dir}/`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => server.close(() => process.exit(0)));
}
