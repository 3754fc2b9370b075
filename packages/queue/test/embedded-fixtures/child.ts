// A second process for the embedded queue tests, killed with SIGKILL by them. Run with
// `node --conditions=tern-source --import jiti/register child.ts <mode> <store path> [n]`.
//   enqueue <path> <n>  enqueue n messages, print `queued <id>` once each is acknowledged
//   hold <path>         open the store and keep it
//   hang <path>         start a worker whose delivery never finishes; print `delivering <queueId>`
//   open <path>         try to open the store; print `opened` or `refused <error message>`, exit
//   upload <path>       enqueue a 64 MiB spooled message whose body stops after 8 MiB; print `stalled`
import { openEmbeddedQueue } from '../../src/embedded/index.js';
import { bigIncoming, MIB, stallingSource } from '../body-fixtures.js';
import { testMessage } from './messages.js';

const [mode, path, count] = process.argv.slice(2);
if (!path) throw new Error('usage: child.ts <enqueue|hold|hang> <store path> [n]');

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
if (mode === 'open') {
  try {
    await openEmbeddedQueue({ path }).close();
    say('opened');
  } catch (error) {
    say(`refused ${(error as Error).message}`);
  }
  process.exit(0);
}
const queue = openEmbeddedQueue({ path });
// Keep the process alive until the test kills it.
setInterval(() => {}, 60_000);

if (mode === 'enqueue') {
  for (let i = 0; i < Number(count ?? 1); i++) {
    const id = await queue.enqueue(testMessage({ subject: `crash test ${i}` }));
    say(`queued ${id}`);
  }
  say('done');
} else if (mode === 'upload') {
  void queue.enqueue(bigIncoming(stallingSource(64 * MIB, 8 * MIB, () => say('stalled'))));
} else if (mode === 'hold') {
  say(`ready ${process.pid}`);
} else if (mode === 'hang') {
  await queue.startWorker(async (job) => {
    say(`delivering ${job.queueId}`);
    return new Promise(() => {});
  });
  say('ready');
} else {
  throw new Error(`unknown mode ${mode}`);
}
