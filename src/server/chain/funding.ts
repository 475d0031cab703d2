import { and, asc, eq, inArray, isNull, sql } from 'drizzle-orm'
import { type Address, type Hex, keccak256, TransactionNotFoundError, TransactionReceiptNotFoundError } from 'viem'
import type { Database } from '../db/client'
import { chainSentTxs } from '../db/schema'
import type { Logger } from '../log'
import type { ChainClients } from './clients'
import { sleep } from './providerLimits'

/**
 * Sends a value transfer at most once, durably: the signed transaction is recorded (committed) before it is
 * broadcast, so a run after a crash, a restart or a timeout finds it in `chain_sent_txs` and waits for it,
 * broadcasts it again if the node dropped it, or replaces it (same nonce, higher fee) when it is stuck,
 * but never sends a second transfer while one is in flight. Call it under the job's advisory lock.
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

type SentRow = typeof chainSentTxs.$inferSelect

/** Replacement fees: at least +25% over the last attempt (nodes want +10% on both fees), and never below the node's estimate. */
const bump = (prev: bigint, estimate: bigint) => {
  const raised = (prev * 125n) / 100n + 1n
  return raised > estimate ? raised : estimate
}

export class FundingPendingError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'FundingPendingError'
  }
}

export async function fundOnce(o: FundOptions): Promise<FundResult> {
  const open = await openRows(o)
  if (open.length > 0) return settle(o, open)

  const { publicClient } = o.chain
  const latest = await publicClient.getBalance({ address: o.to, blockTag: 'latest' })
  if (latest >= o.target) return { fundedWei: 0n }
  // The pending balance counts transfers still in the mempool, ours (recorded or not) or anyone's:
  // only what even they leave missing is sent.
  const pending = await publicClient.getBalance({ address: o.to, blockTag: 'pending' })
  if (pending >= o.target) {
    o.log.info({ to: o.to, latest: latest.toString(), pending: pending.toString() }, 'a transfer to the deployer is already pending; waiting for it')
    await waitFor(o, async () => (await publicClient.getBalance({ address: o.to, blockTag: 'latest' })) >= o.target)
    return { fundedWei: 0n }
  }
  const { walletClient, account } = o.chain
  const missing = o.target - pending
  if (!walletClient || !account) {
    throw new Error(`deployMulticall3: the deployer ${o.to} needs ${missing} wei more, but no server wallet is configured (SERVER_WALLET_PRIVATE_KEY)`)
  }
  // The pending nonce: a transaction of the server wallet still in the mempool keeps its own nonce.
  const nonce = await publicClient.getTransactionCount({ address: account.address, blockTag: 'pending' })
  const fees = await publicClient.estimateFeesPerGas()
  const row = await signAndRecord(o, { nonce, value: missing, maxFeePerGas: fees.maxFeePerGas, maxPriorityFeePerGas: fees.maxPriorityFeePerGas })
  o.log.info({ to: o.to, value: missing.toString(), nonce, txHash: row.txHash }, 'funding transaction recorded; broadcasting')
  await broadcast(o, row)
  return settle(o, [row])
}

function openRows(o: FundOptions): Promise<SentRow[]> {
  return o.db
    .select()
    .from(chainSentTxs)
    .where(and(eq(chainSentTxs.chainId, o.chainId), eq(chainSentTxs.purpose, o.purpose), isNull(chainSentTxs.settledAt)))
    .orderBy(asc(chainSentTxs.id))
}

/** Signs locally, then commits the row: only a recorded transaction is ever broadcast. */
async function signAndRecord(o: FundOptions, p: { nonce: number; value: bigint; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint }): Promise<SentRow> {
  const { walletClient, account } = o.chain
  if (!walletClient || !account) throw new Error('deployMulticall3: no server wallet is configured (SERVER_WALLET_PRIVATE_KEY)')
  const raw = await walletClient.signTransaction({
    account,
    chain: null,
    type: 'eip1559',
    to: o.to,
    value: p.value,
    nonce: p.nonce,
    gas: 21_000n,
    maxFeePerGas: p.maxFeePerGas,
    maxPriorityFeePerGas: p.maxPriorityFeePerGas,
  })
  const [row] = await o.db
    .insert(chainSentTxs)
    .values({
      chainId: o.chainId,
      purpose: o.purpose,
      fromAddress: account.address.toLowerCase(),
      toAddress: o.to.toLowerCase(),
      nonce: p.nonce,
      value: p.value.toString(),
      maxFeePerGas: p.maxFeePerGas.toString(),
      maxPriorityFeePerGas: p.maxPriorityFeePerGas.toString(),
      txHash: keccak256(raw),
      rawTx: raw,
    })
    // The same signed bytes again (the chain was reset under a dev node, and the same nonce and fees came
    // back): it is the same transaction, in flight again.
    .onConflictDoUpdate({ target: chainSentTxs.txHash, set: { settledAt: null } })
    .returning()
  return row!
}

/** Broadcasts a recorded transaction; "already known" (an earlier broadcast got through) is success. */
async function broadcast(o: FundOptions, row: SentRow): Promise<void> {
  try {
    await o.chain.publicClient.sendRawTransaction({ serializedTransaction: row.rawTx as Hex })
  } catch (err) {
    const msg = String((err as Error)?.message ?? err)
    if (/already known|known transaction|already imported|nonce too low|replacement transaction underpriced/i.test(msg)) return
    throw err
  }
}

/** The mined attempt of a nonce, if any: at most one of its attempts can be. */
async function minedAttempt(o: FundOptions, rows: SentRow[]) {
  for (const row of [...rows].reverse()) {
    try {
      const receipt = await o.chain.publicClient.getTransactionReceipt({ hash: row.txHash as Hex })
      return { row, receipt }
    } catch (err) {
      if (!(err instanceof TransactionReceiptNotFoundError)) throw err
    }
  }
  return null
}

async function knownToNode(o: FundOptions, row: SentRow): Promise<boolean> {
  try {
    await o.chain.publicClient.getTransaction({ hash: row.txHash as Hex })
    return true
  } catch (err) {
    if (err instanceof TransactionNotFoundError) return false
    throw err
  }
}

async function markSettled(o: FundOptions, rows: SentRow[]): Promise<void> {
  await o.db
    .update(chainSentTxs)
    .set({ settledAt: sql`now()` })
    .where(inArray(chainSentTxs.id, rows.map((r) => r.id)))
}

/**
 * Waits for one attempt of the in-flight nonce to be mined. Each round: mined → done; the nonce used by a
 * transaction that is none of ours → settled, nothing funded by us; dropped by the node → broadcast again;
 * unmined past the attempt timeout → replaced (same nonce, same value, higher fees).
 */
async function settle(o: FundOptions, rows: SentRow[]): Promise<FundResult> {
  const { publicClient } = o.chain
  const maxReplacements = o.maxReplacements ?? 2
  let attempts = rows
  for (let replaced = 0; ; replaced++) {
    const newest = attempts.at(-1)!
    if (!(await knownToNode(o, newest)) && !(await minedAttempt(o, attempts))) {
      o.log.info({ txHash: newest.txHash, nonce: newest.nonce }, 'the node does not know the recorded funding transaction; broadcasting it again')
      await broadcast(o, newest)
    }
    const mined = await waitFor(o, () => minedAttempt(o, attempts), o.attemptTimeoutMs).catch((err) => {
      if (err instanceof FundingPendingError) return null
      throw err
    })
    if (mined) {
      await markSettled(o, attempts)
      if (mined.receipt.status !== 'success') throw new Error(`deployMulticall3: the funding transaction ${mined.row.txHash} reverted`)
      o.log.info({ txHash: mined.row.txHash, value: mined.row.value }, 'funding transaction mined')
      return { fundedWei: BigInt(mined.row.value), txHash: mined.row.txHash as Hex }
    }
    const used = await publicClient.getTransactionCount({ address: newest.fromAddress as Address, blockTag: 'latest' })
    if (used > newest.nonce) {
      // The nonce went to a transaction that is none of these (e.g. sent by hand): ours can never be mined.
      const again = await minedAttempt(o, attempts)
      await markSettled(o, attempts)
      if (again) return { fundedWei: BigInt(again.row.value), txHash: again.row.txHash as Hex }
      o.log.warn({ nonce: newest.nonce }, 'the funding nonce was used by another transaction; funding again if still needed')
      return fundOnce(o)
    }
    if (replaced >= maxReplacements) {
      throw new FundingPendingError(
        `deployMulticall3: the funding transaction ${newest.txHash} (nonce ${newest.nonce}) is not mined after ${attempts.length} attempts; it stays in flight and the next run waits for it instead of sending another`,
      )
    }
    const fees = await publicClient.estimateFeesPerGas()
    const next = await signAndRecord(o, {
      nonce: newest.nonce,
      value: BigInt(newest.value),
      maxFeePerGas: bump(BigInt(newest.maxFeePerGas), fees.maxFeePerGas),
      maxPriorityFeePerGas: bump(BigInt(newest.maxPriorityFeePerGas), fees.maxPriorityFeePerGas),
    })
    o.log.warn({ replaced: newest.txHash, txHash: next.txHash, nonce: next.nonce }, 'funding transaction not mined in time; replacing it with a higher fee (same nonce)')
    await broadcast(o, next)
    attempts = [...attempts, next]
  }
}

/** Polls `check` until it returns something truthy; past `timeoutMs` throws FundingPendingError. */
async function waitFor<T>(o: FundOptions, check: () => Promise<T>, timeoutMs = o.attemptTimeoutMs): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v as NonNullable<T>
    if (Date.now() >= deadline) throw new FundingPendingError(`deployMulticall3: a transfer to ${o.to} is pending and not mined after ${timeoutMs} ms; the next run waits for it`)
    await sleep(o.pollMs ?? 250, o.signal)
  }
}
