// node bench/dkim-sign.js: what DKIM signing alone costs per message, no SMTP. signMessage with
// one RSA-2048 key over a 2 KiB message, BENCH_CONCURRENCY (20) at once, BENCH_MESSAGES (5000)
// after 2000 not measured. Prints the rate, the event loop's CPU per message (the main thread's
// utime+stime), every thread's CPU per message, and how often per message the main thread was
// preempted (nonvoluntary context switches). BENCH_DKIM='{"signingThreads":2,"signingNice":10}'
// signs on the plugin's worker threads instead of libuv's pool. Needs a build (npx turbo run build).
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './lib.js';

const messages = Number(process.env.BENCH_MESSAGES ?? 5000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);
const extra = JSON.parse(process.env.BENCH_DKIM ?? '{}');
const { signMessage } = await import(join(root, 'packages/plugin-dkim/dist/index.js'));
const { loadDkimSettings } = await import(join(root, 'packages/plugin-dkim/dist/options.js'));
const { SignerPool } = await import(join(root, 'packages/plugin-dkim/dist/signer.js'));
const { MessageContent } = await import(join(root, 'packages/plugin-api/dist/testing/index.js'));

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const key = privateKey.export({ type: 'pkcs8', format: 'pem' });
const loaded = loadDkimSettings({ ...extra, fallback: { domain: 'example.com', selector: 'bench', key } });
// As the plugin does it (plugin.ts): worker threads only when asked for.
const pool =
  loaded.signingThreads === 0
    ? undefined
    : new SignerPool({ threads: loaded.signingThreads, queueLimit: 256, nice: loaded.signingNice });
const settings = pool === undefined ? loaded : { ...loaded, signer: pool.sign };

const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n';
const raw =
  'From: <a@example.com>\r\nTo: <b@example.net>\r\nSubject: bench\r\n' +
  'Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n' +
  `Content-Type: text/plain\r\n\r\n${line.repeat(Math.ceil(2048 / line.length))}`;

const self = `/proc/${process.pid}/task/${process.pid}`;
const mainCpuMs = () => {
  const fields = readFileSync(`${self}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
};
const preempted = () =>
  Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`${self}/status`, 'utf8'))[1]);
const allCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function run(count) {
  let started = 0;
  const session = async () => {
    while (started < count) {
      started++;
      await signMessage(MessageContent.parse(raw), loaded.fallback, settings);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, session));
}

await run(2000);
const before = { main: mainCpuMs(), all: allCpuMs(), preempted: preempted(), at: performance.now() };
await run(messages);
const ms = performance.now() - before.at;
console.log(
  `${messages} messages, ${concurrency} at once, ${JSON.stringify(extra)}: ${((messages / ms) * 1000).toFixed(0)} msg/s, ` +
    `event loop ${((mainCpuMs() - before.main) / messages).toFixed(3)} ms/msg, ` +
    `all threads ${((allCpuMs() - before.all) / messages).toFixed(3)} ms/msg, ` +
    `main thread preempted ${((preempted() - before.preempted) / messages).toFixed(2)}/msg`,
);
await pool?.close();
