// The embedded backend's public surface; packages/queue/src/index.ts re-exports it.

export type { StoreOwner } from './errors.js';
export { EmbeddedStoreLockedError, EmbeddedStoreOpenError, EmbeddedStoreSchemaError } from './errors.js';
export type { ExportedMessage, ExportSummary, ImportOptions, ImportSummary } from './export.js';
export { exportQueue, ImportError, importQueue } from './export.js';
export type { EmbeddedQueueOptions, JobState } from './queue.js';
export { EmbeddedQueue, openEmbeddedQueue } from './queue.js';
