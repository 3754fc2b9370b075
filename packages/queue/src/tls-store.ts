// What outbound TLS keeps in the queue's store, so every node shares it and a restart keeps it:
// cached MTA-STS policies (RFC 8461 §5.1), TLS-RPT outcome counters per policy domain and day
// (RFC 8460 §4), and claims that let one node of many send a given daily report.
// The keys and the counters' meaning belong to @tern/delivery: here they are opaque strings.

/** A value that survives JSON.stringify/JSON.parse unchanged. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

/** One outcome to count: which policy (a key), success or not, and the failure's detail (a key). */
export interface TlsOutcomeCount {
  /** UTC day, `YYYY-MM-DD`. */
  readonly day: string;
  /** The policy domain (lower case). */
  readonly domain: string;
  /** The policy as one string (delivery's JSON of the RFC 8460 `policy` object). */
  readonly policy: string;
  readonly success: boolean;
  /** A failure's details as one string; counted in its own row unless the day's rows are at `maxDetails`. */
  readonly detail?: string;
  /** Distinct detail rows kept per domain and day; failures past it are only counted in the summary. */
  readonly maxDetails: number;
}

/** A domain's counters for one day: per policy, sessions and the detail rows kept. */
export interface TlsDayCounts {
  readonly policies: readonly {
    readonly policy: string;
    readonly successes: number;
    readonly failures: number;
    readonly details: readonly { readonly detail: string; readonly count: number }[];
  }[];
}

export interface TlsStore {
  /** The value stored under `key`, or undefined when there is none or it has expired. */
  get(key: string): Promise<JsonValue | undefined>;
  /** Stores `value` under `key` until `ttlMs` from now (replacing what was there; ttlMs <= 0 removes it). */
  set(key: string, value: JsonValue, ttlMs: number): Promise<void>;
  /** Takes `key` for `owner` until `ttlMs` from now; false when someone else holds it unexpired. */
  claim(key: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Gives `key` up, if `owner` still holds it. */
  release(key: string, owner: string): Promise<void>;
  /** Counts one outcome; a day's counters are kept for `TLS_COUNTS_RETENTION_DAYS`. */
  countTlsOutcome(count: TlsOutcomeCount): Promise<void>;
  /** The counters of `domain` on `day` (empty when none). */
  tlsCounts(day: string, domain: string): Promise<TlsDayCounts>;
  /** The domains with counters on `day`, sorted. */
  tlsDomains(day: string): Promise<string[]>;
}

/** Days a day's counters outlive it: time for every node to send its report, and for an operator to look. */
export const TLS_COUNTS_RETENTION_DAYS = 8;

const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** Refuses a day that is not `YYYY-MM-DD` (callers pass it on to keys and SQL). */
export function checkDay(day: string): void {
  if (!DAY.test(day)) throw new RangeError(`a day is YYYY-MM-DD, got ${JSON.stringify(day)}`);
}

/** The UTC day `days` before `day` (YYYY-MM-DD). */
export function dayBefore(day: string, days: number): string {
  return new Date(Date.parse(`${day}T00:00:00Z`) - days * 86_400_000).toISOString().slice(0, 10);
}
