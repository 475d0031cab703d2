import { asc, eq, inArray, sql } from 'drizzle-orm'
import { type Hex, keccak256, TransactionNotFoundError, TransactionReceiptNotFoundError } from 'viem'
import type { PrivateKeyAccount } from 'viem/accounts'
import type { Database } from '../../db/client'
import { chainSentTxs } from '../../db/schema'
import type { AttemptRow, SenderDeps, SendRow } from './types'

type Tx = Parameters<Parameters<Database['transaction']>[0]>[0]

export interface Fees {
  maxFeePerGas: bigint
  maxPriorityFeePerGas: bigint
}

/** Replacement fees: at least +25% over the last attempt (nodes want +10% on both fees), never below the node's estimate. */
export const bump = (prev: bigint, estimate: bigint) => {
  const raised = (prev * 125n) / 100n + 1n
  return raised > estimate ? raised : estimate
}

/**
 * Signs one attempt of a send locally and inserts it in `tx`: the caller commits it before any broadcast,
 * so only recorded bytes ever reach the chain. A filler is a zero-value self-transfer at the send's nonce.
 */
export async function signAttempt(
  deps: SenderDeps,
  tx: Tx | Database,
  account: PrivateKeyAccount,
  send: SendRow,
  fees: Fees,
  filler = false,
): Promise<AttemptRow> {
  const to = filler ? account.address : (send.toAddress as Hex)
  const value = filler ? 0n : BigInt(send.value)
  const raw = await account.signTransaction({
    type: 'eip1559',
    chainId: deps.chainId,
    to,
    value,
    data: filler ? '0x' : (send.data as Hex),
    nonce: send.nonce,
    gas: filler ? 21_000n : BigInt(send.gas),
    ...fees,
  })
  const [row] = await tx
    .insert(chainSentTxs)
    .values({
      chainId: deps.chainId,
      purpose: send.stepKey,
      fromAddress: send.wallet,
      toAddress: to.toLowerCase(),
      nonce: send.nonce,
      value: value.toString(),
      maxFeePerGas: fees.maxFeePerGas.toString(),
      maxPriorityFeePerGas: fees.maxPriorityFeePerGas.toString(),
      txHash: keccak256(raw),
      rawTx: raw,
      sendId: send.id,
      filler,
    })
    // The same signed bytes again (a dev chain reset brought back the same nonce and fees): the same transaction, in flight again.
    .onConflictDoUpdate({ target: chainSentTxs.txHash, set: { settledAt: null, sendId: send.id } })
    .returning()
  return row!
}

export function attemptsOf(deps: SenderDeps, send: SendRow): Promise<AttemptRow[]> {
  return deps.db.select().from(chainSentTxs).where(eq(chainSentTxs.sendId, send.id)).orderBy(asc(chainSentTxs.id))
}

export async function settleAttempts(db: Database | Tx, rows: AttemptRow[]): Promise<void> {
  if (rows.length === 0) return
  await db
    .update(chainSentTxs)
    .set({ settledAt: sql`now()` })
    .where(inArray(chainSentTxs.id, rows.map((r) => r.id)))
}

const BENIGN = /already known|known transaction|already imported|nonce too low|replacement transaction underpriced|transaction underpriced.*replace/i

/**
 * Broadcasts recorded bytes. "Already known" (an earlier broadcast got through, maybe one whose reply was
 * lost) and "nonce too low" (the nonce is used: the settle loop finds by what) are not errors here.
 */
export async function broadcast(deps: SenderDeps, row: AttemptRow): Promise<{ ok: true } | { ok: false; error: unknown }> {
  try {
    await deps.clients.publicClient.sendRawTransaction({ serializedTransaction: row.rawTx as Hex })
    return { ok: true }
  } catch (err) {
    if (BENIGN.test(String((err as Error)?.message ?? err))) return { ok: true }
    return { ok: false, error: err }
  }
}

/** The mined attempt of a nonce, if any (at most one of them can be), newest first. */
export async function minedAttempt(deps: SenderDeps, rows: AttemptRow[]) {
  for (const row of [...rows].reverse()) {
    try {
      const receipt = await deps.clients.publicClient.getTransactionReceipt({ hash: row.txHash as Hex })
      return { row, receipt }
    } catch (err) {
      if (!(err instanceof TransactionReceiptNotFoundError)) throw err
    }
  }
  return null
}

export async function knownToNode(deps: SenderDeps, row: AttemptRow): Promise<boolean> {
  try {
    await deps.clients.publicClient.getTransaction({ hash: row.txHash as Hex })
    return true
  } catch (err) {
    if (err instanceof TransactionNotFoundError) return false
    throw err
  }
}
