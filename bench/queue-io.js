// node bench/queue-io.js: what a queue backend costs per message, without SMTP in the way: this
// process enqueues BENCH_MESSAGES (2000) messages of 2.3 KB, BENCH_CONCURRENCY (20) at a time (as
// 20 sessions would), to a worker that "delivers" each at once, and reports the disk bytes written
// per message (its own /proc/self/io write_bytes; with BENCH_BACKEND=redis, redis-server's) and
// CPU ms per message; for Redis also the commands per message (INFO commandstats of its own
// redis-server, commands inside Lua scripts included; BENCH_COMMANDS=1 lists them). The counts
// repeat from run to run, unlike rates on a shared machine. BENCH_CONCURRENCY=1 is the
// single-session case. BENCH_REDIS_ENGINE=tern|bullmq: the Redis job engine. Run `npx turbo run build` first.
//
// Embedded only: BENCH_FRAMES=1 also counts what one commit writes, from the WAL's frame headers
// (the last 600 frames; each is one page of the store plus 24 bytes; meant for BENCH_CONCURRENCY=1,
// as at 20 the last commits are the worker's draining batches), by the table or index that
// owns each page when the run ends (a page freed and reused meanwhile, as the previous message's
// body pages, counts for its last owner or as 'free'). BENCH_FLOOR=1 measures, on the same file
// system, what one message of the same size costs when it is the only thing a commit writes:
// appended to a plain file with fdatasync, and as the only row of a one-table SQLite store with
// the queue's settings (inserted, the previous one deleted, one commit each).
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  fdatasyncSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  benchMessage,
  commandDelta,
  cpuMs,
  instantDeliver,
  redisCommandStats,
  root,
  testkit,
  writeBytes as writeBytesOf,
} from './lib.js';

const { openEmbeddedQueue, openRedisQueue } = await import(join(root, 'packages/queue/dist/index.js'));
const { memorySource } = await import(join(root, 'packages/plugin-api/dist/host.js'));
const { default: Sqlite } = await import(join(root, 'node_modules/better-sqlite3/lib/index.js'));

const messages = Number(process.env.BENCH_MESSAGES ?? 2000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);
const backend = process.env.BENCH_BACKEND ?? 'embedded';
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

const message = (i) => benchMessage(memorySource, i);

const dir = mkdtempSync(join(tmpdir(), 'tern-queue-io-'));
let redis;
let redisPid;
let queue;
if (backend === 'redis') {
  redis = await testkit.startRedis({
    appendonly: true,
    appendfsync: 'everysec',
    maxmemoryPolicy: 'noeviction',
  });
  queue = await openRedisQueue({
    url: redis.url,
    ...(process.env.BENCH_REDIS_ENGINE === undefined ? {} : { engine: process.env.BENCH_REDIS_ENGINE }),
  });
  const info = spawnSync('redis-cli', ['-p', String(redis.port), 'INFO', 'server'], {
    encoding: 'utf8',
  }).stdout;
  redisPid = Number(/^process_id:(\d+)/m.exec(info)?.[1]);
} else {
  queue = openEmbeddedQueue({ path: join(dir, 'queue.db') });
}
const writeBytes = () => writeBytesOf(redisPid ?? process.pid);
let delivered = 0;
await queue.startWorker(
  instantDeliver(() => delivered++),
  { concurrency: 50 },
);

async function run(count) {
  let next = 0;
  const base = delivered;
  const session = async () => {
    while (next < count) {
      next++;
      await queue.enqueue(message(next));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, session));
  await testkit.waitFor(() => delivered - base >= count, 120_000, 5);
}

await run(200); // warm-up: JIT, pages
const bytes0 = writeBytes();
const commands0 = redis === undefined ? undefined : redisCommandStats(redis.port);
const cpu0 = cpu();
const redisCpu0 = redisPid === undefined ? 0 : cpuMs(redisPid);
const t0 = performance.now();
await run(messages);
// Whatever the queue still has to write for these messages (results written in batches).
await testkit.waitFor(async () => (await queue.summary()).totals.total === 0, 30_000, 5);
const ms = performance.now() - t0;
const bytes = writeBytes() - bytes0;
const redisCpu = redisPid === undefined ? undefined : cpuMs(redisPid) - redisCpu0;
const commands = commands0 === undefined ? undefined : commandDelta(commands0, redisCommandStats(redis.port));
const size = message(0).content.size;
if (backend === 'embedded' && process.env.BENCH_FRAMES === '1') {
  copyFileSync(join(dir, 'queue.db'), join(dir, 'copy.db'));
  copyFileSync(join(dir, 'queue.db-wal'), join(dir, 'copy.db-wal'));
}
await queue.close();
const frames = backend === 'embedded' && process.env.BENCH_FRAMES === '1' ? framesPerCommit(dir) : undefined;
const floor = process.env.BENCH_FLOOR === '1' ? diskFloor(dir, size) : undefined;
await redis?.stop();
rmSync(dir, { recursive: true, force: true });
if (commands !== undefined && process.env.BENCH_COMMANDS === '1') {
  for (const [name, n] of commands) console.log(`  ${(n / messages).toFixed(2).padStart(7)}  ${name}`);
}
const perMessage = commands?.reduce((sum, [, n]) => sum + n, 0) / messages;
console.log(
  `${backend} queue, ${messages} messages of ${size} bytes, ${concurrency} concurrent enqueues: ` +
    `${(bytes / messages).toFixed(0)} disk bytes/msg (${(bytes / messages / size).toFixed(1)}× the message), ` +
    `${((cpu() - cpu0) / messages).toFixed(3)} CPU ms/msg, ${((messages / ms) * 1000).toFixed(0)} msg/s` +
    (commands === undefined ? '' : `, ${perMessage.toFixed(1)} Redis commands/msg`) +
    (redisCpu === undefined ? '' : `, redis-server ${(redisCpu / messages).toFixed(3)} CPU ms/msg`),
);
if (frames !== undefined) {
  console.log(`  WAL frames per commit (last ${frames.commits} commits): ${frames.perCommit.toFixed(2)}`);
  for (const [owner, n] of frames.owners) console.log(`  ${n.toFixed(2).padStart(7)}  ${owner}`);
}
if (floor !== undefined) {
  console.log(
    `  floor for ${size} bytes, one commit each: ${floor.file.toFixed(0)} B appended to a file with fdatasync ` +
      `(${(floor.file / size).toFixed(1)}×), ${floor.sqlite.toFixed(0)} B as the only row of a one-table store ` +
      `(${(floor.sqlite / size).toFixed(1)}×)`,
  );
}

/** Frames per commit in the copied WAL, by the table or index owning each page (see the top). */
function framesPerCommit(at) {
  const wal = readFileSync(join(at, 'copy.db-wal'));
  const pageSize = wal.readUInt32BE(8);
  const salt = wal.subarray(16, 24);
  const pages = [];
  // Frames of the current WAL generation carry its header's salts; older ones follow after a reset.
  for (let off = 32; off + 24 + pageSize <= wal.length; off += 24 + pageSize) {
    if (!wal.subarray(off + 8, off + 16).equals(salt)) break;
    pages.push({ page: wal.readUInt32BE(off), commit: wal.readUInt32BE(off + 4) !== 0 });
  }
  const db = new Sqlite(join(at, 'copy.db'), { readonly: true });
  const owner = new Map(
    db
      .prepare('SELECT pageno, name, pagetype FROM dbstat')
      .all()
      .map((r) => [r.pageno, `${r.name} ${r.pagetype}`]),
  );
  db.close();
  const counts = new Map();
  let commits = 0;
  let started = false; // from the first commit boundary in the window on
  for (const { page, commit } of pages.slice(-600)) {
    if (started) {
      const name = page === 1 ? 'page 1 (header, free list)' : (owner.get(page) ?? 'free');
      counts.set(name, (counts.get(name) ?? 0) + 1);
      if (commit) commits++;
    }
    started ||= commit;
  }
  const owners = [...counts].map(([name, n]) => [name, n / commits]).sort((a, b) => b[1] - a[1]);
  return { commits, perCommit: owners.reduce((sum, [, n]) => sum + n, 0), owners };
}

/** Disk bytes per commit of a message alone (see the top): a file append and a one-table store. */
function diskFloor(at, bytes) {
  const data = Buffer.alloc(bytes, 'x');
  const count = 2000;
  const measure = (commit) => {
    for (let i = 0; i < 100; i++) commit(i);
    const before = writeBytes();
    for (let i = 100; i < 100 + count; i++) commit(i);
    return (writeBytes() - before) / count;
  };
  const fd = openSync(join(at, 'floor.log'), 'w');
  const file = measure(() => {
    writeSync(fd, data);
    fdatasyncSync(fd);
  });
  closeSync(fd);
  const db = new Sqlite(join(at, 'floor.db'));
  for (const pragma of [
    'locking_mode = EXCLUSIVE',
    'page_size = 512',
    'journal_mode = WAL',
    'synchronous = FULL',
  ]) {
    db.pragma(pragma);
  }
  db.pragma('wal_autocheckpoint = 16000');
  db.exec('CREATE TABLE m (id INTEGER PRIMARY KEY, body BLOB NOT NULL)');
  const insert = db.prepare('INSERT INTO m (id, body) VALUES (?, ?)');
  const remove = db.prepare('DELETE FROM m WHERE id = ?');
  const sqlite = measure(
    db.transaction((i) => {
      insert.run(i, data);
      remove.run(i - 1);
    }),
  );
  db.close();
  return { file, sqlite };
}
