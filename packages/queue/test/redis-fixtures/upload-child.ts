// Enqueues a 64 MiB spooled message into a Redis queue whose body stops after 8 MiB, prints
// `stalled` and waits, so the parent can SIGKILL it between the slices and the commit.

import { openRedisQueue } from '../../src/redis/index.js';
import { bigIncoming, MIB, stallingSource } from '../body-fixtures.js';

const [url, prefix, engine] = process.argv.slice(2);
const queue = await openRedisQueue({
  url: url as string,
  prefix: prefix as string,
  engine: engine === 'tern' ? 'tern' : 'bullmq',
});
void queue.enqueue(bigIncoming(stallingSource(64 * MIB, 8 * MIB, () => console.log('stalled'))));
