export { bodyStream } from './body-stream.js';
export { type OpsKeys, opsKeys } from './ops-keys.js';
export {
  openRedisQueue,
  RedisQueue,
  type RedisQueueOptions,
  type ReplicaAck,
  ReplicaAckError,
  redisKeys,
} from './redis-queue.js';
export { checkRedisSafety } from './safety.js';
export { type EngineKeys, engineKeys } from './tern-engine.js';
export { RedisTlsStore, tlsKeys } from './tls-store.js';
