// Retained memory of this process, measured after full garbage collections so that garbage waiting
// to be collected does not count: what a test compares is what the code under test holds on to.
import { retainedMemory } from '@tern/testkit';

/** Heap and buffer memory held across full collections (the testkit's measure, shared with the fuzz suites). */
export const retainedBytes: () => Promise<number> = retainedMemory;

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
