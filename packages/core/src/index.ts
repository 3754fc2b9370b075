// @tern/core: SMTP listeners over smtp-server, the stage adapter that runs plugin hooks, the relay
// policy, AUTH, and the intake that hands each message to a sink (the queue).
export { type Acceptance, type AcceptInput, acceptMessage, TAG_HEADER } from './accept.js';
export { SMTP_VERBS, type SmtpVerb } from './command-stream.js';
export { type HostResolver, systemResolver } from './dns.js';
export { type MessageReadOptions, type MessageReadResult, readMessage } from './intake.js';
export {
  type CloseOptions,
  createListener,
  type Listener,
  type ListenerAddress,
  type ListenerDeps,
  type ReplyCommand,
  type ReplyEvent,
  type SessionObserver,
} from './listener.js';
export {
  type BareLineEndingPolicy,
  type KeyPair,
  LISTENER_DEFAULTS,
  ListenerConfigError,
  type ListenerLimits,
  type ListenerOptions,
  type ListenerTimeouts,
  type ListenerTls,
  type LongLinePolicy,
  MIN_RECIPIENTS,
  type ResolvedListenerOptions,
  resolveListenerOptions,
  type StressTimeouts,
} from './options.js';
export { CoreReplies } from './replies.js';
export {
  hostnameSchema,
  intakeSchema,
  listenerKindSchema,
  listenerLimitsSchema,
  listenerSchema,
  listenerShape,
  listenHostSchema,
} from './schema.js';
export { rewriteLines, SecretChecker, WatchedFile } from './secret-file.js';
export {
  type IncomingMessage,
  InMemoryQueue,
  type InMemoryQueueBehaviour,
  type InMemoryQueuedMessage,
  type InMemoryQueueOptions,
  type MessageSink,
} from './sink.js';
export {
  BodyWriter,
  IntakeSpool,
  MemoryBudget,
  SPOOL_DEFAULTS,
  SpoolError,
  type SpoolOptions,
  type SpoolStats,
} from './spool.js';
export {
  addUser,
  DEFAULT_SCRYPT_PARAMS,
  FileUserStore,
  hashPassword,
  parseUsersFile,
  type ScryptParams,
  type UserStore,
  UsersFileError,
  verifyPassword,
} from './users.js';
