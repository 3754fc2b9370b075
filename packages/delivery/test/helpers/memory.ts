// Retained memory of this process, measured after full garbage collections so that garbage waiting
// to be collected does not count: what a test compares is what the code under test holds on to.
import { setTimeout as wait } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
// A context made after the flag is set has `gc`; the flag alone does not give it to this one.
const collect = runInNewContext('gc') as () => void;

/**
 * Heap and buffer memory held across full collections. V8 frees the memory of large buffers in a
 * sweeper that may still be running when gc() returns, and while we wait for it other I/O (other
 * deliveries, the test's own server) has buffers briefly in flight; so it reads a few rounds of
 * collect, wait, collect, and takes the least: what is really held on to is there in every round.
 */
export async function retainedBytes(): Promise<number> {
  let least = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 3; round++) {
    collect();
    await wait(5);
    collect();
    const usage = process.memoryUsage();
    // arrayBuffers is node's exact count of buffer memory; `external` also carries V8's lagging estimate.
    least = Math.min(least, usage.heapUsed + usage.arrayBuffers);
  }
  return least;
}

/** Follows retained memory from a baseline: `sample()` while the work runs, read `peakGrowth` after. */
export interface MemoryProbe {
  sample(): Promise<void>;
  readonly peakGrowth: number;
  readonly samples: number;
}

export async function memoryProbe(): Promise<MemoryProbe> {
  const baseline = await retainedBytes();
  let peak = 0;
  let samples = 0;
  return {
    async sample(): Promise<void> {
      samples++;
      peak = Math.max(peak, (await retainedBytes()) - baseline);
    },
    get peakGrowth(): number {
      return peak;
    },
    get samples(): number {
      return samples;
    },
  };
}
