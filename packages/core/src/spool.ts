// Where message bodies wait while they are received and handed to the queue: in memory up to a
// per-message allowance and a process-wide budget, in a file of the spool folder beyond either.
// A 2 KiB message never touches the disk here; a 50 MiB one holds at most its allowance in memory.
import { createReadStream, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { type FileHandle, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TernError } from '@tern/plugin-api';
import { type ByteSource, memorySource } from '@tern/plugin-api/host';

const KIB = 1024;
const MIB = 1024 * KIB;

export interface SpoolOptions {
  /**
   * Folder for bodies that outgrow memory (created when first needed; default: `tern-spool` in
   * the system's temporary folder). `false`: never write bodies to disk; a message that would pass
   * the memory budget is refused with 451 4.3.1 instead.
   */
  readonly dir?: string | false;
  /** Bytes of one message's body kept in memory before the rest goes to a file (default 256 KiB). */
  readonly memoryPerMessage?: number;
  /**
   * Bytes every message being received may hold in memory together: bodies, header blocks and
   * write buffers (default 64 MiB). Past it, bodies go to disk (or are refused with `dir: false`).
   */
  readonly memoryBudget?: number;
}

export const SPOOL_DEFAULTS = {
  memoryPerMessage: 256 * KIB,
  memoryBudget: 64 * MIB,
} as const;

/** Bytes written to a spool file in one call at most (fewer, larger writes). */
const WRITE_BATCH = 256 * KIB;

/** The body could not be kept: the memory budget is used up and no spool file could be written. */
export class SpoolError extends TernError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TERN_ERR_SPOOL', message, options);
  }
}

/** A count of bytes that many holders share, with a ceiling. */
export class MemoryBudget {
  readonly limit: number;
  #used = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  get used(): number {
    return this.#used;
  }

  /** Takes `bytes` when they fit under the limit; false (and nothing taken) when they do not. */
  take(bytes: number): boolean {
    if (this.#used + bytes > this.limit) return false;
    this.#used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes);
  }
}

export interface SpoolStats {
  /** Bytes of messages being received held in memory now. */
  readonly memoryBytes: number;
  readonly memoryBudget: number;
  /** Messages whose body is in a spool file now. */
  readonly spooledMessages: number;
  /** Messages that went to a spool file since start. */
  readonly spilledTotal: number;
  /** Messages that could be kept neither in memory nor on disk since start. */
  readonly refusedTotal: number;
}

/** One per process: every listener's messages share its memory budget and folder. */
export class IntakeSpool {
  readonly budget: MemoryBudget;
  readonly dir: string | false;
  readonly memoryPerMessage: number;
  #ready: Promise<void> | undefined;
  #next = 0;
  #spooled = 0;
  #spilledTotal = 0;
  #refusedTotal = 0;

  constructor(options: SpoolOptions = {}) {
    this.dir = options.dir === undefined ? join(tmpdir(), 'tern-spool') : options.dir;
    this.memoryPerMessage = options.memoryPerMessage ?? SPOOL_DEFAULTS.memoryPerMessage;
    this.budget = new MemoryBudget(options.memoryBudget ?? SPOOL_DEFAULTS.memoryBudget);
  }

  /** A writer for one message's body. */
  open(): BodyWriter {
    return new BodyWriter(this);
  }

  stats(): SpoolStats {
    return {
      memoryBytes: this.budget.used,
      memoryBudget: this.budget.limit,
      spooledMessages: this.#spooled,
      spilledTotal: this.#spilledTotal,
      refusedTotal: this.#refusedTotal,
    };
  }

  /** @internal A new file path in the spool folder; the folder is made (and cleaned) once. */
  async fileFor(): Promise<string> {
    const dir = this.dir;
    if (dir === false) throw new SpoolError('no spool folder is configured');
    this.#ready ??= Promise.resolve().then(() => prepareDir(dir));
    await this.#ready;
    return join(dir, `${process.pid}-${Date.now().toString(36)}-${(this.#next++).toString(36)}.body`);
  }

  /** @internal */
  noteSpooled(delta: 1 | -1): void {
    this.#spooled += delta;
    if (delta === 1) this.#spilledTotal++;
  }

  /** @internal */
  noteRefused(): void {
    this.#refusedTotal++;
  }
}

/** Makes the folder, and removes files left by processes that are gone (a crash mid-message). */
function prepareDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const name of readdirSync(dir)) {
    const pid = Number(/^(\d+)-.*\.body$/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid || isAlive(pid)) continue;
    rmSync(join(dir, name), { force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Keeps one message's body as it arrives. `write` returns a promise only when it has to wait (a
 * file write), so the common in-memory path costs no microtask. Call `dispose` once the message
 * is durable in the queue, or refused: it frees the memory and deletes the file.
 */
export class BodyWriter {
  readonly #spool: IntakeSpool;
  #chunks: Buffer[] = [];
  /** Bytes of body this writer has taken from the budget (given back once they are in the file). */
  #held = 0;
  /** Bytes taken through `hold` (the header block), given back at `dispose`. */
  #extra = 0;
  #size = 0;
  #file: FileHandle | undefined;
  #path: string | undefined;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #disposed = false;

  constructor(spool: IntakeSpool) {
    this.#spool = spool;
  }

  get size(): number {
    return this.#size;
  }

  /** True once the body lives in a file. */
  get spilled(): boolean {
    return this.#path !== undefined;
  }

  /** Takes budget for bytes held elsewhere on this message's behalf (its header block). False when refused. */
  hold(bytes: number): boolean {
    if (!this.#spool.budget.take(bytes)) return false;
    this.#extra += bytes;
    return true;
  }

  write(chunk: Buffer): Promise<void> | undefined {
    if (chunk.length === 0) return undefined;
    this.#size += chunk.length;
    const budget = this.#spool.budget;
    if (this.#path === undefined) {
      if (this.#size <= this.#spool.memoryPerMessage && budget.take(chunk.length)) {
        this.#held += chunk.length;
        this.#chunks.push(chunk);
        return undefined;
      }
      return this.#spill(chunk);
    }
    // In a file already: batch small chunks into fewer writes while the budget allows.
    if (this.#pendingBytes + chunk.length <= WRITE_BATCH && budget.take(chunk.length)) {
      this.#held += chunk.length;
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
      if (this.#pendingBytes < WRITE_BATCH) return undefined;
      return this.#flush();
    }
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    return this.#flush();
  }

  /** The body, once every write has settled. The source stays valid until `dispose`. */
  async finish(): Promise<ByteSource> {
    if (this.#path === undefined) return memorySource(this.#chunks);
    await this.#flush();
    await this.#file?.close();
    this.#file = undefined;
    return fileSource(this.#path, this.#size);
  }

  /** Frees the memory and removes the file. Safe to call more than once. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#chunks = [];
    this.#pending = [];
    this.#spool.budget.give(this.#held + this.#extra);
    this.#held = 0;
    this.#extra = 0;
    const file = this.#file;
    this.#file = undefined;
    await file?.close().catch(() => {});
    if (this.#path !== undefined) {
      this.#spool.noteSpooled(-1);
      await rm(this.#path, { force: true }).catch(() => {});
    }
  }

  async #spill(chunk: Buffer): Promise<void> {
    const spool = this.#spool;
    if (spool.dir === false) {
      spool.noteRefused();
      throw new SpoolError('the intake memory budget is used up and spooling to disk is off');
    }
    try {
      const path = await spool.fileFor();
      this.#file = await open(path, 'wx', 0o600);
      this.#path = path;
      spool.noteSpooled(1);
    } catch (error) {
      spool.noteRefused();
      throw new SpoolError(`cannot create a spool file: ${(error as Error).message}`, { cause: error });
    }
    // What was held in memory goes first, then this chunk; the memory is given back once written.
    this.#pending = [...this.#chunks, ...this.#pending, chunk];
    this.#pendingBytes = this.#size;
    this.#chunks = [];
    await this.#flush();
  }

  async #flush(): Promise<void> {
    const file = this.#file;
    if (file === undefined || this.#pending.length === 0) return;
    const batch = this.#pending;
    const bytes = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    try {
      let written = 0;
      while (written < bytes) {
        const { bytesWritten } = await file.writev(written === 0 ? batch : remainder(batch, written));
        written += bytesWritten;
      }
    } catch (error) {
      this.#spool.noteRefused();
      throw new SpoolError(`cannot write the spool file: ${(error as Error).message}`, { cause: error });
    } finally {
      // Everything of this writer that was in memory is now in the file (or lost with an error).
      this.#spool.budget.give(this.#held);
      this.#held = 0;
    }
  }
}

/** The buffers of `batch` after its first `offset` bytes (a short writev). */
function remainder(batch: readonly Buffer[], offset: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = offset;
  for (const buffer of batch) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
    skip = 0;
  }
  return rest;
}

/** A body in a spool file: streamed in 64 KiB reads, never held whole. */
function fileSource(path: string, size: number): ByteSource {
  return {
    size,
    stream: () => createReadStream(path, { highWaterMark: 64 * KIB }),
    chunks: () => undefined,
  };
}
