// The one way to give work a deadline: race it against a timer that is always cleared, so no
// timer outlives the work and no caller forgets to clear one.

/** What {@link within} resolves to when the time ran out first. */
export const TIMED_OUT: unique symbol = Symbol('timed out');

/** Work that took longer than it was allowed. */
export class TimeoutError extends Error {
  readonly ms: number;
  constructor(message: string, ms: number) {
    super(message);
    this.name = 'TimeoutError';
    this.ms = ms;
  }
}

export interface DeadlineOptions {
  /** Let the process exit while only this timer is pending (default false). */
  readonly unref?: boolean;
}

/**
 * The outcome of `work`, or {@link TIMED_OUT} when `ms` passes first. A function is called on the
 * next microtask, so a synchronous throw becomes a rejection. The work is not cancelled: pass it
 * an AbortSignal of your own when it can stop.
 */
export function within<T>(
  work: PromiseLike<T> | (() => T | PromiseLike<T>),
  ms: number,
  options: DeadlineOptions = {},
): Promise<T | typeof TIMED_OUT> {
  const running = typeof work === 'function' ? Promise.resolve().then(work) : Promise.resolve(work);
  // One promise settled by whichever comes first, not a race of two: Promise.race, a promise for
  // the timer and an async function made six promises per call (an enqueue, a hook), and those
  // run interpreted for the first thousand messages.
  return new Promise<T | typeof TIMED_OUT>((resolve, reject) => {
    const timer = setTimeout(resolve, ms, TIMED_OUT);
    if (options.unref === true) timer.unref();
    running.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/**
 * The outcome of `work`, or a rejection when `ms` passes first: with `failure()` when given, else
 * a {@link TimeoutError} saying `message (ms ms)`.
 */
export async function withTimeout<T>(
  work: PromiseLike<T> | (() => T | PromiseLike<T>),
  ms: number,
  failure: string | (() => Error),
  options: DeadlineOptions = {},
): Promise<T> {
  const value = await within(work, ms, options);
  if (value !== TIMED_OUT) return value;
  throw typeof failure === 'function' ? failure() : new TimeoutError(`${failure} (${ms} ms)`, ms);
}
