// node bench/queue-ab.js BASE: CPU per message of this tree's embedded queue against another
// tree's (BASE: the root of a built copy, e.g. `git worktree add /tmp/base main && cd /tmp/base &&
// npm ci && npx turbo run build`), both in this one process, in alternating rounds of
// BENCH_MESSAGES (2000) messages enqueued BENCH_CONCURRENCY (20) at a time and delivered at once by
// a stand-in `deliver`, as bench/queue-io.js does. On a shared machine CPU counts drift with the
// load of the minute, run to run; rounds of the two trees side by side, in turns, see the same
// load and the same warm process, so their medians compare where separate runs do not.
// BENCH_ROUNDS (8) rounds each, after 2000 messages of warm-up each. Run `npx turbo run build` first.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { benchMessage, instantDeliver, root, testkit } from './lib.js';

const base = process.argv[2];
if (base === undefined) throw new Error('usage: node bench/queue-ab.js <root of the tree to compare with>');
const perRound = Number(process.env.BENCH_MESSAGES ?? 2000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);
const rounds = Number(process.env.BENCH_ROUNDS ?? 8);

/** An embedded queue of the tree at `treeRoot`, in a directory of its own, with a worker. */
async function open(treeRoot) {
  const { openEmbeddedQueue } = await import(join(treeRoot, 'packages/queue/dist/index.js'));
  const { memorySource } = await import(join(treeRoot, 'packages/plugin-api/dist/host.js'));
  const dir = mkdtempSync(join(tmpdir(), 'tern-queue-ab-'));
  const tree = { dir, delivered: 0, memorySource, queue: openEmbeddedQueue({ path: join(dir, 'queue.db') }) };
  await tree.queue.startWorker(
    instantDeliver(() => tree.delivered++),
    { concurrency: 50 },
  );
  return tree;
}

/** Enqueues `count` messages, `concurrency` at a time, and waits until they are all delivered and written. */
async function run(tree, count) {
  let next = 0;
  const delivered = tree.delivered + count;
  const session = async () => {
    while (next < count) {
      next++;
      await tree.queue.enqueue(benchMessage(tree.memorySource, next));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, session));
  await testkit.waitFor(
    async () => tree.delivered >= delivered && (await tree.queue.summary()).totals.total === 0,
    120_000,
    2,
  );
}

const processMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
/** The main thread's utime + stime (its event loop; clock ticks of 10 ms). */
const mainMs = () => {
  const fields = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
};

const trees = { base: await open(resolve(base)), this: await open(root) };
for (const tree of Object.values(trees)) await run(tree, 2000); // warm-up: JIT, pages
const results = { base: { cpu: [], main: [] }, this: { cpu: [], main: [] } };
for (let round = 0; round < rounds; round++) {
  // Each goes first in every other round.
  for (const name of round % 2 === 0 ? ['base', 'this'] : ['this', 'base']) {
    const [cpu0, main0] = [processMs(), mainMs()];
    await run(trees[name], perRound);
    results[name].cpu.push((processMs() - cpu0) / perRound);
    results[name].main.push((mainMs() - main0) / perRound);
  }
}
for (const tree of Object.values(trees)) {
  await tree.queue.close();
  rmSync(tree.dir, { recursive: true, force: true });
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
console.log(
  `embedded queue, ${rounds} rounds of ${perRound} messages each, ${concurrency} concurrent enqueues, alternating:`,
);
for (const [name, r] of Object.entries(results)) {
  console.log(
    `  ${name.padEnd(4)}  CPU ms/msg median ${median(r.cpu).toFixed(3)} (min ${Math.min(...r.cpu).toFixed(3)}), ` +
      `main thread median ${median(r.main).toFixed(3)} (min ${Math.min(...r.main).toFixed(3)})`,
  );
}
