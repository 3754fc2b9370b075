// @tern/mta: config types and `defineConfig` for config files, and `startMta` for embedding.
export {
  ConfigError,
  configSchema,
  defineConfig,
  loadConfig,
  type ResolvedConfig,
  type TernConfig,
  validateConfig,
} from './config.js';
export { openQueue, type RunningListener, type RunningMta, type StartOptions, startMta } from './mta.js';
