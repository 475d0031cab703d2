import { and, asc, eq, gte, inArray, ne, sql, TransactionRollbackError } from 'drizzle-orm'
import { type Address, type Hex, TransactionNotFoundError } from 'viem'
import type { PrivateKeyAccount } from 'viem/accounts'
import type { Database } from '../../db/client'
import { chainNonces, chainSends, chainSentTxs } from '../../db/schema'
import { type Fees, signAttempt } from './attempts'
import type { AttemptRow, SenderDeps, SendRow } from './types'

type Tx = Parameters<Parameters<Database['transaction']>[0]>[0]

/**
 * Takes the wallet's next nonce under its counter row's lock and reconciles it with the chain: the counter
 * is what this cluster has handed out, the chain's pending nonce what the node has seen (a transaction sent
 * from outside the server raises it). The nonce is max(counter, chain pending). It is never lowered: a
 * number handed out and recorded but not on chain is a gap that fillGaps fills, not a number to reuse.
 *
 * Why the lock: the row is locked FOR UPDATE until this transaction commits, so no other worker or server
 * can read the counter between our read and our write; the unique (chain, wallet, nonce) index on
 * chain_sends backs it up should anything ever bypass the lock.
 */
async function takeNonce(deps: SenderDeps, tx: Tx, wallet: Address): Promise<number> {
  await tx.insert(chainNonces).values({ chainId: deps.chainId, wallet, nextNonce: 0 }).onConflictDoNothing()
  const [counter] = await tx
    .select()
    .from(chainNonces)
    .where(and(eq(chainNonces.chainId, deps.chainId), eq(chainNonces.wallet, wallet)))
    .for('update')
  const chainPending = await deps.clients.publicClient.getTransactionCount({ address: wallet, blockTag: 'pending' })
  let nonce = Math.max(counter!.nextNonce, chainPending)
  if (counter!.nextNonce > chainPending && (await forgetResetSends(deps, tx, wallet, chainPending)) > 0) {
    const [top] = await tx
      .select({ max: sql<number | null>`max(${chainSends.nonce})` })
      .from(chainSends)
      .where(and(eq(chainSends.chainId, deps.chainId), eq(chainSends.wallet, wallet)))
    nonce = Math.max(chainPending, top?.max === null || top?.max === undefined ? 0 : Number(top.max) + 1)
  }
  if (nonce !== counter!.nextNonce) deps.log.info({ wallet, counter: counter!.nextNonce, chainPending }, 'nonce counter reconciled with the chain')
  await tx
    .update(chainNonces)
    .set({ nextNonce: nonce + 1, updatedAt: sql`now()` })
    .where(and(eq(chainNonces.chainId, deps.chainId), eq(chainNonces.wallet, wallet)))
  return nonce
}

/**
 * The chain was reset under us (a dev node restarted or reverted while the database kept its rows): sends
 * recorded as mined or superseded at nonces the chain has not reached, whose transactions the node does not
 * know, describe a chain that no longer exists. They are deleted (with their attempts), so the counter can
 * follow the chain back down; a send the node still knows (a reorg in progress) keeps its row and its nonce.
 */
async function forgetResetSends(deps: SenderDeps, tx: Tx, wallet: Address, chainPending: number): Promise<number> {
  const stale = await tx
    .select()
    .from(chainSends)
    .where(and(eq(chainSends.chainId, deps.chainId), eq(chainSends.wallet, wallet), gte(chainSends.nonce, chainPending), ne(chainSends.state, 'pending')))
    .orderBy(asc(chainSends.nonce))
    .limit(100)
  for (const send of stale) {
    if (send.txHash && (await knownTx(deps, send.txHash as Hex))) return 0
  }
  if (stale.length === 0) return 0
  deps.log.warn({ wallet, chainPending, forgotten: stale.length }, 'the chain no longer has transactions recorded as mined (a reset chain); forgetting them')
  await tx.delete(chainSends).where(inArray(chainSends.id, stale.map((r) => r.id)))
  return stale.length
}

async function knownTx(deps: SenderDeps, hash: Hex): Promise<boolean> {
  try {
    await deps.clients.publicClient.getTransaction({ hash })
    return true
  } catch (err) {
    if (err instanceof TransactionNotFoundError) return false
    throw err
  }
}

export interface NewSend {
  key: string
  jobId?: number
  step: string
  to: Address
  value: bigint
  data: `0x${string}`
  gas: bigint
}

/**
 * Records a new send with its nonce and its first signed attempt, in one committed transaction (the caller
 * broadcasts only after this returns). Returns null when the key is already recorded (a concurrent run of
 * the same step won): the caller reads that one instead.
 */
export async function recordSend(
  deps: SenderDeps,
  account: PrivateKeyAccount,
  req: NewSend,
  fees: Fees,
): Promise<{ send: SendRow; attempt: AttemptRow } | null> {
  const wallet = account.address.toLowerCase() as Address
  return deps.db.transaction(async (tx) => {
    const nonce = await takeNonce(deps, tx, wallet)
    const [send] = await tx
      .insert(chainSends)
      .values({
        chainId: deps.chainId,
        wallet,
        sendKey: req.key,
        jobId: req.jobId,
        stepKey: req.step,
        nonce,
        toAddress: req.to.toLowerCase(),
        value: req.value.toString(),
        data: req.data,
        gas: req.gas.toString(),
      })
      .onConflictDoNothing({ target: [chainSends.chainId, chainSends.wallet, chainSends.sendKey] })
      .returning()
    // Rolling back returns the nonce: nothing was signed with it that anyone will broadcast.
    if (!send) {
      tx.rollback()
      return null
    }
    const attempt = await signAttempt(deps, tx, account, send, fees)
    return { send, attempt }
  }).catch((err) => {
    if (err instanceof TransactionRollbackError) return null
    throw err
  })
}

/**
 * The send's nonce was taken by a transaction that is none of its attempts (sent from outside the server):
 * its transaction can never be mined, so it gets a new nonce and a new first attempt, same content. The
 * old attempts are settled in the same transaction.
 */
export async function renonceSend(deps: SenderDeps, account: PrivateKeyAccount, send: SendRow, fees: Fees): Promise<{ send: SendRow; attempt: AttemptRow }> {
  const wallet = account.address.toLowerCase() as Address
  return deps.db.transaction(async (tx) => {
    const nonce = await takeNonce(deps, tx, wallet)
    await tx.update(chainSentTxs).set({ settledAt: sql`now()` }).where(eq(chainSentTxs.sendId, send.id))
    const [moved] = await tx.update(chainSends).set({ nonce }).where(eq(chainSends.id, send.id)).returning()
    const attempt = await signAttempt(deps, tx, account, moved!, fees)
    return { send: moved!, attempt }
  })
}
