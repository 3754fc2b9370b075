// @tern/delivery: the outbound side of Tern (routing, MX, SMTP/LMTP client, pooling, throttles).

export {
  type ActiveBackoff,
  BACKOFF_ACTIONS,
  Backoff,
  type BackoffAction,
  type BackoffActionKind,
  type BackoffRule,
  type CircuitBreakerOptions,
  compileRules,
} from './backoff.js';
export {
  isUsable,
  lookupTlsa,
  type TlsaLookup,
  type TlsaRecord,
  tlsaText,
  verifyDane,
} from './dane.js';
export { DEFAULT_BACKOFF_RULES } from './default-rules.js';
export {
  createDeliverer,
  DEFAULT_SOURCE,
  type Deliverer,
  type DelivererOptions,
  type LimitOptions,
  type LocalDelivery,
  type ShapingOptions,
} from './deliverer.js';
export {
  type AnswerRecord,
  type DnsAnswer,
  DnsClient,
  type DnsClientOptions,
  type RecordType,
} from './dns-client.js';
export {
  Egress,
  type EgressOptions,
  type EgressPool,
  type EgressSelector,
  type EgressSource,
} from './egress.js';
export { DataEncoder, encodeData, hasEightBitBytes, isNonAscii, type WireMessage } from './encode.js';
export {
  MtaSts,
  type MtaStsLookup,
  type MtaStsMode,
  type MtaStsOptions,
  type MtaStsPolicy,
  type MtaStsProblem,
  mxMatchesPolicy,
  parseMtaStsPolicy,
  parseMtaStsRecord,
} from './mta-sts.js';
export {
  type AddressOrder,
  type DnsOptions,
  type Lookup,
  type LookupFailure,
  type MxHost,
  type MxResolution,
  MxResolver,
} from './mx.js';
export { DEFAULT_MAX_HEADER_BYTES, type OutboundMessage } from './outbound.js';
export { type JsonValue, MemoryPolicyStore, type PolicyStore } from './policy-store.js';
export { DEFAULT_PROVIDERS, type ProviderDefinition, Providers } from './providers.js';
export { classify, DeliveryReplies, toSmtpReply, type WireReply } from './reply.js';
export {
  isBounceAddress,
  type ReturnPathOptions,
  type ReturnPathToken,
  recipientTag,
  returnPathFor,
  verifyReturnPath,
} from './return-path.js';
export {
  backoffRuleSchema,
  deliveryDnsShape,
  deliveryOptionsSchema,
  deliveryShape,
  deliveryTlsShape,
  destinationLimitSchema,
  egressSchema,
  nextHopSchema,
  tlsModeSchema,
} from './schema.js';
export {
  type Capabilities,
  DEFAULT_REPLY_LIMITS,
  DEFAULT_TIMEOUTS,
  parseCapabilities,
  type ReplyLimits,
  SessionError,
  type SessionSettings,
  type SessionTarget,
  type SessionTimeouts,
  SmtpSession,
  type TlsSettings,
  type Transaction,
  type TransactionRecipient,
} from './session.js';
export {
  type Admission,
  admit,
  type DestinationLimit,
  type Throttle,
  type ThrottleLeaseResult,
  type ThrottleRate,
  type ThrottleRateResult,
} from './throttle.js';
export { matchesName, type TlsCheck, type TlsFailureType, type TlsVerdict } from './tls-check.js';
export {
  type AppliedTlsPolicy,
  type DeliveryTls,
  defaultTlsLevel,
  TLS_POLICY_LEVELS,
  type TlsPolicyEntry,
  type TlsPolicyLevel,
  type TlsPolicyTable,
  tlsPolicyFor,
} from './tls-policy.js';
export {
  aggregateTlsReport,
  buildTlsReport,
  failureDetailOf,
  MemoryTlsReportSink,
  reportPolicyOf,
  StoreTlsReportSink,
  type StoreTlsReportSinkOptions,
  type TlsFailureDetail,
  type TlsPolicyOutcome,
  type TlsPolicyType,
  type TlsReport,
  type TlsReportPolicy,
  type TlsReportPolicyId,
  type TlsReportSink,
  type TlsResultType,
  utcDay,
} from './tls-report.js';
export {
  type PreparedTlsReport,
  parseTlsRptRecord,
  type TlsReportDelivery,
  TlsReportSender,
  type TlsReportSenderOptions,
  type TlsRptRecord,
} from './tls-report-send.js';
export { checkWarmup, Warmup, type WarmupSchedule, type WarmupStatus } from './warmup.js';
