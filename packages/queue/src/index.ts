// @tern/queue: the queue contract, the shared retry/bounce logic and the backends.
export {
  type AttemptOutcome,
  type AttemptSettings,
  type AttemptStore,
  attemptSettings,
  LOCAL_ERROR_REPLY,
  runDeliveryAttempt,
} from './attempt.js';
export { BODY_SLICE_BYTES, INLINE_BODY_LIMIT } from './body.js';
export {
  type BounceClassification,
  BounceClassifier,
  type BounceClassifierOptions,
  type BounceRule,
  BounceRuleError,
  checkBounceRules,
  defaultBounceClassifier,
  MAX_RULE_TEXT,
  MAX_RULES,
} from './bounce-classifier.js';
export type {
  AttemptResult,
  BounceNowOptions,
  BounceNowResult,
  Deliver,
  DeliveryJob,
  DeliveryReport,
  DestinationCounts,
  DestinationSummary,
  IncomingMessage,
  JobStateFilter,
  LimitWait,
  MessageDetails,
  MessageRecord,
  OutcomeObserver,
  QueueBackend,
  QueuedJob,
  QueueFilter,
  QueueHealth,
  QueueOperations,
  QueuePage,
  QueueSummary,
  RecipientOutcome,
  RecipientState,
  RecipientStatus,
  ShapingNote,
  WorkerOptions,
} from './contract.js';
// Operator operations and message timelines (added for the admin API; see contract.ts).
export { DEFAULT_WORKER_CONCURRENCY, isQueueOperations } from './contract.js';
export {
  type AttemptDecision,
  decideAttempt,
  type FailedRecipient,
  MISSING_OUTCOME_REPLY,
  type SettledRecipient,
} from './decide.js';
export {
  buildDsn,
  type DsnInput,
  type DsnOptions,
  type DsnRecipient,
  HEADER_READ_LIMIT,
  headerBlockOf,
} from './dsn.js';
export * from './embedded/index.js';
export { type QueueDriver, QueueDriverMissingError, QueueUnavailableError } from './errors.js';
export { type IdempotencyClaim, type IdempotencyStore, MAX_IDEMPOTENCY_KEY } from './idempotency.js';
export {
  DEFAULT_LIST_LIMIT,
  describeHop,
  isQueueId,
  MAX_LIST_LIMIT,
  normalizeMessageId,
  OperationInputError,
  operatorBounceReply,
  queueIdTime,
} from './operations.js';
export { DEFAULT_PACE_QUIET_MS, DestinationPacer } from './pacing.js';
export { jobIdOf, newQueueId, planJobs } from './plan.js';
export * from './redis/index.js';
export {
  DEFAULT_MAX_AGE_MS,
  DEFAULT_RETRY_INTERVALS,
  MIN_RETRY_INTERVAL_MS,
  RetrySchedule,
  type RetryScheduleOptions,
} from './retry.js';
export {
  checkQueueOptions,
  embeddedQueueShape,
  redisQueueShape,
  retrySchema,
  workerShape,
} from './schema.js';
export {
  ANY_SENDER,
  DEFAULT_SUPPRESSION_PAGE,
  isActiveSuppression,
  isTagScope,
  MAX_SUPPRESSION_PAGE,
  MAX_SUPPRESSION_REASON,
  messageTagScopes,
  SUPPRESSION_SOURCES,
  type Suppression,
  type SuppressionPage,
  type SuppressionQuery,
  type SuppressionSource,
  type SuppressionStore,
  suppressionAddress,
  suppressionEntry,
  suppressionScope,
  suppressionScopes,
  TAG_SCOPE_PREFIX,
  tagScope,
} from './suppression.js';
export {
  type AsyncBounceEvent,
  type AttemptEvent,
  type AttemptRecipient,
  attemptEvent,
  type ComplaintEvent,
  clip,
  DEFAULT_TIMELINE_RETENTION_MS,
  type HookVerdictEvent,
  type OperatorAction,
  type OperatorEvent,
  type ReceivedEvent,
  redactHop,
  type ShapingEvent,
  shapingEvents,
  type TimelineEvent,
} from './timeline.js';
export {
  checkDay,
  dayBefore,
  type JsonValue,
  TLS_COUNTS_RETENTION_DAYS,
  type TlsDayCounts,
  type TlsOutcomeCount,
  type TlsStore,
} from './tls-store.js';
export {
  checkEndpointName,
  type EnqueueOptions,
  MAX_WEBHOOK_ERROR,
  type OutboxEvent,
  type OutboxWrite,
  WEBHOOK_ENDPOINT_NAME,
  type WebhookEndpointState,
  type WebhookOutbox,
  type WebhookPostRecord,
} from './webhook-outbox.js';
