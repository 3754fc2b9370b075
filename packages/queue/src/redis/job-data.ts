// What a BullMQ job of the Redis backend carries, and where BullMQ keeps it.
import type { DeliveryJob, RecipientState } from '../contract.js';

/** A BullMQ job's data: the DeliveryJob's changing parts (the message itself lives in its own keys). */
export interface JobData {
  queueId: string;
  domain: string;
  /**
   * How many jobs the message was planned with. 1: this job's finish is the message's, and the
   * message's presence says the job is wanted, so the worker skips the job set (absent in jobs
   * enqueued before it was recorded: they read the set). The set is still written, for workers
   * of the previous version during an upgrade.
   */
  jobs?: number;
  envelope: DeliveryJob['envelope'];
  recipients: RecipientState[];
  attempts: number;
  createdAt: number;
  isBounce: boolean;
  /** Bytes of the stored message (absent in jobs enqueued before it was recorded). */
  size?: number;
  /** Whether a byte of the message has the high bit set, as intake found. */
  eightBit?: boolean;
  delayNotified?: boolean;
  /** When the next attempt is due (ms), for inspect(); unset before the first attempt. */
  nextAttemptAt?: number;
}

/** BullMQ's hash for one job (field `data` holds JobData as JSON). */
export function bullJobKey(prefix: string, queueName: string, jobId: string): string {
  return `${prefix}:${queueName}:${jobId}`;
}

/** BullMQ's list of jobs being delivered right now. */
export function bullActiveKey(prefix: string, queueName: string): string {
  return `${prefix}:${queueName}:active`;
}
