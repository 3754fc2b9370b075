export type {
  AcceptedMessage,
  Envelope,
  EnvelopeRecipient,
  NextHop,
  SmtpParams,
  TlsMode,
} from './envelope.js';
export { domainOf, splitAddress } from './envelope.js';
export { HookFailure, PluginOptionError, PluginRegistrationError, TernError } from './errors.js';
export type { HeaderField } from './headers.js';
export { Headers, makeField, rfc5322Date, unfoldValue } from './headers.js';
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
export type { Logger, LogRecord } from './logger.js';
export { memoryLogger, silentLogger } from './logger.js';
export type { MessageView } from './message.js';
export { findHeaderEnd, MessageContent } from './message.js';
export { NetworkList, NetworkListError } from './networks.js';
export type { StandardIssue, StandardSchemaV1 } from './options.js';
export { issuePath, parseOptions } from './options.js';
export type { SmtpReply } from './reply.js';
export { formatReply, isValidReply, Replies, smtpReply } from './reply.js';
export type {
  AnyResultKey,
  PublishedResult,
  ResultKey,
  ResultScope,
  Results,
  ResultsReader,
  ResultValue,
} from './results.js';
export { defineResult, isResultKey, ResultError, ResultStore } from './results.js';
export type {
  HookEvent,
  HookInput,
  HostOptions,
  ObserveHook,
  StageOutcome,
  TransformHook,
  VerdictHook,
} from './runner.js';
export { DEFAULT_HOOK_TIMEOUT_MS, PluginHost, StateScope } from './runner.js';
export type { ByteSource } from './source.js';
export { joinSources, memorySource, readAll, readStream, SourceTooLargeError } from './source.js';
export type { DataResult, TestSessionOptions } from './testing.js';
export { PluginTestSession, testPlugins } from './testing.js';
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
