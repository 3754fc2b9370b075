// The dkim plugin: signs at the end of the queue stage, after every other transform, so nothing
// changes the message between signing and queueing.
import { definePlugin, type Plugin, type QueueContext } from '@tern/plugin-api';
import { authorDomain } from './author.js';
import {
  type DkimOptions,
  type DkimSettings,
  loadDkimSettings,
  PLUGIN_NAME,
  type SigningKey,
} from './options.js';
import { FIELD_NAME } from './schema.js';
import { hasSignatureFrom, signMessage } from './sign.js';
import { SignerPool } from './signer.js';

/** Jobs that wait for a busy signing thread at most; more are signed on libuv's pool (never refused). */
const SIGNING_QUEUE_LIMIT = 256;

/**
 * The DKIM signing plugin. Validates the options and loads every key now, so a bad option or key
 * stops start-up with the field, the domain and the file named (PluginOptionError).
 */
/** The keys each dkim() plugin signs with, so `tern dkim check --config` can check the configured ones. */
const configuredKeys = new WeakMap<Plugin, readonly SigningKey[]>();

/** The signing keys of a plugin made by dkim() (undefined for any other plugin). */
export function signingKeysOf(plugin: Plugin): readonly SigningKey[] | undefined {
  return configuredKeys.get(plugin);
}

export function dkim(options: DkimOptions): Plugin {
  const loaded = loadDkimSettings(options);
  // Made at the first signature, not here: a config check or a plugin that never signs starts no thread.
  let pool: SignerPool | undefined;
  const settings: DkimSettings =
    loaded.signingThreads === 0
      ? loaded
      : {
          ...loaded,
          signer: (algorithm, data, key) => {
            pool ??= new SignerPool({
              threads: loaded.signingThreads,
              queueLimit: SIGNING_QUEUE_LIMIT,
              nice: loaded.signingNice,
            });
            return pool.sign(algorithm, data, key);
          },
        };
  const plugin = definePlugin({
    name: PLUGIN_NAME,
    // Plugin-level post and hook-level post: after every other queue transform, including other post plugins' normal hooks.
    enforce: 'post',
    init(ctx) {
      for (const warning of settings.warnings) ctx.log.warn({ plugin: PLUGIN_NAME }, warning);
    },
    async shutdown() {
      const closing = pool;
      pool = undefined;
      await closing?.close();
    },
    queue: {
      order: 'post',
      async handler(ctx) {
        await signQueued(ctx, settings);
      },
    },
  });
  configuredKeys.set(plugin, settings.keys);
  return plugin;
}

async function signQueued(ctx: QueueContext<unknown, unknown>, settings: DkimSettings): Promise<void> {
  const { session } = ctx;
  if (!settings.signUntrusted && !session.trusted && session.user === undefined) {
    ctx.log.debug('not signed: the client neither authenticated nor came from a trusted network');
    return;
  }
  // Verifiers read a line that is neither a field nor a fold in different ways (mailauth as part
  // of the field above, dkimpy not at all, Postfix as the start of the body), so no signature over
  // such a block verifies everywhere: better none than one that fails.
  const stray = ctx.message.headers.fields().find((f) => !FIELD_NAME.test(f.name));
  if (stray) {
    const line = stray.raw.split('\r\n')[0]?.slice(0, 80) ?? '';
    ctx.log.warn(`not signed: the header block has a line that is not a field: ${JSON.stringify(line)}`);
    return;
  }
  const domain = authorDomain(ctx.message.headers);
  const chosen = keysFor(domain, settings);
  const keys = chosen.filter((k) => !hasSignatureFrom(ctx.message.headers, k.domain, k.selector));
  if (keys.length === 0) {
    ctx.log.debug(
      { fromDomain: domain ?? null },
      chosen.length === 0
        ? 'not signed: no key for the From domain'
        : 'not signed: already signed with these keys',
    );
    return;
  }
  const added = await signMessage(ctx.message, keys, settings);
  ctx.log.debug({ signatures: added.map((s) => `${s.domain}/${s.selector}/${s.algorithm}`) }, 'DKIM signed');
}

/**
 * The active keys for a From domain: its own, else its nearest configured parent's when allowed,
 * else the fallback (also when the domain's keys are all inactive).
 */
function keysFor(domain: string | undefined, settings: DkimSettings): readonly SigningKey[] {
  const active = (keys: readonly SigningKey[] | undefined): readonly SigningKey[] =>
    keys?.filter((k) => k.active) ?? [];
  if (domain !== undefined) {
    const own = active(settings.byDomain.get(domain));
    if (own.length > 0) return own;
    if (settings.matchParentDomain) {
      const labels = domain.split('.');
      // Stop before the last label: a TLD is never a signing domain.
      for (let i = 1; i < labels.length - 1; i++) {
        const parent = active(settings.byDomain.get(labels.slice(i).join('.')));
        if (parent.length > 0) return parent;
      }
    }
  }
  return active(settings.fallback);
}
