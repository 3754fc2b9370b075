// @tern/plugin-api/testing: the plugin test kit. It drives a plugin's hooks without a socket, a
// queue or a receiving server, through the same runner Tern uses (ordering, timeouts, abort
// signals, checks of what hooks return): testPlugins() for the SMTP side of one connection,
// testDelivery() for the delivery side of one message.
export type { LogRecord } from '../logger.js';
export { memoryLogger } from '../logger.js';
export { MessageContent } from '../message.js';
export type { TestHostOptions } from './base.js';
export { PluginTestHost, testQueueId } from './base.js';
export type { TestDeliveryOptions, TestJob } from './delivery.js';
export { PluginTestDelivery, TEST_REPLIES, testDelivery } from './delivery.js';
export type { DataResult, TestSessionOptions } from './session.js';
export { PluginTestSession, testPlugins } from './session.js';
