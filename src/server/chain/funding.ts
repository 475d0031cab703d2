import { randomUUID } from 'node:crypto'
import { and, asc, eq } from 'drizzle-orm'
import type { Address, Hex } from 'viem'
import type { Database } from '../db/client'
import { chainSends } from '../db/schema'
import type { Logger } from '../log'
import type { ChainClients } from './clients'
import { sleep } from './providerLimits'
import { type SenderDeps, SendPendingError, SendSupersededError, sendOnce, settleSend } from './sender'

/**
 * Tops an address up to a target balance at most once, through the durable sender (chain/sender), which
 * owns "signed, recorded, broadcast, settled": the transfer is recorded before it is broadcast, and every
 * run first settles the purpose's send still in flight (waits for it, broadcasts it again, replaces it with
 * a higher fee) instead of sending a second one. Call it under the job's advisory lock.
 */

export interface FundOptions {
  db: Database
  chain: ChainClients
  chainId: number
  purpose: string
  to: Address
  /** What `to` must hold: the transfer is `target - (to's balance including pending transactions)`. */
  target: bigint
  log: Logger
  signal?: AbortSignal
  /** The job whose step this is: its rerun finds the same send. Without one the send gets a key of its own. */
  jobId?: number
  /** How long one attempt may stay unmined before it is replaced with a higher fee. */
  attemptTimeoutMs: number
  /** Replacements per run; after them the run fails and the transaction stays in flight for the next run. */
  maxReplacements?: number
  pollMs?: number
}

export interface FundResult {
  /** Wei transferred by the mined transaction of this purpose ("0" when none was needed). */
  fundedWei: bigint
  txHash?: Hex
}

/** The funding stays in flight; the next run waits for it. (The sender's SendPendingError, under its old name.) */
export const FundingPendingError = SendPendingError

function deps(o: FundOptions): SenderDeps {
  return {
    db: o.db,
    clients: o.chain,
    chainId: o.chainId,
    log: o.log,
    signal: o.signal,
    attemptTimeoutMs: o.attemptTimeoutMs,
    maxReplacements: o.maxReplacements,
    pollMs: o.pollMs,
    // A nonce taken from outside: the balance is counted again and only what is still missing is sent.
    onNonceLost: 'supersede',
    label: 'deployMulticall3: the funding transaction',
  }
}

export async function fundOnce(o: FundOptions): Promise<FundResult> {
  const d = deps(o)
  // Any run's funding still in flight, whichever job recorded it: settled first, never sent beside.
  const [open] = await o.db
    .select()
    .from(chainSends)
    .where(and(eq(chainSends.chainId, o.chainId), eq(chainSends.stepKey, o.purpose), eq(chainSends.state, 'pending')))
    .orderBy(asc(chainSends.id))
    .limit(1)
  if (open) {
    try {
      const res = await settleSend(d, open)
      if (res.status !== 'success') throw new Error(`deployMulticall3: the funding transaction ${res.txHash} reverted`)
      return { fundedWei: BigInt(open.value), txHash: res.txHash }
    } catch (err) {
      if (!(err instanceof SendSupersededError)) throw err
      o.log.warn({ nonce: open.nonce }, 'the funding nonce was used by another transaction; funding again if still needed')
    }
  }

  const { publicClient } = o.chain
  const latest = await publicClient.getBalance({ address: o.to, blockTag: 'latest' })
  if (latest >= o.target) return { fundedWei: 0n }
  // The pending balance counts transfers still in the mempool, ours or anyone's: only what even they leave missing is sent.
  const pending = await publicClient.getBalance({ address: o.to, blockTag: 'pending' })
  if (pending >= o.target) {
    o.log.info({ to: o.to, latest: latest.toString(), pending: pending.toString() }, 'a transfer to the deployer is already pending; waiting for it')
    await waitFor(o, async () => (await publicClient.getBalance({ address: o.to, blockTag: 'latest' })) >= o.target)
    return { fundedWei: 0n }
  }
  const missing = o.target - pending
  if (!o.chain.account) {
    throw new Error(`deployMulticall3: the deployer ${o.to} needs ${missing} wei more, but no server wallet is configured (SERVER_WALLET_PRIVATE_KEY)`)
  }
  const key = o.jobId !== undefined ? `job:${o.jobId}:${o.purpose}` : `${o.purpose}:${randomUUID()}`
  o.log.info({ to: o.to, value: missing.toString(), key }, 'sending the funding transaction')
  const res = await sendOnce(d, { key, jobId: o.jobId, step: o.purpose, to: o.to, value: missing, gas: 21_000n })
  if (res.status !== 'success') throw new Error(`deployMulticall3: the funding transaction ${res.txHash} reverted`)
  o.log.info({ txHash: res.txHash, value: missing.toString() }, 'funding transaction mined')
  return { fundedWei: missing, txHash: res.txHash }
}

/** Polls `check` until it returns something truthy; past the attempt timeout throws FundingPendingError. */
async function waitFor(o: FundOptions, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + o.attemptTimeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() >= deadline) throw new FundingPendingError(`deployMulticall3: a transfer to ${o.to} is pending and not mined after ${o.attemptTimeoutMs} ms; the next run waits for it`)
    await sleep(o.pollMs ?? 250, o.signal)
  }
}
