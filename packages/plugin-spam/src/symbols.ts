// The symbol catalogue: every fixed symbol a check can add, its default weight and what it means.
// DNS list symbols (RBL_*, RWL_*) are named by their zone configuration and weighed there.

export interface SymbolDefinition {
  readonly weight: number;
  readonly description: string;
}

/**
 * Default weights. Positive is spammy, negative is hammy. The scale follows SpamAssassin and rspamd
 * (tag at 5, reject at 15), so scanner scores add in without rescaling.
 */
export const SYMBOLS = {
  // SPF (RFC 7208), MAIL FROM identity
  SPF_PASS: { weight: -0.5, description: 'SPF: the MAIL FROM domain authorizes the client' },
  SPF_FAIL: { weight: 3, description: 'SPF: the MAIL FROM domain forbids the client (-all)' },
  SPF_SOFTFAIL: {
    weight: 1.5,
    description: 'SPF: the MAIL FROM domain does not authorize the client (~all)',
  },
  SPF_NEUTRAL: { weight: 0, description: 'SPF: the MAIL FROM domain makes no assertion (?all)' },
  SPF_NONE: { weight: 0.3, description: 'SPF: the MAIL FROM domain publishes no SPF record' },
  SPF_PERMERROR: { weight: 1, description: 'SPF: the MAIL FROM domain publishes a broken record' },
  SPF_TEMPERROR: { weight: 0, description: 'SPF: the MAIL FROM check hit a DNS error' },
  // SPF, HELO identity
  SPF_HELO_PASS: { weight: -0.2, description: 'SPF: the HELO name authorizes the client' },
  SPF_HELO_FAIL: { weight: 2, description: 'SPF: the HELO name forbids the client' },
  SPF_HELO_SOFTFAIL: { weight: 1, description: 'SPF: the HELO name does not authorize the client' },
  SPF_HELO_NEUTRAL: { weight: 0, description: 'SPF: the HELO name makes no assertion' },
  SPF_HELO_NONE: { weight: 0, description: 'SPF: the HELO name publishes no SPF record' },
  SPF_HELO_PERMERROR: { weight: 0.5, description: 'SPF: the HELO name publishes a broken record' },
  SPF_HELO_TEMPERROR: { weight: 0, description: 'SPF: the HELO check hit a DNS error' },
  // DKIM (RFC 6376): the best result over all signatures
  DKIM_PASS: { weight: -1, description: 'DKIM: at least one signature verifies' },
  DKIM_FAIL: { weight: 3, description: 'DKIM: signed, but no signature verifies (altered or forged)' },
  DKIM_POLICY: {
    weight: 1,
    description: 'DKIM: a signature verifies only with a key or algorithm we refuse',
  },
  DKIM_PERMERROR: { weight: 1, description: 'DKIM: a signature or its key record is unusable' },
  DKIM_TEMPERROR: { weight: 0, description: 'DKIM: the key lookup hit a DNS error' },
  DKIM_NONE: { weight: 0, description: 'DKIM: the message is not signed' },
  // DMARC (RFC 7489)
  DMARC_PASS: { weight: -1, description: 'DMARC: SPF or DKIM passes aligned with the From domain' },
  DMARC_FAIL: { weight: 2, description: 'DMARC: fails, the domain asks for no action (p=none)' },
  DMARC_POLICY_QUARANTINE: { weight: 3, description: 'DMARC: fails, the domain asks for quarantine' },
  DMARC_POLICY_REJECT: { weight: 5, description: 'DMARC: fails, the domain asks for rejection' },
  DMARC_NONE: { weight: 0, description: 'DMARC: the From domain publishes no DMARC record' },
  DMARC_TEMPERROR: { weight: 0, description: 'DMARC: the record lookup hit a DNS error' },
  DMARC_PERMERROR: { weight: 0, description: 'DMARC: the record is unusable' },
  // Header and content heuristics
  GTUBE: { weight: 1000, description: 'The GTUBE test string (a deliberate spam test)' },
  MISSING_DATE: { weight: 1, description: 'No Date header (RFC 5322 §3.6 requires one)' },
  INVALID_DATE: { weight: 1, description: 'The Date header cannot be parsed' },
  DATE_IN_FUTURE: { weight: 1.5, description: 'The Date header is more than 24 hours ahead' },
  MISSING_MESSAGE_ID: { weight: 1.5, description: 'No Message-ID header' },
  MISSING_FROM: { weight: 3, description: 'No From header (RFC 5322 §3.6 requires one)' },
  MULTIPLE_FROM: { weight: 2.5, description: 'More than one From header field' },
  FROM_MALFORMED: { weight: 2.5, description: 'The From header holds no valid mailbox' },
  FROM_NAME_SPOOFS_ADDRESS: {
    weight: 2,
    description: 'The From display name shows an address of another domain than the real one',
  },
  REPLYTO_DOMAIN_MISMATCH: { weight: 1, description: 'Reply-To points to another domain than From' },
  MISSING_SUBJECT: { weight: 0.5, description: 'No Subject header' },
  SUBJECT_ALL_CAPS: { weight: 0.5, description: 'The Subject is written in capitals only' },
  HELO_NOT_FQDN: {
    weight: 1,
    description: 'The HELO name is neither a dotted host name nor an address literal',
  },
  // External scanners: the weight here is only nominal; their own score times rspamd.weight or
  // spamd.weight is what adds in (scores cannot override these two).
  RSPAMD: { weight: 1, description: "rspamd's score times rspamd.weight" },
  SPAMD: { weight: 1, description: "SpamAssassin's score times spamd.weight" },
  SCANNER_UNAVAILABLE: { weight: 0, description: 'A scanner failed or timed out and failure is open' },
} as const satisfies Record<string, SymbolDefinition>;

export type SymbolName = keyof typeof SYMBOLS;

export const SYMBOL_NAMES = Object.keys(SYMBOLS) as SymbolName[];

/** One contribution to a message's score. */
export interface SpamSymbol {
  /** `SPF_FAIL`, `RBL_ZEN_SBL`, ... */
  readonly name: string;
  /** Points added (negative lowers the score). */
  readonly score: number;
  /** What was seen, for reports and logs (`zen.spamhaus.org=127.0.0.2`). Never shown to SMTP clients. */
  readonly detail?: string;
}

/** Looks up weights with the `scores` overrides applied. */
export class Weights {
  readonly #overrides: Readonly<Partial<Record<SymbolName, number>>>;

  constructor(overrides: Readonly<Partial<Record<SymbolName, number>>> = {}) {
    this.#overrides = overrides;
  }

  of(name: SymbolName): number {
    return this.#overrides[name] ?? SYMBOLS[name].weight;
  }

  /** A symbol with its weight; `detail` only when given. */
  symbol(name: SymbolName, detail?: string): SpamSymbol {
    return detail === undefined ? { name, score: this.of(name) } : { name, score: this.of(name), detail };
  }
}

/** Rounds to two decimals, the precision scores are shown and compared with. */
export function roundScore(score: number): number {
  return Math.round(score * 100) / 100;
}
