// `tern suppression list|search|add|remove|import|export`: the suppression list over the admin API
// of a running tern (the list lives in the queue's store, which only tern holds). Files are CSV
// with a header (scope,address,source,reason,category,created_at,expires_at), JSON lines, or one
// address per line.
import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { type Duration, durationMs } from '@tern/plugin-api';
import type { Suppression, SuppressionPage } from '@tern/queue';
import { AdminApiError, type AdminClient, UsageProblem, withAdminClient } from './admin-client.js';
import type { SuppressionCommand } from './queue-operations.js';

export interface SuppressionValues {
  readonly admin?: string;
  readonly token?: string;
  readonly tokenFile?: string;
  readonly config?: string;
  readonly json?: boolean;
  readonly scope?: string;
  readonly limit?: string;
  readonly all?: boolean;
  readonly reason?: string;
  readonly expiresIn?: string;
  readonly until?: string;
  readonly out?: string;
  readonly format?: string;
}

/** Entries sent per request by import (the API takes at most 1000). */
const IMPORT_BATCH = 500;
export const CSV_COLUMNS = [
  'scope',
  'address',
  'source',
  'reason',
  'category',
  'created_at',
  'expires_at',
] as const;

export async function runSuppressionCommand(
  command: SuppressionCommand,
  values: SuppressionValues,
  operands: readonly string[],
): Promise<number> {
  return withAdminClient(values, `tern suppression ${command}`, (client) =>
    run(command, client, values, operands),
  );
}

async function run(
  command: SuppressionCommand,
  client: AdminClient,
  values: SuppressionValues,
  operands: readonly string[],
): Promise<number> {
  const out = (text: string): void => void process.stdout.write(`${text}\n`);
  switch (command) {
    case 'list':
    case 'search': {
      const search = command === 'search' ? operands[0] : undefined;
      if (command === 'search' && !search)
        throw new UsageProblem('tern suppression search needs the text to look for');
      const limit = values.all ? Number.POSITIVE_INFINITY : Number(values.limit ?? 100);
      if (!(limit > 0)) throw new UsageProblem(`--limit: ${values.limit} is not a number above 0`);
      const shown: Suppression[] = [];
      for await (const entry of entries(client, { scope: values.scope, search })) {
        if (shown.length >= limit) break;
        shown.push(entry);
      }
      if (values.json) out(JSON.stringify(shown, null, 2));
      else if (shown.length === 0) out('no suppressed recipients');
      else for (const e of shown) out(formatEntry(e));
      return 0;
    }
    case 'add': {
      if (operands.length === 0) throw new UsageProblem('tern suppression add needs one or more addresses');
      const expiresAt = expiryOf(values);
      const result = await client.post<{ added: number }>('/api/suppressions', {
        entries: operands.map((address) => ({
          address,
          scope: values.scope ?? '*',
          source: 'manual',
          ...(values.reason === undefined ? {} : { reason: values.reason }),
          ...(expiresAt === undefined ? {} : { expiresAt }),
        })),
      });
      // As stored: scopes are lower-cased (tag:Newsletter is tag:newsletter).
      out(
        `${result.added} recipient(s) suppressed for ${values.scope?.trim().toLowerCase() ?? 'every sender (*)'}`,
      );
      return 0;
    }
    case 'remove': {
      if (operands.length === 0)
        throw new UsageProblem('tern suppression remove needs one or more addresses');
      let missing = 0;
      for (const address of operands) {
        try {
          await client.delete(
            `/api/suppressions/${encodeURIComponent(values.scope ?? '*')}/${encodeURIComponent(address)}`,
          );
          out(`${address}: removed`);
        } catch (error) {
          if (!(error instanceof AdminApiError) || error.status !== 404) throw error;
          process.stderr.write(`tern suppression remove: ${error.message}\n`);
          missing++;
        }
      }
      return missing === 0 ? 0 : 1;
    }
    case 'import': {
      const file = operands[0];
      if (!file) throw new UsageProblem('tern suppression import needs a file (or - for stdin)');
      let batch: Record<string, unknown>[] = [];
      let added = 0;
      const flush = async (): Promise<void> => {
        if (batch.length === 0) return;
        added += (await client.post<{ added: number }>('/api/suppressions', { entries: batch })).added;
        process.stderr.write(`imported ${added}\n`);
        batch = [];
      };
      for await (const row of importRows(file, values.scope ?? '*')) {
        batch.push(row);
        if (batch.length >= IMPORT_BATCH) await flush();
      }
      await flush();
      out(`${added} recipient(s) imported`);
      return 0;
    }
    case 'export': {
      const format = values.format ?? 'csv';
      if (format !== 'csv' && format !== 'jsonl')
        throw new UsageProblem(`--format: ${format} is not csv or jsonl`);
      const sink = values.out ? createWriteStream(values.out, { mode: 0o600 }) : process.stdout;
      const write = (line: string): Promise<void> =>
        new Promise((resolve, reject) =>
          sink.write(`${line}\n`, (error) => (error ? reject(error) : resolve())),
        );
      if (format === 'csv') await write(CSV_COLUMNS.join(','));
      let count = 0;
      for await (const e of entries(client, { scope: values.scope })) {
        await write(format === 'csv' ? csvLine(e) : JSON.stringify(e));
        count++;
      }
      if (sink !== process.stdout) {
        await new Promise<void>((resolve, reject) =>
          sink.end((error?: Error | null) => (error ? reject(error) : resolve())),
        );
        process.stderr.write(`${count} recipient(s) exported to ${values.out}\n`);
      }
      return 0;
    }
  }
}

/** Every entry the API lists, page after page. */
async function* entries(
  client: AdminClient,
  query: { scope?: string | undefined; search?: string | undefined },
): AsyncGenerator<Suppression> {
  let cursor: string | undefined;
  do {
    const params = new URLSearchParams({ limit: '1000' });
    if (query.scope !== undefined) params.set('scope', query.scope);
    if (query.search !== undefined) params.set('search', query.search);
    if (cursor !== undefined) params.set('cursor', cursor);
    const page = await client.get<SuppressionPage>(`/api/suppressions?${params}`);
    yield* page.entries;
    cursor = page.next;
  } while (cursor !== undefined);
}

function formatEntry(e: Suppression): string {
  const since = new Date(e.createdAt).toISOString();
  const expires = e.expiresAt === undefined ? '' : ` until ${new Date(e.expiresAt).toISOString()}`;
  const why = e.category === undefined ? e.source : `${e.source}/${e.category}`;
  return `${e.scope}\t${e.address}\t${why}\tsince ${since}${expires}\t${e.reason}`;
}

function expiryOf(values: SuppressionValues): string | undefined {
  if (values.expiresIn !== undefined && values.until !== undefined) {
    throw new UsageProblem('give --expires-in or --until, not both');
  }
  if (values.expiresIn !== undefined) {
    return new Date(
      Date.now() + durationMs(values.expiresIn as Duration, '--expires-in', { positive: true }),
    ).toISOString();
  }
  return values.until;
}

/** One CSV field: quoted when it holds a comma, a quote or a line break (RFC 4180). */
function csvField(value: string | number | undefined): string {
  const text = value === undefined ? '' : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function csvLine(e: Suppression): string {
  return [
    e.scope,
    e.address,
    e.source,
    e.reason,
    e.category,
    new Date(e.createdAt).toISOString(),
    e.expiresAt === undefined ? undefined : new Date(e.expiresAt).toISOString(),
  ]
    .map(csvField)
    .join(',');
}

/** Splits one CSV line (RFC 4180 quoting; a record never spans lines here: reasons are one line). */
export function parseCsvLine(line: string): string[] {
  const fields: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let value = '';
      i++;
      while (i < line.length) {
        if (line[i] === '"' && line[i + 1] === '"') {
          value += '"';
          i += 2;
        } else if (line[i] === '"') {
          i++;
          break;
        } else value += line[i++];
      }
      fields.push(value);
      i++; // the comma
    } else {
      const end = line.indexOf(',', i);
      fields.push(line.slice(i, end === -1 ? line.length : end));
      i = end === -1 ? line.length + 1 : end + 1;
    }
  }
  return fields;
}

/** The rows of an import file as API entries: CSV with the export's header, JSON lines, or addresses. */
async function* importRows(file: string, scope: string): AsyncGenerator<Record<string, unknown>> {
  const lines = createInterface({
    input: file === '-' ? process.stdin : createReadStream(file),
    crlfDelay: Infinity,
  });
  let header: string[] | undefined;
  let first = true;
  let number = 0;
  for await (const raw of lines) {
    number++;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (first) {
      first = false;
      const fields = parseCsvLine(line).map((f) => f.trim().toLowerCase());
      if (fields.includes('address')) {
        header = fields;
        continue;
      }
    }
    if (line.startsWith('{')) {
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new UsageProblem(`${file} line ${number}: not a JSON object`);
      }
      yield { scope, source: 'import', ...parsed };
    } else if (header !== undefined) {
      const values = parseCsvLine(line);
      const row: Record<string, unknown> = { scope, source: 'import' };
      header.forEach((name, i) => {
        const value = values[i];
        if (value === undefined || value === '') return;
        const key = name === 'created_at' ? 'createdAt' : name === 'expires_at' ? 'expiresAt' : name;
        row[key] = value;
      });
      yield row;
    } else {
      yield { scope, source: 'import', address: line };
    }
  }
}
