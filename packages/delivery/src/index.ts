// @tern/delivery: the outbound side of Tern (routing, MX, SMTP/LMTP client, pooling, throttles).

export {
  isUsable,
  lookupTlsa,
  type TlsaLookup,
  type TlsaRecord,
  tlsaText,
  verifyDane,
} from './dane.js';
export {
  createDeliverer,
  type Deliverer,
  type DelivererOptions,
  type LimitOptions,
  type LocalDelivery,
} from './deliverer.js';
export {
  type AnswerRecord,
  type DnsAnswer,
  DnsClient,
  type DnsClientOptions,
  type RecordType,
} from './dns-client.js';
export { DataEncoder, encodeData, hasEightBitBytes, isNonAscii, type WireMessage } from './encode.js';
export {
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
export { classify, DeliveryReplies, toSmtpReply, type WireReply } from './reply.js';
export {
  deliveryOptionsSchema,
  deliveryShape,
  deliveryTlsShape,
  destinationLimitSchema,
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
  TLS_POLICY_LEVELS,
  type TlsPolicyEntry,
  type TlsPolicyLevel,
  type TlsPolicyTable,
} from './tls-policy.js';
export {
  aggregateTlsReport,
  MemoryTlsReportSink,
  type TlsPolicyOutcome,
  type TlsPolicyType,
  type TlsReportPolicy,
  type TlsReportSink,
  type TlsResultType,
} from './tls-report.js';
