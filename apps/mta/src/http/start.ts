// Starts HTTP injection for a running MTA when the config has an `http` block: the API keys file,
// the injection listener, and what it shares with SMTP intake (the plugin registry's current
// host, the ops sink and recorder, the spool, the queue's suppression list and idempotency keys).
import type { IntakeSpool, MessageSink } from '@tern/core';
import type { Logger } from '@tern/plugin-api';
import type { PluginHost } from '@tern/plugin-api/host';
import type { QueueBackend } from '@tern/queue';
import { configPath, type ResolvedConfig, readKeyPair } from '../config.js';
import type { OpsRuntime } from '../ops/runtime.js';
import { ApiKeyStore } from './api-keys.js';
import { DEFAULT_INJECTION_LIMITS } from './inject.js';
import { INJECTION_ERROR_CODES } from './openapi.js';
import { type InjectionServer, startInjectionServer } from './server.js';

export interface HttpInjectionParts {
  readonly queue: QueueBackend;
  readonly sink: MessageSink;
  readonly spool: IntakeSpool;
  /** The current global plugin host, asked per request (a reload swaps it). */
  readonly plugins: () => PluginHost;
  readonly hostname: string;
  readonly ops: OpsRuntime;
  readonly logger: Logger;
  /** The tags with suppression lists of their own, as the config says now. */
  readonly tagScopes?: () => ReadonlySet<string>;
}

const RESULTS = new Set<string>([...INJECTION_ERROR_CODES, 'queued', 'duplicate', 'openapi']);

/** The injection listener of `config.http`, or undefined when there is none. */
export async function startHttpInjection(
  config: ResolvedConfig,
  parts: HttpInjectionParts,
): Promise<InjectionServer | undefined> {
  const http = config.http;
  if (!http) return undefined;
  const keys = await ApiKeyStore.open(configPath(config, http.apiKeysFile));
  const { queue, ops } = parts;
  return startInjectionServer({
    listen: http.listen,
    ...(http.tls ? { tls: readKeyPair(config, http.tls, 'config.http.tls') } : {}),
    keys,
    deps: {
      plugins: parts.plugins,
      sink: parts.sink,
      spool: parts.spool,
      suppressions: queue.suppressions,
      ...(parts.tagScopes ? { tagScopes: parts.tagScopes } : {}),
      idempotency: queue.idempotency,
      hostname: parts.hostname,
      log: parts.logger.child({ component: 'http' }),
      sessions: ops.recorder,
      limits: {
        maxMessageBytes: http.maxMessageSize ?? DEFAULT_INJECTION_LIMITS.maxMessageBytes,
        maxRecipients: http.maxRecipients ?? DEFAULT_INJECTION_LIMITS.maxRecipients,
        idempotencyWindowMs: http.idempotencyWindow ?? DEFAULT_INJECTION_LIMITS.idempotencyWindowMs,
      },
    },
    writable: () => queue.health().writable,
    ...(http.maxConcurrentRequests !== undefined
      ? { maxConcurrentRequests: http.maxConcurrentRequests }
      : {}),
    ...(http.requestTimeout !== undefined ? { requestTimeoutMs: http.requestTimeout } : {}),
    onResult: (source, result) =>
      ops.metrics?.injections.inc({ source, result: RESULTS.has(result) ? result : 'other' }),
    logger: parts.logger,
  });
}
