export { type OnlyKnownSendersOptions, onlyKnownSenders } from './only-known-senders.js';
