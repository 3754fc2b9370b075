// Every outbound TLS policy outcome, one per connection attempt (a "session" in RFC 8460 terms), in
// the shape TLS-RPT aggregates: which policy applied to which domain and MX, and success or the
// failure's result type. A sink receives them: in memory, or counted in the queue's store per
// policy domain and day (every node's outcomes in one place), from which the daily report is built.
import type { Logger } from '@tern/plugin-api';
import type { TlsDayCounts, TlsStore } from '@tern/queue';
import type { TlsFailureType } from './tls-check.js';

/** TLS-RPT result types (RFC 8460 §4.3): `success` or a failure. */
export type TlsResultType = 'success' | TlsFailureType;

/** RFC 8460 §4.3 policy-type. */
export type TlsPolicyType = 'sts' | 'tlsa' | 'no-policy-found';

/** One outcome: the policy that applied to one connection and what happened. */
export interface TlsPolicyOutcome {
  /** ms since epoch. */
  readonly at: number;
  /** The recipient domain the policy belongs to (policy-domain). */
  readonly policyDomain: string;
  readonly policyType: TlsPolicyType;
  /**
   * The policy as TLS-RPT quotes it: the MTA-STS policy's lines, or the TLSA records in presentation
   * form (`3 1 1 <hex>`); empty for `no-policy-found`.
   */
  readonly policyStrings: readonly string[];
  /** MX patterns of an MTA-STS policy (mx-host). */
  readonly mxHosts?: readonly string[];
  readonly result: TlsResultType;
  /** The MX (or next-hop) host name connected to (receiving-mx-hostname). */
  readonly receivingMxHostname?: string;
  /** receiving-ip */
  readonly receivingIp?: string;
  /** sending-mta-ip: our address on that connection. */
  readonly sendingMtaIp?: string;
  /** Words for people (additional-information). */
  readonly detail?: string;
}

/** Receives outcomes as they happen. It must not throw or block delivery: record and return. */
export interface TlsReportSink {
  record(outcome: TlsPolicyOutcome): void;
}

/** Keeps outcomes in memory (bounded: the oldest go first), and aggregates them as TLS-RPT would. */
export class MemoryTlsReportSink implements TlsReportSink {
  readonly #outcomes: TlsPolicyOutcome[] = [];
  readonly #maxOutcomes: number;

  constructor(options: { maxOutcomes?: number } = {}) {
    this.#maxOutcomes = options.maxOutcomes ?? 100_000;
  }

  record(outcome: TlsPolicyOutcome): void {
    this.#outcomes.push(outcome);
    if (this.#outcomes.length > this.#maxOutcomes) this.#outcomes.shift();
  }

  get outcomes(): readonly TlsPolicyOutcome[] {
    return this.#outcomes;
  }

  /** The outcomes of `policyDomain` as RFC 8460 §4.4 `policies` entries. */
  aggregate(policyDomain: string): TlsReportPolicy[] {
    return aggregateTlsReport(this.#outcomes.filter((o) => o.policyDomain === policyDomain));
  }
}

/** RFC 8460 §4.4 `policy`: what a report's counts are grouped by. */
export interface TlsReportPolicyId {
  readonly 'policy-type': TlsPolicyType;
  readonly 'policy-string': readonly string[];
  readonly 'policy-domain': string;
  readonly 'mx-host'?: readonly string[];
}

/** RFC 8460 §4.4 `failure-details` entry. */
export interface TlsFailureDetail {
  readonly 'result-type': TlsFailureType;
  readonly 'sending-mta-ip'?: string;
  readonly 'receiving-mx-hostname'?: string;
  readonly 'receiving-ip'?: string;
  readonly 'failed-session-count': number;
  readonly 'additional-information'?: string;
}

/** One entry of a TLS-RPT report's `policies` (RFC 8460 §4.4), field names as the JSON has them. */
export interface TlsReportPolicy {
  readonly policy: TlsReportPolicyId;
  readonly summary: {
    readonly 'total-successful-session-count': number;
    readonly 'total-failure-session-count': number;
  };
  readonly 'failure-details': readonly TlsFailureDetail[];
}

/** The longest additional-information kept: a server's words are not ours to store unbounded. */
const MAX_INFORMATION = 300;

/** The policy an outcome is counted under, as the report names it. */
export function reportPolicyOf(outcome: TlsPolicyOutcome): TlsReportPolicyId {
  return {
    'policy-type': outcome.policyType,
    'policy-string': outcome.policyStrings,
    'policy-domain': outcome.policyDomain,
    ...(outcome.mxHosts ? { 'mx-host': outcome.mxHosts } : {}),
  };
}

/** A failed outcome's failure-details entry, without its count. */
export function failureDetailOf(outcome: TlsPolicyOutcome): Omit<TlsFailureDetail, 'failed-session-count'> {
  const info = outcome.detail;
  return {
    'result-type': outcome.result as TlsFailureType,
    ...(outcome.sendingMtaIp ? { 'sending-mta-ip': outcome.sendingMtaIp } : {}),
    ...(outcome.receivingMxHostname ? { 'receiving-mx-hostname': outcome.receivingMxHostname } : {}),
    ...(outcome.receivingIp ? { 'receiving-ip': outcome.receivingIp } : {}),
    ...(info
      ? {
          'additional-information':
            info.length > MAX_INFORMATION ? `${info.slice(0, MAX_INFORMATION)}…` : info,
        }
      : {}),
  };
}

/** Groups outcomes by policy, counts sessions, and groups failures by result type and endpoints. */
export function aggregateTlsReport(outcomes: readonly TlsPolicyOutcome[]): TlsReportPolicy[] {
  const groups = new Map<string, { outcomes: TlsPolicyOutcome[] }>();
  for (const outcome of outcomes) {
    const key = JSON.stringify([outcome.policyDomain, outcome.policyType, outcome.policyStrings]);
    const group = groups.get(key) ?? { outcomes: [] };
    group.outcomes.push(outcome);
    groups.set(key, group);
  }
  return [...groups.values()].map(({ outcomes: list }) => {
    const first = list[0] as TlsPolicyOutcome;
    const failures = new Map<string, { outcome: TlsPolicyOutcome; count: number }>();
    let successes = 0;
    for (const outcome of list) {
      if (outcome.result === 'success') {
        successes++;
        continue;
      }
      const key = JSON.stringify([
        outcome.result,
        outcome.sendingMtaIp,
        outcome.receivingMxHostname,
        outcome.receivingIp,
      ]);
      const failure = failures.get(key);
      if (failure) failure.count++;
      else failures.set(key, { outcome, count: 1 });
    }
    return {
      policy: reportPolicyOf(first),
      summary: {
        'total-successful-session-count': successes,
        'total-failure-session-count': list.length - successes,
      },
      'failure-details': [...failures.values()].map(({ outcome, count }) => ({
        ...failureDetailOf(outcome),
        'failed-session-count': count,
      })),
    };
  });
}

/** The UTC day of a time, `YYYY-MM-DD`: TLS-RPT reports cover whole UTC days. */
export function utcDay(at: number): string {
  return new Date(at).toISOString().slice(0, 10);
}

export interface StoreTlsReportSinkOptions {
  /** Distinct failure detail rows kept per policy domain and day (default 100); further failures are only counted. */
  readonly maxDetails?: number;
  /** Outcomes being written at once (default 1000); past it they are dropped, with a warning. */
  readonly maxPending?: number;
  readonly logger?: Logger;
}

/**
 * Counts outcomes in the queue's store, per policy domain and UTC day: every node's in one place,
 * kept across restarts. Recording never waits and never throws: a write that fails is logged.
 */
export class StoreTlsReportSink implements TlsReportSink {
  readonly #store: Pick<TlsStore, 'countTlsOutcome'>;
  readonly #maxDetails: number;
  readonly #maxPending: number;
  readonly #log: Logger | undefined;
  readonly #pending = new Set<Promise<void>>();
  #dropped = 0;

  constructor(store: Pick<TlsStore, 'countTlsOutcome'>, options: StoreTlsReportSinkOptions = {}) {
    this.#store = store;
    this.#maxDetails = options.maxDetails ?? 100;
    this.#maxPending = options.maxPending ?? 1000;
    this.#log = options.logger;
  }

  record(outcome: TlsPolicyOutcome): void {
    if (this.#pending.size >= this.#maxPending) {
      if (this.#dropped++ % 1000 === 0)
        this.#log?.warn({ dropped: this.#dropped }, 'TLS report store is behind; outcomes dropped');
      return;
    }
    const write = this.#store
      .countTlsOutcome({
        day: utcDay(outcome.at),
        domain: outcome.policyDomain.toLowerCase(),
        policy: JSON.stringify(reportPolicyOf(outcome)),
        success: outcome.result === 'success',
        ...(outcome.result === 'success' ? {} : { detail: JSON.stringify(failureDetailOf(outcome)) }),
        maxDetails: this.#maxDetails,
      })
      .catch((error: unknown) => this.#log?.warn({ err: error }, 'TLS report outcome not recorded'))
      .finally(() => this.#pending.delete(write));
    this.#pending.add(write);
  }

  /** Resolves once every outcome recorded so far is written (or has failed). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
  }
}

/** An RFC 8460 §4.4 report. */
export interface TlsReport {
  readonly 'organization-name': string;
  readonly 'date-range': { readonly 'start-datetime': string; readonly 'end-datetime': string };
  readonly 'contact-info': string;
  readonly 'report-id': string;
  readonly policies: readonly TlsReportPolicy[];
}

/** Builds one policy domain's report for one UTC day from the store's counters. */
export function buildTlsReport(input: {
  readonly day: string;
  readonly counts: TlsDayCounts;
  readonly organizationName: string;
  readonly contactInfo: string;
  readonly reportId: string;
}): TlsReport {
  const policies: TlsReportPolicy[] = [];
  for (const entry of input.counts.policies) {
    const policy = parseJson<TlsReportPolicyId>(entry.policy);
    if (!policy) continue;
    const details: TlsFailureDetail[] = [];
    for (const row of entry.details) {
      const detail = parseJson<Omit<TlsFailureDetail, 'failed-session-count'>>(row.detail);
      if (detail) details.push({ ...detail, 'failed-session-count': row.count });
    }
    policies.push({
      policy,
      summary: {
        'total-successful-session-count': entry.successes,
        'total-failure-session-count': entry.failures,
      },
      'failure-details': details,
    });
  }
  return {
    'organization-name': input.organizationName,
    'date-range': {
      'start-datetime': `${input.day}T00:00:00Z`,
      'end-datetime': `${input.day}T23:59:59Z`,
    },
    'contact-info': input.contactInfo,
    'report-id': input.reportId,
    policies,
  };
}

/** A stored row that does not parse (damaged, or from a newer Tern) is left out, not fatal. */
function parseJson<T>(text: string): T | undefined {
  try {
    const value = JSON.parse(text) as unknown;
    return typeof value === 'object' && value !== null ? (value as T) : undefined;
  } catch {
    return undefined;
  }
}
