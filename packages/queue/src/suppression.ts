// Suppression lists, shared by every backend: recipients a sender must not mail again (they
// bounced hard, complained, or an operator said so), per sender domain, per tag (`tag:newsletter`,
// for the messages carrying that tag: a stream of mail) or for every sender (`*`).
// Stored in the queue's own store, so every node of a Redis queue sees the same list.
import { type BounceCategory, isBounceCategory, TAG_PATTERN } from '@tern/plugin-api';
import { OperationInputError } from './operations.js';

/** Where an entry came from. */
export type SuppressionSource = 'bounce' | 'complaint' | 'manual' | 'import';
export const SUPPRESSION_SOURCES: readonly SuppressionSource[] = ['bounce', 'complaint', 'manual', 'import'];

/** One suppressed recipient for one scope. */
export interface Suppression {
  /** A sender domain (`example.com`), a tag (`tag:newsletter`), or `*` for every sender. */
  readonly scope: string;
  /** The recipient, lower-cased. */
  readonly address: string;
  readonly source: SuppressionSource;
  /** Why, for people: the bounce reply, the complaint, the operator's note. */
  readonly reason: string;
  /** Bounces: the category of the reply that put the recipient here. */
  readonly category?: BounceCategory;
  /** When the recipient was first suppressed (ms). */
  readonly createdAt: number;
  /** When the entry stops counting (ms); none: until removed. */
  readonly expiresAt?: number;
  /** The message whose bounce or complaint added the entry. */
  readonly queueId?: string;
}

export interface SuppressionQuery {
  /** Only this scope. */
  readonly scope?: string;
  /** Only addresses containing this text. */
  readonly search?: string;
  /** About this many entries per page (default 100, at most 1000). */
  readonly limit?: number;
  /** Where the previous page ended. */
  readonly cursor?: string;
}

export interface SuppressionPage {
  readonly entries: readonly Suppression[];
  /** Pass back as `cursor` for the next page; absent on the last page. */
  readonly next?: string;
}

/** The list as both backends keep it. Expired entries are never returned and are removed in time. */
export interface SuppressionStore {
  /**
   * Adds entries, or updates those already there (source, reason, expiry); an updated entry keeps
   * the time it was first suppressed. Resolves with the number written.
   */
  add(entries: readonly Suppression[]): Promise<number>;
  /** The entry that suppresses `address` for the first of `scopes` that has one, unexpired. */
  find(address: string, scopes: readonly string[], now?: number): Promise<Suppression | undefined>;
  /** Removes one entry; false when there was none. */
  remove(scope: string, address: string): Promise<boolean>;
  /** Entries, newest first where the backend can order them. */
  list(query?: SuppressionQuery): Promise<SuppressionPage>;
  /** How many entries there are (expired ones not yet removed included). */
  count(): Promise<number>;
}

/** The scope that means every sender. */
export const ANY_SENDER = '*';
/** Entries read per page by default, and at most. */
export const DEFAULT_SUPPRESSION_PAGE = 100;
export const MAX_SUPPRESSION_PAGE = 1000;
/** Characters of a reason kept. */
export const MAX_SUPPRESSION_REASON = 500;

const DOMAIN = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;
// Anything printable without spaces around one @: what an envelope address can be, lower-cased.
const ADDRESS = /^[^\s@<>]{1,64}@[^\s@<>]{1,255}$/;

/** What a tag scope starts with: `tag:newsletter`. */
export const TAG_SCOPE_PREFIX = 'tag:';

/** The scope of one tag. Tags are matched without regard to case, as domains are. */
export function tagScope(tag: string): string {
  return `${TAG_SCOPE_PREFIX}${tag.toLowerCase()}`;
}

/**
 * The tag scopes of a message: one per tag it carries that is among `scoping` (the configured
 * `suppression.tagScopes`, lower-cased), in the message's order. Other tags have no list.
 */
export function messageTagScopes(
  tags: readonly string[] | undefined,
  scoping: ReadonlySet<string>,
): string[] {
  if (tags === undefined || tags.length === 0 || scoping.size === 0) return [];
  const scopes = new Set<string>();
  for (const tag of tags) if (scoping.has(tag.toLowerCase())) scopes.add(tagScope(tag));
  return [...scopes];
}

/**
 * The scopes a message from `mailFrom` is checked against: its tag scopes (see messageTagScopes),
 * its sender domain, then every sender.
 */
export function suppressionScopes(mailFrom: string, tagScopes: readonly string[] = []): string[] {
  const at = mailFrom.lastIndexOf('@');
  const domain = at === -1 ? '' : mailFrom.slice(at + 1).toLowerCase();
  return domain === '' ? [...tagScopes, ANY_SENDER] : [...tagScopes, domain, ANY_SENDER];
}

/** Whether a stored scope is a tag's (`tag:newsletter`). */
export function isTagScope(scope: string): boolean {
  return scope.startsWith(TAG_SCOPE_PREFIX);
}

/** A scope as stored; throws OperationInputError naming `field`. */
export function suppressionScope(value: unknown, field = 'scope'): string {
  const scope = typeof value === 'string' ? value.trim().toLowerCase() : '';
  if (scope === ANY_SENDER || (scope.length <= 253 && DOMAIN.test(scope))) return scope;
  if (isTagScope(scope) && TAG_PATTERN.test(scope.slice(TAG_SCOPE_PREFIX.length))) return scope;
  throw new OperationInputError(
    `${field}: ${JSON.stringify(value)} is not a sender domain like example.com, a tag like tag:newsletter (letters, digits, _ . -, at most 64), or * for every sender`,
  );
}

/** A recipient address as stored; throws OperationInputError naming `field`. */
export function suppressionAddress(value: unknown, field = 'address'): string {
  const address = typeof value === 'string' ? value.trim().toLowerCase() : '';
  if (ADDRESS.test(address)) return address;
  throw new OperationInputError(
    `${field}: ${JSON.stringify(value)} is not an email address like someone@example.com`,
  );
}

/**
 * Checks an entry from outside (the admin API, an import file, a stored record) and fills in
 * defaults; throws OperationInputError naming the field. `field` prefixes the names (`entries[3]`).
 */
export function suppressionEntry(
  input: unknown,
  defaults: { source: SuppressionSource; now: number },
  field = '',
): Suppression {
  const at = (name: string): string => (field === '' ? name : `${field}.${name}`);
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new OperationInputError(`${field || 'entry'}: an object like { scope, address, reason }`);
  }
  const e = input as Record<string, unknown>;
  const known = ['scope', 'address', 'source', 'reason', 'category', 'createdAt', 'expiresAt', 'queueId'];
  for (const key of Object.keys(e)) {
    if (!known.includes(key))
      throw new OperationInputError(`${at(key)}: unknown field (known: ${known.join(', ')})`);
  }
  const source = e.source ?? defaults.source;
  if (!SUPPRESSION_SOURCES.includes(source as SuppressionSource)) {
    throw new OperationInputError(`${at('source')}: one of ${SUPPRESSION_SOURCES.join(', ')}`);
  }
  if (e.category !== undefined && !isBounceCategory(e.category)) {
    throw new OperationInputError(
      `${at('category')}: ${JSON.stringify(e.category)} is not a bounce category`,
    );
  }
  if (e.reason !== undefined && typeof e.reason !== 'string') {
    throw new OperationInputError(`${at('reason')}: a text`);
  }
  const time = (name: 'createdAt' | 'expiresAt'): number | undefined => {
    const value = e[name];
    if (value === undefined || value === null || value === '') return undefined;
    const ms = typeof value === 'number' ? value : typeof value === 'string' ? Date.parse(value) : Number.NaN;
    if (!Number.isFinite(ms) || ms < 0) {
      throw new OperationInputError(
        `${at(name)}: ${JSON.stringify(value)} is not a time (ISO 8601 or ms since 1970)`,
      );
    }
    return Math.trunc(ms);
  };
  const expiresAt = time('expiresAt');
  if (expiresAt !== undefined && expiresAt <= defaults.now) {
    throw new OperationInputError(`${at('expiresAt')}: the entry would have expired already`);
  }
  if (e.queueId !== undefined && (typeof e.queueId !== 'string' || !/^[A-Za-z0-9]{1,64}$/.test(e.queueId))) {
    throw new OperationInputError(`${at('queueId')}: a queue id (letters and digits)`);
  }
  const reason = typeof e.reason === 'string' ? e.reason.replace(/[\r\n]+/g, ' ').trim() : '';
  return {
    scope: suppressionScope(e.scope ?? ANY_SENDER, at('scope')),
    address: suppressionAddress(e.address, at('address')),
    source: source as SuppressionSource,
    reason: (reason === '' ? `${source as string}` : reason).slice(0, MAX_SUPPRESSION_REASON),
    ...(e.category === undefined ? {} : { category: e.category as BounceCategory }),
    createdAt: time('createdAt') ?? defaults.now,
    ...(expiresAt === undefined ? {} : { expiresAt }),
    ...(typeof e.queueId === 'string' ? { queueId: e.queueId } : {}),
  };
}

/** A stored record back into an entry; undefined for one that is damaged (skipped by callers). */
export function parseSuppression(text: string): Suppression | undefined {
  try {
    const value = JSON.parse(text) as Suppression;
    return typeof value?.address === 'string' && typeof value.scope === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The page size asked for, checked. */
export function suppressionPageSize(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_SUPPRESSION_PAGE;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_SUPPRESSION_PAGE) {
    throw new OperationInputError(`limit: ${limit} must be a whole number from 1 to ${MAX_SUPPRESSION_PAGE}`);
  }
  return limit;
}

/** Whether an entry still counts at `now`. */
export function isActiveSuppression(entry: Suppression, now: number): boolean {
  return entry.expiresAt === undefined || entry.expiresAt > now;
}
