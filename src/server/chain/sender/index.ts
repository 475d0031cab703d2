/** The durable sender: exactly-once transactions from jobs (docs/chain-jobs.md, "Sending transactions"). */
export { fillGaps } from './gaps'
export { findSend, sendForJob, sendOnce, settleSend } from './sendOnce'
export { type SenderDeps, type SendPhase, SendPendingError, type SendRequest, type SendResult, SendSupersededError } from './types'
