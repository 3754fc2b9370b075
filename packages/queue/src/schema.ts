// The rules of the queue's plain options (what a config file can say), as zod (Standard Schema)
// schemas: the backends and the retry schedule check their options with them, and the app
// composes them into the config schema, so each rule is written once. Defaults stay beside the
// code that applies them (retry.ts, the backends).
import { durationSchema, numberSchema, parseWith, wholeNumberSchema } from '@tern/plugin-api';
import { z } from 'zod';

const count = wholeNumberSchema(1);
const timeout = durationSchema({ positive: true });
const span = durationSchema();

/** When to retry a deferred delivery and when to give up (see RetryScheduleOptions for the defaults). */
export const retrySchema = z.strictObject({
  intervals: z.array(span).min(1, 'give at least one interval').optional(),
  exponential: z
    .strictObject({
      initial: span,
      factor: numberSchema((n) => Number.isFinite(n) && n >= 1, 'a number >= 1').optional(),
      max: span,
    })
    .optional(),
  maxAge: timeout.optional(),
  delayNoticeAfter: span.optional(),
  minInterval: span.optional(),
});

/** The embedded (SQLite) backend: a file on this machine. */
export const embeddedQueueShape = {
  path: z.string().min(1),
  /** Longest wait between two looks for due jobs, in whole ms. */
  pollIntervalMs: durationSchema({ positive: true, whole: true }).optional(),
  maxActivePerDomain: count.optional(),
  timelineRetentionMs: timeout.optional(),
};

/** The Redis (BullMQ) backend: one queue shared by every node with the same prefix and name. */
export const redisQueueShape = {
  url: z.string().regex(/^rediss?:\/\//, 'a Redis URL like redis://127.0.0.1:6379'),
  prefix: z.string().min(1).optional(),
  queueName: z
    .string()
    .min(1)
    .refine((name) => !name.includes(':') && name !== 'msg' && name !== 'ops', {
      error: (issue) => `${JSON.stringify(issue.input)} may not contain ':' or be 'msg' or 'ops'`,
    })
    .optional(),
  enqueueTimeoutMs: timeout.optional(),
  stalledIntervalMs: timeout.optional(),
  lockDurationMs: timeout.optional(),
  probeIntervalMs: timeout.optional(),
  timelineRetentionMs: timeout.optional(),
  /** The job engine: Tern's own (`tern`, the default) or BullMQ (`bullmq`); see the queue README. */
  engine: z.enum(['tern', 'bullmq']).optional(),
  /**
   * Answer 250 only once this many replicas have the message (Redis WAIT), waiting at most
   * timeoutMs; otherwise 451 4.3.0. See the README on what each setting promises.
   */
  replicaAck: z.strictObject({ replicas: count, timeoutMs: timeout }).optional(),
};

/** The delivery worker of either backend. */
export const workerShape = {
  /** Jobs this process delivers at once (DEFAULT_WORKER_CONCURRENCY). */
  concurrency: count.optional(),
};

/** Checks options against a schema of this module; a bad one is a RangeError naming the field from `root`. */
export function checkQueueOptions<O>(schema: z.ZodType<O>, options: unknown, root: string): O {
  return parseWith(
    schema,
    options,
    (field, problem) => {
      throw new RangeError(`${field}: ${problem}`);
    },
    root,
  );
}
