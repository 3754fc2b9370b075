// Start-up check of the Redis settings that decide whether accepted mail survives: eviction,
// AOF and fsync. It only warns (apps/mta logs the lines); a locked-down CONFIG is not an error.
import type { Redis } from 'ioredis';

/**
 * Reads maxmemory-policy, appendonly, appendfsync and save and returns one line per unsafe
 * setting, each naming the risk and the fix. Empty when all is well. Never throws: when CONFIG is
 * renamed, disabled or denied by an ACL, it says so in a single warning.
 */
export async function checkRedisSafety(client: Redis): Promise<string[]> {
  let settings: Record<string, string>;
  try {
    settings = {};
    for (const name of ['maxmemory-policy', 'appendonly', 'appendfsync', 'save']) {
      const reply = (await client.call('CONFIG', 'GET', name)) as string[];
      for (let i = 0; i + 1 < reply.length; i += 2) settings[reply[i] as string] = reply[i + 1] as string;
    }
  } catch (error) {
    return [
      `could not read the Redis settings (CONFIG GET: ${(error as Error).message}); check by hand that ` +
        'maxmemory-policy is noeviction and appendonly is yes',
    ];
  }

  const warnings: string[] = [];
  const policy = settings['maxmemory-policy'];
  if (policy !== undefined && policy !== 'noeviction') {
    warnings.push(`maxmemory-policy is ${policy}: Redis may evict queued mail; set noeviction`);
  }
  if (settings.appendonly === 'no') {
    const snapshots = settings.save
      ? `the last snapshot (save ${settings.save})`
      : 'start-up (no snapshots either)';
    warnings.push(
      `appendonly is no: a Redis crash or restart loses all mail accepted since ${snapshots}; ` +
        'set appendonly yes with appendfsync everysec (or always)',
    );
  } else if (settings.appendfsync === 'no') {
    warnings.push(
      'appendfsync is no: the kernel decides when queued mail reaches the disk (often 30 s) and a power ' +
        'loss loses it; set appendfsync everysec (at most ~1 s lost) or always (none lost, slower)',
    );
  }
  return warnings;
}
