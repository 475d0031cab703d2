import type { Address, Hex, PublicClient } from 'viem'
import type { PrivateKeyAccount } from 'viem/accounts'
import { z } from 'zod'
import type { Database } from '../../db/client'
import type { chainSends, chainSentTxs } from '../../db/schema'
import type { Logger } from '../../log'

/** What the sender needs, passed explicitly (no ServerApp): the database, the chain's clients and which chain. */
export interface SenderDeps {
  db: Database
  clients: { publicClient: PublicClient; account: PrivateKeyAccount | undefined }
  chainId: number
  log: Logger
  signal?: AbortSignal
  /** The signing wallet; the server wallet (clients.account) when absent. */
  account?: PrivateKeyAccount
  /** How long one attempt may stay unmined before it is replaced with a higher fee (default 60 s). */
  attemptTimeoutMs?: number
  /** Fee-bumped replacements per call; after them the call fails and the transaction stays in flight (default 2). */
  maxReplacements?: number
  pollMs?: number
  /**
   * How old a recorded, unbroadcast send must be before another send treats it as a gap and fills it
   * (default 10 s): a younger one may belong to a run that is about to broadcast it itself.
   */
  gapGraceMs?: number
  /** What a nonce taken by a transaction from outside means: send again with a new nonce (default) or give up. */
  onNonceLost?: 'resend' | 'supersede'
  /** Names the transaction in errors ("deployMulticall3: the funding transaction"). */
  label?: string
  /** Test hook: called at each point a crash matters, with the send's key. */
  onPhase?: (phase: SendPhase, key: string) => void | Promise<void>
}

export type SendPhase = 'recorded' | 'broadcast' | 'mined'

const hex = z.string().regex(/^0x[0-9a-fA-F]*$/, 'a 0x-prefixed hex string')
export const sendRequestSchema = z.object({
  to: z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'an address'),
  value: z.bigint().nonnegative().default(0n),
  data: hex.default('0x'),
  /** Gas limit; estimated by the node when absent. */
  gas: z.bigint().positive().optional(),
})
export type SendRequest = z.input<typeof sendRequestSchema>

export const stepKeySchema = z.string().min(1).max(200)

export interface SendResult {
  sendId: number
  txHash: Hex
  nonce: number
  blockNumber: bigint
  status: 'success' | 'reverted'
  /** How many signed attempts the send needed (1 unless it was replaced for its fee). */
  attempts: number
}

export type SendRow = typeof chainSends.$inferSelect
export type AttemptRow = typeof chainSentTxs.$inferSelect

/** The send stays in flight (not mined after every allowed replacement); the next call waits for it. */
export class SendPendingError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'SendPendingError'
  }
}

/** The send's nonce went to another transaction (a filler, or one from outside), so it was never mined. */
export class SendSupersededError extends Error {
  constructor(
    message: string,
    readonly send: SendRow,
  ) {
    super(message)
    this.name = 'SendSupersededError'
  }
}

export const walletOf = (deps: SenderDeps) => {
  const account = deps.account ?? deps.clients.account
  if (!account) throw new Error('chain sender: no wallet to sign with (SERVER_WALLET_PRIVATE_KEY is unset)')
  return { account, wallet: account.address.toLowerCase() as Address }
}
