export { type OnlyKnownSendersOptions, onlyKnownSenders } from './only-known-senders.js';
export { type StrictDmarcOptions, strictDmarc } from './strict-dmarc.js';
