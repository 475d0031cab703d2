/** The durable sender: exactly-once transactions from jobs (docs/chain-jobs.md, "Sending transactions"). */
export { fillGaps } from './gaps'
export { pruneSettledSends, SETTLED_SEND_RETENTION_MS } from './prune'
export { findSend, sendForJob, sendOnce, settleSend } from './sendOnce'
export { type SenderDeps, SendPendingError, type SendPhase, type SendRequest, type SendResult, SendSupersededError } from './types'
