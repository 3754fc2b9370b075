// @tern/limiter: GCRA rates and concurrency leases, cluster-wide in Redis (one Lua script per
// decision) or in process, with a fail mode for when Redis cannot be asked. The inbound rate-limit
// plugin and the outbound per-destination throttles both use it.
export {
  createLimiter,
  DEFAULT_LEASE_TTL_MS,
  DEFAULT_PREFIX,
  DEFAULT_TIMEOUT_MS,
  type DeliveryThrottle,
  type FailMode,
  type LeaseRequest,
  type LeaseResult,
  type Limiter,
  type LimiterOptions,
  type Rate,
  type RateRequest,
  type RateResult,
  type SingleLeaseResult,
  type Throttle,
} from './limiter.js';
