// Every outbound TLS policy outcome, one per connection attempt (a "session" in RFC 8460 terms), in
// the shape TLS-RPT aggregates: which policy applied to which domain and MX, and success or the
// failure's result type. A sink receives them; building and sending the daily report comes later.
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

/** One entry of a TLS-RPT report's `policies` (RFC 8460 §4.4), field names as the JSON has them. */
export interface TlsReportPolicy {
  readonly policy: {
    readonly 'policy-type': TlsPolicyType;
    readonly 'policy-string': readonly string[];
    readonly 'policy-domain': string;
    readonly 'mx-host'?: readonly string[];
  };
  readonly summary: {
    readonly 'total-successful-session-count': number;
    readonly 'total-failure-session-count': number;
  };
  readonly 'failure-details': readonly {
    readonly 'result-type': TlsFailureType;
    readonly 'sending-mta-ip'?: string;
    readonly 'receiving-mx-hostname'?: string;
    readonly 'receiving-ip'?: string;
    readonly 'failed-session-count': number;
    readonly 'additional-information'?: string;
  }[];
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
      policy: {
        'policy-type': first.policyType,
        'policy-string': first.policyStrings,
        'policy-domain': first.policyDomain,
        ...(first.mxHosts ? { 'mx-host': first.mxHosts } : {}),
      },
      summary: {
        'total-successful-session-count': successes,
        'total-failure-session-count': list.length - successes,
      },
      'failure-details': [...failures.values()].map(({ outcome, count }) => ({
        'result-type': outcome.result as TlsFailureType,
        ...(outcome.sendingMtaIp ? { 'sending-mta-ip': outcome.sendingMtaIp } : {}),
        ...(outcome.receivingMxHostname ? { 'receiving-mx-hostname': outcome.receivingMxHostname } : {}),
        ...(outcome.receivingIp ? { 'receiving-ip': outcome.receivingIp } : {}),
        'failed-session-count': count,
        ...(outcome.detail ? { 'additional-information': outcome.detail } : {}),
      })),
    };
  });
}
