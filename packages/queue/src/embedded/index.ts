// The embedded backend's public surface; packages/queue/src/index.ts re-exports it.
export type { EmbeddedQueueOptions, JobState, ListOptions, QueueListEntry } from './queue.js';
export { EmbeddedQueue, openEmbeddedQueue } from './queue.js';
export type { StoreOwner } from './store.js';
export { EmbeddedStoreLockedError, EmbeddedStoreOpenError, EmbeddedStoreSchemaError } from './store.js';
