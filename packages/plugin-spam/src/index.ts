// @tern/plugin-spam: spam filtering for an inbound MX (DNS lists, SPF, DKIM, DMARC, heuristics,
// rspamd and SpamAssassin, greylisting), combined into one score and one action per message.
export type {
  DkimResultKind,
  DmarcOutcome,
  DmarcResultKind,
  SpfOutcome,
  SpfResultKind,
} from './auth.js';
export type { ForcedAction, SpamAction, SpamDecision } from './decision.js';
export { ACTION_SEVERITY } from './decision.js';
export type { DnsListHit, DnsListResult } from './dnslist.js';
export type { GreylistOutcome, GreylistStore, GreylistVerdict } from './greylist.js';
export { GTUBE } from './heuristics.js';
export type { ResolvedSpamOptions, SpamOptions } from './options.js';
export { PLUGIN_NAME, spamOptionsSchema } from './options.js';
export type { SpamPlugin, SpamSessionState, SpamTransactionState } from './plugin.js';
export { spamFilter } from './plugin.js';
export type { ScanResult } from './scanners.js';
export type { SpamSymbol, SymbolDefinition, SymbolName } from './symbols.js';
export { SYMBOLS } from './symbols.js';
