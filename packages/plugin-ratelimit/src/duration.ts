// Windows ('30s', '1h') are parsed, and waits worded, by @tern/limiter: the plugin's rules and the
// limiter must agree on what a window is. This module keeps the plugin's own import path.
export { type Duration, durationMs, formatWait } from '@tern/limiter';
