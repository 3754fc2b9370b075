// A scripted stand-in for @tern/delivery: answers each recipient as the test says and records
// every call with the message it could read.
import { text } from 'node:stream/consumers';
import type { NextHop } from '@tern/plugin-api';
import type {
  AttemptResult,
  Deliver,
  DeliveryJob,
  DeliveryReport,
  RecipientOutcome,
} from '../../src/contract.js';

export interface Call {
  readonly job: DeliveryJob;
  readonly at: number;
  readonly message: string;
}

const REPLIES = {
  delivered: { code: 250, enhanced: '2.0.0', text: 'OK' },
  deferred: { code: 451, enhanced: '4.2.0', text: 'Try again later' },
  failed: { code: 550, enhanced: '5.1.1', text: 'No such user' },
} as const;

export const HOP: NextHop = { type: 'smtp', host: '127.0.0.1', port: 2525 };

/** `answer` picks each recipient's result; `calls` fills in as attempts arrive. */
export function scriptedDeliver(
  answer: (address: string, job: DeliveryJob, calls: readonly Call[]) => AttemptResult = () => 'delivered',
): { deliver: Deliver; calls: Call[] } {
  const calls: Call[] = [];
  const deliver: Deliver = async (job, message) => {
    const body = await text(await message());
    calls.push({ job, at: Date.now(), message: body });
    const recipients: RecipientOutcome[] = job.recipients.map((r) => {
      const result = answer(r.address, job, calls);
      return { address: r.address, result, reply: REPLIES[result] };
    });
    return { recipients, hop: HOP, remoteMta: 'mx.dest.test[127.0.0.1]:2525' };
  };
  return { deliver, calls };
}

/** The same result for every recipient of a job. */
export function reportAll(job: DeliveryJob, result: AttemptResult): DeliveryReport {
  return {
    recipients: job.recipients.map((r) => ({ address: r.address, result, reply: REPLIES[result] })),
    hop: HOP,
    remoteMta: 'mx.dest.test[127.0.0.1]:2525',
  };
}

/** Deliveries that wait until `open()`, then answer `result` for everyone: jobs held in flight. */
export function gatedDeliver(result: AttemptResult): {
  deliver: Deliver;
  started: DeliveryJob[];
  open: () => void;
} {
  const started: DeliveryJob[] = [];
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const deliver: Deliver = async (job) => {
    started.push(job);
    await gate;
    return reportAll(job, result);
  };
  return { deliver, started, open };
}
