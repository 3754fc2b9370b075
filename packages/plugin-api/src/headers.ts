// An RFC 5322 header block that keeps each field's raw bytes, so signers and verifiers can
// canonicalize exactly what is sent, while plugins read and change fields by name.

/** One header field as it stands in the message (raw keeps folding; no trailing CRLF). */
export interface HeaderField {
  /** The field name as written. */
  readonly name: string;
  /** Lower-case name, for comparisons. */
  readonly key: string;
  /** The whole field `Name: value` with folding, without the final CRLF, as a byte string (one char per octet). */
  readonly raw: string;
}

// `raw` is a byte string: one char per octet (latin1), exactly what goes on the wire, so signers
// hash what is sent. Values cross into and out of it as UTF-8 text (RFC 6532 allows UTF-8).
const toBytes = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');
const fromBytes = (bytes: string): string => Buffer.from(bytes, 'latin1').toString('utf8');

/** The unfolded value of a field as text: continuation line breaks removed, outer space trimmed. */
export function unfoldValue(field: HeaderField): string {
  const colon = field.raw.indexOf(':');
  return fromBytes(
    field.raw
      .slice(colon + 1)
      .replace(/\r?\n(?=[ \t])/g, '')
      .trim(),
  );
}

const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;

export class Headers {
  #fields: HeaderField[];

  constructor(fields: HeaderField[] = []) {
    this.#fields = fields;
  }

  /**
   * Parses a header block (everything before the empty line). Accepts CRLF or LF line ends.
   * A line that is neither a field nor a continuation is kept as its own raw entry with an
   * empty name so that nothing in the message is silently dropped.
   */
  static parse(block: string | Buffer): Headers {
    const text = typeof block === 'string' ? toBytes(block) : block.toString('latin1');
    const fields: HeaderField[] = [];
    const lines = text.split(/\r?\n/);
    if (lines.at(-1) === '') lines.pop();
    for (const line of lines) {
      const last = fields.at(-1);
      if ((line.startsWith(' ') || line.startsWith('\t')) && last) {
        // Written out, not `{ ...last, raw }` (a property after a spread costs a hidden class on Node 20).
        fields[fields.length - 1] = { name: last.name, key: last.key, raw: `${last.raw}\r\n${line}` };
        continue;
      }
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon).trimEnd() : '';
      fields.push({ name, key: name.toLowerCase(), raw: line });
    }
    return new Headers(fields);
  }

  /** Every field in order (a copy: change the block through the methods). */
  fields(): HeaderField[] {
    return [...this.#fields];
  }

  get size(): number {
    return this.#fields.length;
  }

  has(name: string): boolean {
    const key = name.toLowerCase();
    return this.#fields.some((f) => f.key === key);
  }

  /** Unfolded values of every field with this name, top to bottom. */
  getAll(name: string): string[] {
    const key = name.toLowerCase();
    return this.#fields.filter((f) => f.key === key).map(unfoldValue);
  }

  /** The unfolded value of the first (topmost) field with this name. */
  get(name: string): string | undefined {
    const key = name.toLowerCase();
    const field = this.#fields.find((f) => f.key === key);
    return field ? unfoldValue(field) : undefined;
  }

  count(name: string): number {
    const key = name.toLowerCase();
    return this.#fields.reduce((n, f) => (f.key === key ? n + 1 : n), 0);
  }

  /**
   * Adds a field at the top, where trace fields (Received) and signatures belong: above every field,
   * but below folded lines that open the block (kept as entries of their own by parse), which would
   * otherwise read as a continuation of the new field and let a sender add to it.
   */
  prepend(name: string, value: string): void {
    const top = this.#fields.findIndex((f) => !f.raw.startsWith(' ') && !f.raw.startsWith('\t'));
    this.#fields.splice(top === -1 ? this.#fields.length : top, 0, makeField(name, value));
  }

  /** Adds a field at the bottom. */
  append(name: string, value: string): void {
    this.#fields.push(makeField(name, value));
  }

  /** Replaces the first field of this name (keeping its place) and removes the others; appends when absent. */
  set(name: string, value: string): void {
    const key = name.toLowerCase();
    const index = this.#fields.findIndex((f) => f.key === key);
    if (index === -1) {
      this.append(name, value);
      return;
    }
    this.#fields[index] = makeField(name, value);
    this.#fields = this.#fields.filter((f, i) => i === index || f.key !== key);
  }

  /** Removes fields of this name; with a predicate, only those whose unfolded value it accepts. Returns the count. */
  remove(name: string, predicate?: (value: string) => boolean): number {
    const key = name.toLowerCase();
    const before = this.#fields.length;
    this.#fields = this.#fields.filter(
      (f) => f.key !== key || (predicate !== undefined && !predicate(unfoldValue(f))),
    );
    return before - this.#fields.length;
  }

  /** The header block with CRLF after each field, without the empty separator line. */
  toString(): string {
    return this.#fields.map((f) => `${f.raw}\r\n`).join('');
  }

  toBuffer(): Buffer {
    return Buffer.from(this.toString(), 'latin1');
  }
}

/** Builds a field; rejects names that are not RFC 5322 field names and values that carry bare line breaks. */
export function makeField(name: string, value: string): HeaderField {
  if (!FIELD_NAME.test(name)) throw new TypeError(`invalid header field name: ${JSON.stringify(name)}`);
  // Only folded continuations (CRLF + WSP) may break a value; anything else would inject fields.
  if (/\r(?!\n[ \t])|(?<!\r)\n|\r\n(?![ \t])/.test(value)) {
    throw new TypeError(`header ${name}: value contains a line break that is not a folded continuation`);
  }
  return { name, key: name.toLowerCase(), raw: `${name}: ${toBytes(value)}` };
}

/** A date as RFC 5322 §3.3 writes it, in UTC: `Sat, 28 Nov 2026 17:27:25 +0000` (Date, Received, DSNs). */
export function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}
