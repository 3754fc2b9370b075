import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `predicate` every `intervalMs` until it returns true, or throws once `timeoutMs` has passed.
 * A predicate that throws fails the wait at once: a broken condition should not look like a slow one.
 */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() >= deadline) {
      throw new Error(`waitFor: condition still false after ${timeoutMs} ms: ${describe(predicate)}`);
    }
    await sleep(intervalMs);
  }
}

function describe(predicate: () => unknown): string {
  const source = predicate.toString().replace(/\s+/g, ' ');
  return source.length > 200 ? `${source.slice(0, 200)}…` : source;
}
