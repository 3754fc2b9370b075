// Where the private-key operation runs (RSA-2048: 0.3–0.8 ms of CPU per signature). By default on
// libuv's thread pool (crypto.sign with a callback), shared with the embedded queue's fsync, file
// I/O and dns.lookup. `signingThreads` gives the plugin worker threads of its own instead, which
// keep that pool free and can run at a lower priority (nice), so intake is scheduled first; each
// signature then costs a postMessage each way, more event-loop CPU than queueing a crypto job
// (measured: 0.07–0.10 vs 0.05 ms per message), which is why they are not the default.
import { type KeyObject, sign } from 'node:crypto';
import { Worker } from 'node:worker_threads';

export interface SignerPoolOptions {
  /** Worker threads; each signs one message at a time. */
  readonly threads: number;
  /** Jobs waiting for a busy worker at most; past it a signature goes to libuv's pool instead. */
  readonly queueLimit: number;
  /** Added to the workers' nice value (Linux: per thread), so the event loop is served first. 0 leaves it. */
  readonly nice: number;
}

export interface SignerStats {
  /** Signatures made by the worker threads. */
  readonly signedInWorkers: number;
  /** Signatures made on libuv's pool: the queue was full, or a worker died with the job. */
  readonly fallbacks: number;
  /** Workers that exited while running (crashed or were terminated); each is replaced on demand. */
  readonly workerExits: number;
  /** Jobs waiting now, and the most seen waiting at once. */
  readonly queued: number;
  readonly maxQueued: number;
}

/** Signs `data` with `key`: 'sha256' for RSASSA-PKCS1-v1_5, null for Ed25519 (over the prehashed data). */
export type SignFunction = (algorithm: 'sha256' | null, data: Buffer, key: KeyObject) => Promise<Buffer>;

/** crypto.sign with a callback: the private-key operation runs on libuv's thread pool. */
export function signOnLibuvPool(algorithm: 'sha256' | null, data: Buffer, key: KeyObject): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    sign(algorithm, data, key, (error, signature) => (error ? reject(error) : resolve(signature)));
  });
}

// The worker: a CommonJS script run with `eval`, so it works the same from src (tests) and dist.
// It signs synchronously, on its own thread; keys arrive once per worker and stay by number.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { sign } = require('node:crypto');
if (workerData.nice !== 0) {
  // On Linux a nice value belongs to the thread: pid 0 is this worker's thread only.
  try { require('node:os').setPriority(0, workerData.nice); } catch {}
}
const keys = new Map();
parentPort.on('message', (job) => {
  if (job.key !== undefined) keys.set(job.keyId, job.key);
  let reply;
  try {
    reply = { id: job.id, signature: sign(job.algorithm, job.data, keys.get(job.keyId)) };
  } catch (error) {
    reply = { id: job.id, error: String(error && error.message ? error.message : error) };
  }
  parentPort.postMessage(reply);
});
`;

interface Job {
  readonly id: number;
  readonly algorithm: 'sha256' | null;
  readonly data: Buffer;
  readonly key: KeyObject;
  readonly resolve: (signature: Buffer) => void;
  readonly reject: (error: Error) => void;
}

interface Thread {
  readonly worker: Worker;
  /** Key numbers this worker already holds. */
  readonly keys: Set<number>;
  job: Job | undefined;
}

type Reply = { id: number; signature: Uint8Array } | { id: number; error: string };

export class SignerPool {
  readonly #options: SignerPoolOptions;
  readonly #threads: Thread[] = [];
  readonly #waiting: Job[] = [];
  readonly #keyIds = new WeakMap<KeyObject, number>();
  #nextKeyId = 0;
  #nextJobId = 0;
  #closed = false;
  #signedInWorkers = 0;
  #fallbacks = 0;
  #workerExits = 0;
  #maxQueued = 0;

  constructor(options: SignerPoolOptions) {
    if (!Number.isInteger(options.threads) || options.threads < 1)
      throw new RangeError('SignerPool: threads must be a whole number, at least 1');
    this.#options = options;
  }

  /** Signs on a worker thread; never fails for the pool's sake (full queue, dead worker): libuv's pool signs then. */
  readonly sign: SignFunction = (algorithm, data, key) => {
    if (this.#closed) return this.#fallback(algorithm, data, key);
    const idle = this.#idleThread();
    if (idle === undefined && this.#waiting.length >= this.#options.queueLimit)
      return this.#fallback(algorithm, data, key);
    return new Promise<Buffer>((resolve, reject) => {
      const job: Job = { id: this.#nextJobId++, algorithm, data, key, resolve, reject };
      if (idle !== undefined) this.#run(idle, job);
      else {
        this.#waiting.push(job);
        this.#maxQueued = Math.max(this.#maxQueued, this.#waiting.length);
      }
    });
  };

  stats(): SignerStats {
    return {
      signedInWorkers: this.#signedInWorkers,
      fallbacks: this.#fallbacks,
      workerExits: this.#workerExits,
      queued: this.#waiting.length,
      maxQueued: this.#maxQueued,
    };
  }

  /** The running workers (tests end one to see a job survive its worker). */
  workers(): Worker[] {
    return this.#threads.map((t) => t.worker);
  }

  /** Stops the workers; jobs still waiting or running are signed on libuv's pool. */
  async close(): Promise<void> {
    this.#closed = true;
    const threads = this.#threads.splice(0);
    for (const job of this.#waiting.splice(0)) this.#settleByFallback(job);
    await Promise.all(
      threads.map(async (t) => {
        const job = t.job;
        t.job = undefined;
        if (job) this.#settleByFallback(job);
        await t.worker.terminate();
      }),
    );
  }

  #idleThread(): Thread | undefined {
    const idle = this.#threads.find((t) => t.job === undefined);
    if (idle !== undefined) return idle;
    return this.#threads.length < this.#options.threads ? this.#spawn() : undefined;
  }

  #spawn(): Thread {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { nice: this.#options.nice } });
    const thread: Thread = { worker, keys: new Set(), job: undefined };
    worker.unref();
    worker.on('message', (reply: Reply) => this.#done(thread, reply));
    // An error event is followed by exit: the job is handled there.
    worker.on('error', () => {});
    worker.on('exit', () => this.#exited(thread));
    this.#threads.push(thread);
    return thread;
  }

  #run(thread: Thread, job: Job): void {
    thread.job = job;
    let keyId = this.#keyIds.get(job.key);
    if (keyId === undefined) {
      keyId = this.#nextKeyId++;
      this.#keyIds.set(job.key, keyId);
    }
    const send = thread.keys.has(keyId) ? undefined : job.key;
    thread.keys.add(keyId);
    // Referenced while it works, so a process with nothing else to do still waits for the signature.
    thread.worker.ref();
    thread.worker.postMessage({ id: job.id, keyId, key: send, algorithm: job.algorithm, data: job.data });
  }

  #done(thread: Thread, reply: Reply): void {
    const job = thread.job;
    if (job === undefined || job.id !== reply.id) return;
    thread.job = undefined;
    if ('error' in reply) job.reject(new Error(reply.error));
    else {
      this.#signedInWorkers++;
      const s = reply.signature;
      job.resolve(Buffer.from(s.buffer, s.byteOffset, s.byteLength));
    }
    this.#next(thread);
  }

  #next(thread: Thread): void {
    const job = this.#waiting.shift();
    if (job !== undefined) this.#run(thread, job);
    else thread.worker.unref();
  }

  /** A worker is gone (crashed, killed): its job is signed on libuv's pool; a new worker takes the queue. */
  #exited(thread: Thread): void {
    const index = this.#threads.indexOf(thread);
    if (index === -1) return; // closed
    this.#threads.splice(index, 1);
    this.#workerExits++;
    const job = thread.job;
    thread.job = undefined;
    if (job !== undefined) this.#settleByFallback(job);
    const waiting = this.#waiting.shift();
    if (waiting !== undefined) this.#run(this.#spawn(), waiting);
  }

  #settleByFallback(job: Job): void {
    this.#fallback(job.algorithm, job.data, job.key).then(job.resolve, job.reject);
  }

  #fallback(algorithm: 'sha256' | null, data: Buffer, key: KeyObject): Promise<Buffer> {
    this.#fallbacks++;
    return signOnLibuvPool(algorithm, data, key);
  }
}
