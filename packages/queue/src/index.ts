// @tern/queue: the queue contract, the shared retry/bounce logic and the backends.
export {
  type AttemptOutcome,
  type AttemptSettings,
  type AttemptStore,
  attemptSettings,
  LOCAL_ERROR_REPLY,
  runDeliveryAttempt,
} from './attempt.js';
export type {
  AttemptResult,
  Deliver,
  DeliveryJob,
  DeliveryReport,
  IncomingMessage,
  MessageRecord,
  QueueBackend,
  RecipientOutcome,
  RecipientState,
  RecipientStatus,
  WorkerOptions,
} from './contract.js';
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
  rfc5322Date,
} from './dsn.js';
export * from './embedded/index.js';
export { QueueUnavailableError } from './errors.js';
export { jobIdOf, newQueueId, planJobs } from './plan.js';
export * from './redis/index.js';
export {
  DEFAULT_MAX_AGE_MS,
  DEFAULT_RETRY_INTERVALS,
  type Duration,
  durationMs,
  MIN_RETRY_INTERVAL_MS,
  RetrySchedule,
  type RetryScheduleOptions,
} from './retry.js';
