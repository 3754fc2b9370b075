// @tern/plugin-spam: spam filtering for an inbound MX (DNS lists, SPF, DKIM, DMARC, heuristics,
// rspamd and SpamAssassin, greylisting), combined into one score and one action per message.
// spamFilter() is the preset; each check is also a plugin of its own that publishes its result
// (the exported `...Result` keys) for the score and for plugins with their own policy.
export type {
  DkimResultKind,
  DkimSignatureOutcome,
  DkimVerification,
  DmarcOutcome,
  DmarcResultKind,
  SpfOutcome,
  SpfResultKind,
} from './auth.js';
export {
  AUTHENTICATION_RESULTS,
  type AuthenticationResultsOptions,
  authenticationResults,
} from './checks/authentication-results.js';
export { DKIM_CHECK, type DkimCheckOptions, dkimCheck, dkimResult } from './checks/dkim.js';
export { DMARC_CHECK, type DmarcCheckOptions, dmarcCheck, dmarcResult } from './checks/dmarc.js';
export {
  DNS_LISTS_CHECK,
  type DnsListCheckOptions,
  dnsListCheck,
  dnsListResult,
} from './checks/dns-lists.js';
export {
  GREYLIST_CHECK,
  type GreylistCheckOptions,
  type GreylistRecipientOutcome,
  greylistCheck,
  greylistResult,
} from './checks/greylist.js';
export {
  HEURISTICS_CHECK,
  type HeuristicsCheckOptions,
  type HeuristicsOutcome,
  heuristicsCheck,
  heuristicsResult,
} from './checks/heuristics.js';
export { RSPAMD_CHECK, type RspamdCheckOptions, rspamdCheck, rspamdResult } from './checks/rspamd.js';
export { SCORE_CHECK, type SpamScoreOptions, spamDecisionResult, spamScore } from './checks/score.js';
export { SPAMD_CHECK, type SpamdCheckOptions, spamdCheck, spamdResult } from './checks/spamd.js';
export { SPF_CHECK, type SpfCheckOptions, type SpfResult, spfCheck, spfResult } from './checks/spf.js';
export type { ForcedAction, SpamAction, SpamDecision } from './decision.js';
export { ACTION_SEVERITY } from './decision.js';
export type { DnsListHit, DnsListResult } from './dnslist.js';
export type { GreylistOutcome, GreylistStore, GreylistVerdict } from './greylist.js';
export type { HeuristicHit } from './heuristics.js';
export { GTUBE } from './heuristics.js';
export type { ResolvedSpamOptions, SpamOptions } from './options.js';
export { PLUGIN_NAME, spamOptionsSchema } from './options.js';
export type { SpamPlugin, SpamSessionState, SpamTransactionState } from './plugin.js';
export { spamFilter } from './plugin.js';
export type { ScanResult } from './scanners.js';
export type { SpamSymbol, SymbolDefinition, SymbolName } from './symbols.js';
export { SYMBOLS } from './symbols.js';
