// Typed errors with stable codes, after Fastify's FST_ERR_* habit.
import type { HookName } from './hooks.js';

export class TernError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A plugin was given an option it cannot work with; names the plugin and the field. */
export class PluginOptionError extends TernError {
  readonly plugin: string;
  readonly field: string;
  constructor(plugin: string, field: string, problem: string) {
    super('TERN_ERR_PLUGIN_OPTION', `plugin ${plugin}: option ${field}: ${problem}`);
    this.plugin = plugin;
    this.field = field;
  }
}

/** A hook threw, timed out or returned something it may not: a bug in the plugin, never a decision. */
export class HookFailure extends TernError {
  readonly plugin: string;
  readonly hook: HookName;
  constructor(plugin: string, hook: HookName, reason: string, cause?: unknown) {
    super('TERN_ERR_HOOK_FAILED', `plugin ${plugin}: hook ${hook} ${reason}`, { cause });
    this.plugin = plugin;
    this.hook = hook;
  }
}

/** Two plugins with one name, or a plugin object that is not one. */
export class PluginRegistrationError extends TernError {
  constructor(message: string) {
    super('TERN_ERR_PLUGIN_REGISTRATION', message);
  }
}
