// @tern/plugin-ratelimit: the SMTP plugin that applies cluster-wide rate limits. The limiter itself
// lives in @tern/limiter (shared with @tern/delivery's throttles); it is re-exported here so code
// written against this package's documented API keeps working.

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
} from '@tern/limiter';
export { NetworkList, parseCidr } from '@tern/plugin-api';
export { addressGroup } from './address.js';
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
