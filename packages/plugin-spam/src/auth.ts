// Sender authentication through mailauth: SPF (RFC 7208) for the MAIL FROM and HELO identities,
// DKIM (RFC 6376) verification and DMARC (RFC 7489) alignment and policy, with our resolver; and
// the Authentication-Results header (RFC 8601) that reports them.
import type { Readable } from 'node:stream';
import { normalizeIp } from '@tern/plugin-api';
import type { DKIMResult, DMARCResult } from 'mailauth';
// Deep imports on purpose: mailauth's main module loads its BIMI code, which requires undici 8,
// and undici 8 does not load on Node 20 (mailauth 7.1 declares node >= 22.19). SPF, DKIM and
// DMARC themselves run on Node 20.
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { dmarc } from 'mailauth/lib/dmarc/index.js';
import { spf } from 'mailauth/lib/spf/index.js';
import type { MailauthResolver } from './dns.js';
import type { SymbolName } from './symbols.js';

export type SpfResultKind = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror';
export type DkimResultKind = 'pass' | 'fail' | 'policy' | 'neutral' | 'permerror' | 'temperror' | 'none';
export type DmarcResultKind = 'pass' | 'fail' | 'none' | 'temperror' | 'permerror';

export interface SpfOutcome {
  readonly identity: 'mailfrom' | 'helo';
  readonly result: SpfResultKind;
  /** The domain checked (MAIL FROM domain, HELO name, or postmaster@HELO for the null sender). */
  readonly domain: string;
  /** The identity as reported: the MAIL FROM address or the HELO name. */
  readonly value: string;
  readonly comment?: string;
}

export interface DkimSignatureOutcome {
  readonly result: DkimResultKind;
  readonly domain: string;
  readonly selector: string;
  /** Whether the signing domain aligns (relaxed) with the From domain, as DMARC would count it. */
  readonly aligned: boolean;
  /** The RFC 8601 resinfo mailauth formatted for this signature. */
  readonly info: string;
  /** The signature's id (its b= prefix), which DMARC reports for the aligned signature. */
  readonly id?: string;
  /** Bytes of body the signature does not cover (an l= tag); DMARC prefers whole-body signatures. */
  readonly underSized?: number;
}

/** Every DKIM signature of a message verified, and the author (From) they were aligned against. */
export interface DkimVerification {
  /** The best result over all signatures (`none` when unsigned). */
  readonly result: DkimResultKind;
  readonly signatures: readonly DkimSignatureOutcome[];
  /** The From addresses as the verifier read them, and how many From fields there were (DMARC needs one). */
  readonly author: { readonly addresses: readonly string[]; readonly fields: number };
}

export interface DmarcOutcome {
  readonly result: DmarcResultKind;
  /** The From (author) domain; '' when there was no single one. */
  readonly fromDomain: string;
  /** The policy that applies to this message after sp/np/t=y: none, quarantine or reject. */
  readonly policy: 'none' | 'quarantine' | 'reject';
  readonly info: string;
}

export interface SpfCheck {
  readonly ip: string;
  readonly sender: string;
  readonly helo: string | undefined;
  /** Our host name, used in the result comments. */
  readonly mta: string;
  readonly resolver: MailauthResolver;
  readonly timeoutMs: number;
}

const SPF_RESULTS = new Set<string>([
  'pass',
  'fail',
  'softfail',
  'neutral',
  'none',
  'permerror',
  'temperror',
]);

/** A HELO name SPF can check: a domain with a dot, not an address literal. */
export function isCheckableHelo(helo: string | undefined): helo is string {
  return helo !== undefined && !helo.startsWith('[') && /^[a-z0-9_-]+(\.[a-z0-9_-]+)+\.?$/i.test(helo);
}

/** Checks the MAIL FROM identity (the null sender checks postmaster@HELO, RFC 7208 §2.4). */
export async function checkSpfMailFrom(check: SpfCheck): Promise<SpfOutcome> {
  if (check.sender === '' && !isCheckableHelo(check.helo)) {
    return { identity: 'mailfrom', result: 'none', domain: '', value: '' };
  }
  const result = await runSpf(check, check.sender);
  const value = check.sender === '' ? `postmaster@${check.helo ?? ''}` : check.sender;
  return { identity: 'mailfrom', ...result, value };
}

/** Checks the HELO identity (RFC 7208 §2.3); `none` when the HELO name is not a domain. */
export async function checkSpfHelo(check: SpfCheck): Promise<SpfOutcome> {
  if (!isCheckableHelo(check.helo)) {
    return { identity: 'helo', result: 'none', domain: '', value: check.helo ?? '' };
  }
  // An empty sender makes mailauth check postmaster@<helo>, which is the HELO identity.
  const result = await runSpf(check, '');
  return { identity: 'helo', ...result, value: check.helo };
}

async function runSpf(
  check: SpfCheck,
  sender: string,
): Promise<{ result: SpfResultKind; domain: string; comment?: string }> {
  try {
    const outcome = await spf({
      sender,
      ip: normalizeIp(check.ip),
      ...(check.helo !== undefined ? { helo: check.helo } : {}),
      mta: check.mta,
      resolver: check.resolver,
      maxElapsedTime: check.timeoutMs,
    });
    const result = SPF_RESULTS.has(outcome.status.result)
      ? (outcome.status.result as SpfResultKind)
      : 'temperror';
    return {
      result,
      domain: outcome.domain,
      ...(outcome.status.comment ? { comment: outcome.status.comment } : {}),
    };
  } catch (error) {
    return { result: 'temperror', domain: '', comment: `${check.mta}: ${String(error)}` };
  }
}

export interface DkimCheck {
  /** The message as it arrived (header block before forged fields were removed). */
  readonly message: Readable;
  readonly sender: string;
  readonly resolver: MailauthResolver;
  readonly minBitLength: number;
}

const DKIM_RANK: Record<DkimResultKind, number> = {
  pass: 6,
  fail: 5,
  policy: 4,
  permerror: 3,
  neutral: 2,
  temperror: 1,
  none: 0,
};

/** Verifies every DKIM signature of a message. */
export async function verifyDkim(check: DkimCheck): Promise<DkimVerification> {
  const verified = await dkimVerify(check.message, {
    resolver: check.resolver,
    minBitLength: check.minBitLength,
    ...(check.sender !== '' ? { sender: check.sender } : {}),
  });
  const results: DKIMResult[] = verified.results ?? [];
  const signatures = results.map((r): DkimSignatureOutcome => {
    // A body hash mismatch is a PERMFAIL (RFC 6376 §6.1.3) that RFC 8601 reports as fail; mailauth's
    // lenient mode says neutral for compatibility, but for us an altered body is a failed signature.
    const bodyChanged = r.status.result === 'neutral' && r.status.comment === 'body hash did not verify';
    return {
      result: bodyChanged ? 'fail' : toDkimKind(r.status.result),
      domain: r.signingDomain ?? '',
      selector: r.selector ?? '',
      aligned: Boolean(r.status.aligned),
      info: bodyChanged ? r.info.replace(/^dkim=neutral/, 'dkim=fail') : r.info,
      ...(r.id ? { id: r.id } : {}),
      ...(r.status.underSized ? { underSized: r.status.underSized } : {}),
    };
  });
  const result = signatures.reduce<DkimResultKind>(
    (best, s) => (DKIM_RANK[s.result] > DKIM_RANK[best] ? s.result : best),
    'none',
  );
  return {
    result,
    signatures,
    author: { addresses: verified.headerFrom ?? [], fields: verified.fromFields ?? 0 },
  };
}

export interface DmarcCheck {
  readonly dkim: DkimVerification;
  /** The MAIL FROM SPF outcome, for DMARC's SPF alignment. */
  readonly spf: SpfOutcome | undefined;
  readonly resolver: MailauthResolver;
}

/** Evaluates DMARC (RFC 7489): SPF or DKIM passing aligned with the From domain, and its policy. */
export async function evaluateDmarc(check: DmarcCheck): Promise<DmarcOutcome> {
  const spfDomains = check.spf?.result === 'pass' && check.spf.domain ? [check.spf.domain] : [];
  const result: DMARCResult | false = await dmarc({
    headerFrom: [...check.dkim.author.addresses],
    fromFields: check.dkim.author.fields,
    spfDomains,
    dkimDomains: check.dkim.signatures
      .filter((s) => s.result === 'pass' && s.domain !== '')
      .map((s) => ({
        domain: s.domain,
        aligned: s.aligned ? s.domain : false,
        ...(s.id ? { id: s.id } : {}),
        ...(s.underSized ? { underSized: s.underSized } : {}),
      })),
    resolver: check.resolver,
  });
  return toDmarcOutcome(result);
}

function toDkimKind(result: string): DkimResultKind {
  switch (result) {
    case 'pass':
    case 'fail':
    case 'policy':
    case 'neutral':
    case 'permerror':
    case 'temperror':
    case 'none':
      return result;
    default:
      return 'permerror';
  }
}

function toDmarcOutcome(result: DMARCResult | false): DmarcOutcome {
  if (result === false) {
    // No single author domain: DMARC cannot be evaluated (the heuristics score the From header).
    return { result: 'none', fromDomain: '', policy: 'none', info: 'dmarc=none (no single author domain)' };
  }
  const kind = result.status.result;
  const dmarcResult: DmarcResultKind =
    kind === 'pass' || kind === 'fail' || kind === 'none' || kind === 'temperror' || kind === 'permerror'
      ? kind
      : 'permerror';
  const policy = result.policy === 'reject' || result.policy === 'quarantine' ? result.policy : 'none';
  return {
    result: dmarcResult,
    fromDomain: result.status.header?.from ?? '',
    policy,
    info: result.info,
  };
}

/** The symbol for an SPF outcome. */
export function spfSymbol(outcome: SpfOutcome): SymbolName {
  const base = outcome.identity === 'helo' ? 'SPF_HELO_' : 'SPF_';
  return `${base}${outcome.result.toUpperCase()}` as SymbolName;
}

export function dkimSymbol(result: DkimResultKind): SymbolName {
  // neutral (a signature mailauth could not process) is as useless as none for scoring
  return result === 'neutral' ? 'DKIM_NONE' : (`DKIM_${result.toUpperCase()}` as SymbolName);
}

export function dmarcSymbol(outcome: DmarcOutcome): SymbolName {
  if (outcome.result !== 'fail') return `DMARC_${outcome.result.toUpperCase()}` as SymbolName;
  if (outcome.policy === 'reject') return 'DMARC_POLICY_REJECT';
  if (outcome.policy === 'quarantine') return 'DMARC_POLICY_QUARANTINE';
  return 'DMARC_FAIL';
}

// ---- Authentication-Results (RFC 8601) ----

/** An RFC 5322 comment body: backslash, parentheses and line breaks escaped or removed. */
function comment(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/[\\()]/g, (c) => `\\${c}`);
}

const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*$/;

/** A property value (RFC 8601 §2.2 pvalue): a mailbox or domain as is, anything else quoted. */
export function pvalue(value: string): string {
  const at = value.lastIndexOf('@');
  const local = at === -1 ? '' : value.slice(0, at);
  const domain = at === -1 ? value : value.slice(at + 1);
  const domainOk = /^[A-Za-z0-9.-]+$/.test(domain) && domain !== '';
  if (domainOk && (at === -1 || DOT_ATOM.test(local))) return value;
  return `"${value.replace(/[\r\n]+/g, ' ').replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** The resinfo of one SPF outcome: `spf=pass (comment) smtp.mailfrom=...`. */
export function spfResinfo(outcome: SpfOutcome): string {
  const parts = [`spf=${outcome.result}`];
  if (outcome.comment) parts.push(`(${comment(outcome.comment)})`);
  if (outcome.value !== '') parts.push(`smtp.${outcome.identity}=${pvalue(outcome.value)}`);
  return parts.join(' ');
}

/** What goes into Authentication-Results; a method left out is not reported (it did not run). */
export interface AuthenticationReport {
  readonly spf?: readonly SpfOutcome[];
  readonly dkim?: readonly DkimSignatureOutcome[];
  readonly dmarc?: DmarcOutcome;
}

/** The Authentication-Results value: authserv-id, then one resinfo per line (folded). */
export function formatAuthenticationResults(authservId: string, report: AuthenticationReport): string {
  const rows: string[] = [];
  for (const outcome of report.spf ?? []) rows.push(spfResinfo(outcome));
  if (report.dkim) {
    if (report.dkim.length === 0) rows.push('dkim=none');
    for (const signature of report.dkim) rows.push(unfold(signature.info));
  }
  if (report.dmarc) rows.push(unfold(report.dmarc.info));
  const id =
    /^[\x21-\x7e]+$/.test(authservId) && !/[()<>@,;:\\"/[\]?=]/.test(authservId)
      ? authservId
      : `"${authservId.replace(/["\\]/g, (c) => `\\${c}`)}"`;
  if (rows.length === 0) return `${id}; none`;
  return `${id};\r\n\t${rows.join(';\r\n\t')}`;
}

function unfold(text: string): string {
  return text.replace(/\r?\n[ \t]*/g, ' ').trim();
}

/**
 * The authserv-id an Authentication-Results value starts with (RFC 8601 §2.2), after any
 * leading comments and white space; undefined when the value has none.
 */
export function authservIdOf(value: string): string | undefined {
  let i = 0;
  const skipCfws = (): void => {
    for (;;) {
      while (i < value.length && /[ \t\r\n]/.test(value[i] ?? '')) i++;
      if (value[i] !== '(') return;
      let depth = 0;
      for (; i < value.length; i++) {
        const c = value[i];
        if (c === '\\') i++;
        else if (c === '(') depth++;
        else if (c === ')' && --depth === 0) {
          i++;
          break;
        }
      }
    }
  };
  skipCfws();
  if (value[i] === '"') {
    let out = '';
    for (i++; i < value.length && value[i] !== '"'; i++) {
      if (value[i] === '\\') i++;
      out += value[i] ?? '';
    }
    return out;
  }
  const match = /^[^\s;()"]+/.exec(value.slice(i));
  return match ? match[0] : undefined;
}

/** Whether an incoming Authentication-Results claims to come from us (and so must be removed, RFC 8601 §5). */
export function claimsAuthservId(value: string, authservId: string): boolean {
  const id = authservIdOf(value);
  return (
    id !== undefined && id.toLowerCase().replace(/\.$/, '') === authservId.toLowerCase().replace(/\.$/, '')
  );
}
