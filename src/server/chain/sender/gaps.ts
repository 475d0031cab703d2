import { and, asc, eq, gte, lt, sql } from 'drizzle-orm'
import type { Address } from 'viem'
import type { PrivateKeyAccount } from 'viem/accounts'
import { chainSends } from '../../db/schema'
import { attemptsOf, broadcast, bump, knownToNode, signAttempt } from './attempts'
import type { SenderDeps } from './types'

/**
 * Fills the wallet's nonce gaps: a send recorded but never broadcast (its run was killed in between and
 * never rerun, say) would block every later nonce of the wallet forever. Each pending send at or above the
 * chain's pending nonce that the node does not know is broadcast again, same bytes (it is what its step
 * asked for and recorded); if the node refuses those bytes, a zero-value self-transfer takes the nonce
 * and the send ends 'superseded' when it is mined. Only sends older than gapGraceMs count (a fresh one is
 * its own run's to broadcast); idempotent anyway, so callers need no lock: the same bytes twice are "already known".
 */
export async function fillGaps(deps: SenderDeps, account: PrivateKeyAccount): Promise<number> {
  const wallet = account.address.toLowerCase() as Address
  const chainPending = await deps.clients.publicClient.getTransactionCount({ address: wallet, blockTag: 'pending' })
  const open = await deps.db
    .select()
    .from(chainSends)
    .where(
      and(
        eq(chainSends.chainId, deps.chainId),
        eq(chainSends.wallet, wallet),
        eq(chainSends.state, 'pending'),
        gte(chainSends.nonce, chainPending),
        // Only sends left alone for a while: one recorded a moment ago is its own run's to broadcast.
        lt(chainSends.createdAt, sql`now() - make_interval(secs => ${(deps.gapGraceMs ?? 10_000) / 1000})`),
      ),
    )
    .orderBy(asc(chainSends.nonce))
  let filled = 0
  for (const send of open) {
    const attempts = await attemptsOf(deps, send)
    const newest = attempts.at(-1)
    if (newest && (await knownToNode(deps, newest))) continue
    if (newest) {
      const res = await broadcast(deps, newest)
      if (res.ok) {
        deps.log.warn({ wallet, nonce: send.nonce, key: send.sendKey }, 'nonce gap: recorded transaction broadcast again')
        filled++
        continue
      }
      deps.log.warn({ wallet, nonce: send.nonce, key: send.sendKey, err: res.error }, 'nonce gap: the node refuses the recorded transaction; filling the nonce with a self-transfer')
    }
    const fees = await deps.clients.publicClient.estimateFeesPerGas()
    const filler = await signAttempt(deps, deps.db, account, send, {
      maxFeePerGas: newest ? bump(BigInt(newest.maxFeePerGas), fees.maxFeePerGas) : fees.maxFeePerGas,
      maxPriorityFeePerGas: newest ? bump(BigInt(newest.maxPriorityFeePerGas), fees.maxPriorityFeePerGas) : fees.maxPriorityFeePerGas,
    }, true)
    const res = await broadcast(deps, filler)
    if (!res.ok) throw res.error
    filled++
  }
  return filled
}
