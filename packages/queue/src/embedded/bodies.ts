// Message bodies in the embedded store: a small one inline in `messages.body` (written with its
// message in one transaction), a large one as slices in `body_parts`. Read back one slice at a
// time, so delivering, exporting or quoting a 50 MiB message never loads it whole.
import { Readable } from 'node:stream';
import { memoryStream } from '@tern/plugin-api/host';
import type Database from 'better-sqlite3';

interface StoredMessage {
  parts: number;
  /** The whole body when `parts` is 0; empty otherwise. */
  body: Buffer;
}

export class StoredBodies {
  readonly #sql: ReturnType<typeof prepare>;

  constructor(db: Database.Database) {
    this.#sql = prepare(db);
  }

  /** Writes one slice of a body whose message row is not written yet (the caller holds the transaction). */
  writePart(queueId: string, seq: number, data: Buffer): void {
    this.#sql.insertPart.run(queueId, seq, data);
  }

  /** Removes the slices of a message that will never be written (its enqueue failed). */
  removeParts(queueId: string): void {
    this.#sql.deleteParts.run(queueId);
  }

  /**
   * Removes slices that no message owns: left by a crash or a failed write between the slices and
   * the message's commit. `uploading`: queue ids whose slices are being written now, kept.
   */
  removeOrphans(uploading: ReadonlySet<string>): number {
    return this.#sql.deleteOrphans.run(JSON.stringify([...uploading])).changes;
  }

  /** The stored message as a stream of slices, or null when it is not (or no longer) stored. */
  open(queueId: string): Readable | null {
    const message = this.#sql.message.get(queueId) as StoredMessage | undefined;
    if (message === undefined) return null;
    if (message.parts === 0) return memoryStream([message.body]);
    return Readable.from(this.#slices(queueId, message.parts), { objectMode: false });
  }

  /** The whole stored message in one buffer (operators, tests), or null. */
  read(queueId: string): Buffer | null {
    const message = this.#sql.message.get(queueId) as StoredMessage | undefined;
    if (message === undefined) return null;
    if (message.parts === 0) return message.body;
    return Buffer.concat([...this.#slices(queueId, message.parts)]);
  }

  /** The first `limit` bytes of the stored message (enough for its header block), or null. */
  head(queueId: string, limit: number): Buffer | null {
    const inline = this.#sql.head.get(limit, queueId) as { parts: number; head: Buffer } | undefined;
    if (inline === undefined) return null;
    if (inline.parts === 0) return inline.head;
    const pieces: Buffer[] = [];
    let size = 0;
    for (let seq = 0; seq < inline.parts && size < limit; seq++) {
      const part = this.#sql.partHead.get(limit - size, queueId, seq) as { head: Buffer } | undefined;
      if (part === undefined) break;
      pieces.push(part.head);
      size += part.head.length;
    }
    return Buffer.concat(pieces, size);
  }

  *#slices(queueId: string, parts: number): Generator<Buffer, void, undefined> {
    for (let seq = 0; seq < parts; seq++) {
      // Read when the stream asks for more: one slice in memory at a time.
      const part = this.#sql.part.get(queueId, seq) as { data: Buffer } | undefined;
      if (part === undefined) throw new Error(`message ${queueId} is no longer in the queue`);
      yield part.data;
    }
  }
}

function prepare(db: Database.Database) {
  return {
    insertPart: db.prepare('INSERT INTO body_parts (queue_id, seq, data) VALUES (?, ?, ?)'),
    deleteParts: db.prepare('DELETE FROM body_parts WHERE queue_id = ?'),
    deleteOrphans: db.prepare(
      `DELETE FROM body_parts WHERE queue_id NOT IN (SELECT queue_id FROM messages)
         AND queue_id NOT IN (SELECT value FROM json_each(?))`,
    ),
    message: db.prepare('SELECT parts, body FROM messages WHERE queue_id = ?'),
    head: db.prepare('SELECT parts, substr(body, 1, ?) AS head FROM messages WHERE queue_id = ?'),
    part: db.prepare('SELECT data FROM body_parts WHERE queue_id = ? AND seq = ?'),
    partHead: db.prepare('SELECT substr(data, 1, ?) AS head FROM body_parts WHERE queue_id = ? AND seq = ?'),
  };
}
