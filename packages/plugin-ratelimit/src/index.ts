// @tern/plugin-ratelimit: cluster-wide rate limits (GCRA in Redis) with an in-process fallback,
// the SMTP plugin that applies them, and the throttle interface @tern/delivery uses.
export { addressGroup, NetworkList, parseCidr } from './address.js';
export { type Duration, durationMs, formatWait } from './duration.js';
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
} from './limiter.js';
export {
  PLUGIN_NAME,
  type RateLimitExemptions,
  type RateLimitOptions,
  type RateLimitRule,
  type RuleAction,
  type RuleCount,
  type RuleKey,
  type RuleReply,
} from './options.js';
export { rateLimit } from './plugin.js';
