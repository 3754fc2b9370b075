// @tern/redis: where Redis is (one URL, a Sentinel-managed primary, or a Cluster), described once
// in the config and opened the same way by the queue, the limiters and greylisting.
export {
  connectionOf,
  describeRedis,
  isCluster,
  isClusterConnection,
  isRedisClient,
  keyBase,
  openRedis,
  primaries,
  primaryFor,
  type RedisClient,
  type RedisConnection,
  type RedisNode,
  redisConnectionSchema,
  redisUrlSchema,
  waitForReplicas,
} from './connection.js';
