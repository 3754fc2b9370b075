// Delivery alone, without intake or a queue: the built deliverer sends BENCH_MESSAGES 2 KiB messages
// to Postfix's smtp-sink, BENCH_CONCURRENCY (20) at a time over reused connections, after
// BENCH_WARMUP messages, and prints this process's CPU µs per message (user and system). For A/B,
// give another tree's root: `node packages/delivery/bench/deliver-only.js /tmp/base`. Needs smtp-sink.
import { spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

const root = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '../../..');
const messages = Number(process.env.BENCH_MESSAGES ?? 20000);
const warmup = Number(process.env.BENCH_WARMUP ?? 5000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);
const { createDeliverer } = await import(join(root, 'packages/delivery/dist/index.js'));

const port = await new Promise((resolve) => {
  const probe = createServer().listen(0, '127.0.0.1', () => {
    const { port } = probe.address();
    probe.close(() => resolve(port));
  });
});
const sink = spawn('smtp-sink', ['-u', 'nobody', `127.0.0.1:${port}`, '1000'], { stdio: 'ignore' });
await new Promise((resolve) => {
  const attempt = () =>
    connect(port, '127.0.0.1')
      .once('connect', function () {
        this.destroy();
        resolve();
      })
      .once('error', () => setTimeout(attempt, 50));
  attempt();
});

const deliverer = createDeliverer({
  hostname: 'bench.tern.test',
  routes: { '*': { type: 'smtp', host: '127.0.0.1', port, tls: 'none' } },
});
const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n';
const body = Buffer.from(
  `From: a@origin.test\r\nTo: b@example.net\r\nSubject: bench\r\nMessage-ID: <x@origin.test>\r\n\r\n${line.repeat(26)}`,
);
let id = 0;
const job = () => {
  id++;
  return {
    id: `j${id}`,
    queueId: `Q${id}`,
    domain: 'example.net',
    envelope: { mailFrom: 'a@origin.test', recipients: [{ address: 'b@example.net' }] },
    recipients: [{ address: 'b@example.net', status: 'pending' }],
    attempts: 0,
    createdAt: Date.now(),
    isBounce: false,
    size: body.length,
    eightBit: false,
  };
};
const message = async () => Readable.from([body]);

/** Delivers `count` messages, `concurrency` at a time; returns how many were not delivered. */
async function run(count) {
  let started = 0;
  let failed = 0;
  const lane = async () => {
    while (started < count) {
      started++;
      const report = await deliverer.deliver(job(), message);
      if (report.recipients[0]?.result !== 'delivered') failed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return failed;
}

await run(warmup);
const before = process.cpuUsage();
const failed = await run(messages);
const cpu = process.cpuUsage(before);
console.log(
  JSON.stringify({
    root,
    messages,
    cpuUsPerMessage: Number(((cpu.user + cpu.system) / messages).toFixed(1)),
    userUs: Number((cpu.user / messages).toFixed(1)),
    systemUs: Number((cpu.system / messages).toFixed(1)),
    failed,
  }),
);
await deliverer.close();
sink.kill();
