// @tern/plugin-api/host: what runs plugins (core's listeners, the queue's worker, the deliverer and
// the app's registry): the hook runner, per-session scopes, and the message and reply plumbing
// those share. Plugin authors need none of it: they import `@tern/plugin-api`.
export type { AcceptedMessage } from './envelope.js';
export { makeField } from './headers.js';
export { findHeaderEnd, MessageContent } from './message.js';
export { withConfigDir } from './paths.js';
export { Replies } from './reply.js';
export { isResultKey, ResultStore } from './results.js';
export type {
  HookEvent,
  HookInput,
  HostOptions,
  ObserveHook,
  StageOutcome,
  TransformHook,
  VerdictHook,
} from './runner.js';
export { DEFAULT_HOOK_TIMEOUT_MS, PluginHost, StateScope } from './runner.js';
export type { ByteSource } from './source.js';
export {
  heldChunks,
  joinSources,
  memorySource,
  memoryStream,
  readAll,
  readStream,
  SourceTooLargeError,
} from './source.js';
