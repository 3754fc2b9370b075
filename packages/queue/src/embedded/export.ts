// Moving mail out of an embedded store: every unfinished message with the recipients still to
// deliver, as JSON lines that `importQueue` enqueues into any backend (Redis, another store).
import { once } from 'node:events';
import {
  closeSync,
  createReadStream,
  createWriteStream,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { type Envelope, TernError } from '@tern/plugin-api';
import { memorySource } from '@tern/plugin-api/host';
import type { IncomingMessage, QueueBackend, RecipientState } from '../contract.js';
import { StoredBodies } from './bodies.js';
import { closeStore, JOBS_OF, jobsOf, openStore } from './store.js';

/** One line of an export file. */
export interface ExportedMessage {
  /** The format of this line; importers refuse versions they do not know. */
  readonly version: 1;
  /** The id in the store it came from (the importing backend gives a new one). */
  readonly queueId: string;
  /** As accepted, except `recipients`: only those not yet delivered or failed. */
  readonly envelope: Envelope;
  /** When the message was first accepted: the retry lifetime keeps counting from here. */
  readonly receivedAt: number;
  readonly messageId?: string;
  readonly source?: IncomingMessage['source'];
  readonly isBounce?: boolean;
  /** Some byte has the high bit set, as intake found (absent when it did not say). */
  readonly eightBit?: boolean;
  /** An operator held at least one of its jobs. */
  readonly held: boolean;
  /** The most attempts any of its jobs had made (informative: the new backend starts again at 0). */
  readonly attempts: number;
  /** The whole message, base64 (last in the line: the exporter streams it there slice by slice). */
  readonly body: string;
}

export interface ExportSummary {
  readonly messages: number;
  readonly recipients: number;
  readonly bytes: number;
}

/**
 * Writes every unfinished message of the store at `path` to the file `to`, one JSON line each.
 * Takes the store's lock, so the MTA using it must be stopped (the error says so). The store is
 * left as it was; `to` appears complete (written, fsynced, renamed) or not at all.
 */
export async function exportQueue(path: string, to: string): Promise<ExportSummary> {
  const db = openStore(path);
  const temporary = `${to}.partial`;
  let messages = 0;
  let recipients = 0;
  let bytes = 0;
  try {
    const ids = db
      .prepare('SELECT queue_id FROM messages ORDER BY created_at, queue_id')
      .pluck()
      .all() as string[];
    const message = db.prepare(
      'SELECT envelope, created_at, message_id, source, is_bounce, eight_bit FROM messages WHERE queue_id = ?',
    );
    const bodies = new StoredBodies(db);
    const jobs = db.prepare(
      `SELECT recipients, state, attempts FROM jobs WHERE ${JOBS_OF} AND state != 'done'`,
    );
    const out = createWriteStream(temporary, { mode: 0o600 });
    const closed = once(out, 'close');
    try {
      for (const queueId of ids) {
        const m = message.get(queueId) as
          | {
              envelope: string;
              created_at: number;
              message_id: string | null;
              source: string | null;
              is_bounce: number;
              eight_bit: number | null;
            }
          | undefined;
        const open = jobs.all(...jobsOf(queueId)) as {
          recipients: string;
          state: string;
          attempts: number;
        }[];
        if (!m || open.length === 0) continue;
        const pending = open.flatMap((j) =>
          (JSON.parse(j.recipients) as RecipientState[])
            .filter((r) => r.status === 'pending')
            .map(({ status, lastReply, remoteMta, ...r }) => r),
        );
        if (pending.length === 0) continue;
        const line: Omit<ExportedMessage, 'body'> = {
          version: 1,
          queueId,
          envelope: { ...(JSON.parse(m.envelope) as Envelope), recipients: pending },
          receivedAt: m.created_at,
          ...(m.message_id === null ? {} : { messageId: m.message_id }),
          ...(m.source === null ? {} : { source: JSON.parse(m.source) }),
          ...(m.is_bounce === 1 ? { isBounce: true } : {}),
          ...(m.eight_bit === null ? {} : { eightBit: m.eight_bit === 1 }),
          held: open.some((j) => j.state === 'held'),
          attempts: Math.max(...open.map((j) => j.attempts)),
        };
        // The body goes last, encoded as it is read: one slice of a large message in memory at a time.
        await write(out, `${JSON.stringify(line).slice(0, -1)},"body":"`);
        bytes += await writeBase64(out, bodies.open(queueId));
        await write(out, '"}\n');
        messages++;
        recipients += pending.length;
      }
    } finally {
      out.end();
      await closed;
    }
    // Durable before it replaces anything: the operator may delete the store next.
    const fd = openSync(temporary, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, to);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  } finally {
    closeStore(db);
  }
  return { messages, recipients, bytes };
}

async function write(out: Writable, text: string | Buffer): Promise<void> {
  if (!out.write(text)) await once(out, 'drain');
}

/** Writes the stream as base64, carrying up to two bytes between chunks; returns the bytes read. */
async function writeBase64(out: Writable, body: Readable | null): Promise<number> {
  let carry = Buffer.alloc(0);
  let bytes = 0;
  for await (const chunk of body ?? []) {
    const data = carry.length === 0 ? (chunk as Buffer) : Buffer.concat([carry, chunk as Buffer]);
    bytes += (chunk as Buffer).length;
    const whole = data.length - (data.length % 3);
    await write(out, data.subarray(0, whole).toString('base64'));
    carry = Buffer.from(data.subarray(whole));
  }
  if (carry.length > 0) await write(out, carry.toString('base64'));
  return bytes;
}

export interface ImportOptions {
  /** Lines to pass over first: the `imported` count of an earlier run that stopped part-way. */
  readonly skip?: number;
}

export interface ImportSummary {
  /** Messages enqueued by this run. */
  readonly imported: number;
  /** New queue ids of messages that were held in the old store (not held in the new one: hold them if wanted). */
  readonly held: readonly string[];
  /** Old queue id → new queue id. */
  readonly ids: ReadonlyMap<string, string>;
}

/** The import stopped at a line; `imported` lines before it are in the backend (rerun with `skip`). */
export class ImportError extends TernError {
  readonly line: number;
  readonly imported: number;
  constructor(source: string, line: number, imported: number, problem: string, cause?: unknown) {
    super(
      'TERN_ERR_QUEUE_IMPORT',
      `${source}:${line}: ${problem} (${imported} messages imported before it; ` +
        `fix the cause and import again with skip ${line - 1})`,
      { cause },
    );
    this.line = line;
    this.imported = imported;
  }
}

/**
 * Enqueues every message of an export file (or stream) into `backend`, in file order, each only
 * after the previous one is durable. Resolves with what was imported; rejects with an
 * {@link ImportError} that names the line when a line is malformed or the backend refuses it.
 */
export async function importQueue(
  from: string | Readable,
  backend: QueueBackend,
  options: ImportOptions = {},
): Promise<ImportSummary> {
  const source = typeof from === 'string' ? from : 'import stream';
  const input = typeof from === 'string' ? createReadStream(from) : from;
  const skip = options.skip ?? 0;
  const held: string[] = [];
  const ids = new Map<string, string>();
  let lineNo = 0;
  let imported = 0;
  for await (const text of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
    lineNo++;
    if (lineNo <= skip || text.trim() === '') continue;
    let message: ExportedMessage;
    try {
      message = parseLine(text);
    } catch (error) {
      throw new ImportError(source, lineNo, imported, (error as Error).message, error);
    }
    let queueId: string;
    try {
      queueId = await backend.enqueue({
        envelope: message.envelope,
        content: memorySource([Buffer.from(message.body, 'base64')]),
        receivedAt: message.receivedAt,
        ...(message.messageId === undefined ? {} : { messageId: message.messageId }),
        ...(message.source === undefined ? {} : { source: message.source }),
        ...(message.isBounce ? { isBounce: true } : {}),
        ...(typeof message.eightBit === 'boolean' ? { eightBit: message.eightBit } : {}),
      });
    } catch (error) {
      throw new ImportError(
        source,
        lineNo,
        imported,
        `the ${backend.kind} queue refused the message: ${(error as Error).message}`,
        error,
      );
    }
    imported++;
    ids.set(message.queueId, queueId);
    if (message.held) held.push(queueId);
  }
  return { imported, held, ids };
}

function parseLine(text: string): ExportedMessage {
  const value = JSON.parse(text) as Partial<ExportedMessage>;
  if (value.version !== 1) throw new Error(`unknown export version ${JSON.stringify(value.version)}`);
  const envelope = value.envelope;
  if (
    typeof value.queueId !== 'string' ||
    typeof value.body !== 'string' ||
    typeof value.receivedAt !== 'number' ||
    typeof envelope?.mailFrom !== 'string' ||
    !Array.isArray(envelope.recipients) ||
    envelope.recipients.length === 0 ||
    !envelope.recipients.every((r) => typeof r?.address === 'string')
  ) {
    throw new Error('not an exported message: needs queueId, envelope with recipients, receivedAt and body');
  }
  return value as ExportedMessage;
}
