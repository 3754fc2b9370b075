// @tern/delivery: the outbound side of Tern (routing, MX, SMTP/LMTP client, pooling, throttles).
export {
  createDeliverer,
  type Deliverer,
  type DelivererOptions,
  type LimitOptions,
  type LocalDelivery,
} from './deliverer.js';
export { DataEncoder, encodeData, hasEightBitBytes, isNonAscii, type WireMessage } from './encode.js';
export {
  type AddressOrder,
  type DnsOptions,
  type LookupFailure,
  type MxHost,
  type MxResolution,
  MxResolver,
} from './mx.js';
export { DEFAULT_MAX_HEADER_BYTES, type OutboundMessage } from './outbound.js';
export { classify, DeliveryReplies, toSmtpReply, type WireReply } from './reply.js';
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
