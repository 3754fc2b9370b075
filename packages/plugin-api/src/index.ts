// @tern/plugin-api for plugin authors: declare a plugin, its hooks and what they return, and the
// shared vocabulary they work with. The runner lives in `@tern/plugin-api/host` (core and the app
// use it), the test kit in `@tern/plugin-api/testing`.

export { domainSchema, normalizeDomain } from './domain.js';
export {
  encodeXtext,
  envidProblem,
  MAX_ENVID_LENGTH,
  MAX_ORCPT_LENGTH,
  orcptForNotice,
  orcptParameter,
  orcptProblem,
  splitOrcpt,
} from './dsn-params.js';
export type { Duration, DurationRules } from './duration.js';
export { DURATION_HINT, durationMs, durationSchema, formatWait, parseDuration } from './duration.js';
export type { Envelope, EnvelopeRecipient, NextHop, SmtpParams, TlsMode } from './envelope.js';
export { domainOf, MAX_TAGS, parseTagFields, splitAddress, TAG_HEADER, TAG_PATTERN } from './envelope.js';
export { HookFailure, PluginOptionError, PluginRegistrationError, TernError } from './errors.js';
export type { PlatformEvent, PlatformEventSource, PlatformEventType } from './events.js';
export { PLATFORM_EVENT_TYPES } from './events.js';
export type { HeaderField } from './headers.js';
export { Headers, rfc5322Date, unfoldValue } from './headers.js';
export type {
  AuthContext,
  Awaitable,
  BaseContext,
  BeforeSendContext,
  BouncedAdvice,
  BouncedContext,
  CloseContext,
  ConnectContext,
  DeferredAdvice,
  DeferredContext,
  DeliveredContext,
  DeliveryContext,
  HeadersContext,
  HeloContext,
  HookContexts,
  HookHandler,
  HookKind,
  HookName,
  HookOptions,
  HookResults,
  HookSpec,
  LifecycleContext,
  ListenerInfo,
  ListenerKind,
  MailFromContext,
  MessageContext,
  Plugin,
  PluginHooks,
  PluginMeta,
  QueueContext,
  QueuedContext,
  RcptToContext,
  RecipientResult,
  RouteContext,
  SessionContext,
  SessionInfo,
  TlsInfo,
  TransactionContext,
  TransactionInfo,
} from './hooks.js';
export { definePlugin, HOOK_KINDS, HOOK_NAMES, HOOK_SCOPES } from './hooks.js';
export type { Cidr, ParsedIp } from './ip.js';
export { formatIp, networkOf, normalizeIp, parseCidr, parseIp, reversedLabel } from './ip.js';
export type { Logger, LogLevel } from './logger.js';
export { lazyChild, silentLogger } from './logger.js';
export type { MessageView } from './message.js';
export { dnsServerSchema, NetworkList, NetworkListError, networkSchema } from './networks.js';
export type { StandardIssue, StandardSchemaV1 } from './options.js';
export {
  choiceSchema,
  issuePath,
  numberSchema,
  parseOptions,
  parseWith,
  portSchema,
  wholeNumberSchema,
} from './options.js';
export { resolveConfigPath } from './paths.js';
export { PLUGIN_META_KEYS } from './registration.js';
export type { BounceCategory, SmtpReply } from './reply.js';
export { BOUNCE_CATEGORIES, formatReply, isBounceCategory, isValidReply, smtpReply } from './reply.js';
export type {
  AnyResultKey,
  PublishedResult,
  ResultKey,
  ResultScope,
  Results,
  ResultsReader,
  ResultValue,
} from './results.js';
export { defineResult, ResultError } from './results.js';
export { SourceTooLargeError } from './source.js';
export type { DeadlineOptions } from './timeout.js';
export { TIMED_OUT, TimeoutError, within, withTimeout } from './timeout.js';
export type {
  AcceptVerdict,
  ContinueVerdict,
  DisconnectVerdict,
  RejectVerdict,
  TempfailVerdict,
  Verdict,
  VerdictKind,
} from './verdict.js';
export { accept, disconnect, isVerdict, next, reject, tempfail } from './verdict.js';
