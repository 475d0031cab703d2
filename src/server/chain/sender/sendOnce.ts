import { and, eq, sql } from 'drizzle-orm'
import type { Address, Hex } from 'viem'
import { chainSends } from '../../db/schema'
import { sleep } from '../providerLimits'
import { attemptsOf, broadcast, bump, knownToNode, minedAttempt, settleAttempts, signAttempt } from './attempts'
import { fillGaps } from './gaps'
import { recordSend, renonceSend } from './nonces'
import {
  type AttemptRow,
  type SenderDeps,
  SendPendingError,
  type SendRequest,
  type SendResult,
  type SendRow,
  SendSupersededError,
  sendRequestSchema,
  stepKeySchema,
  walletOf,
} from './types'

/**
 * Sends one transaction exactly once per `key` (per chain and wallet), whatever crashes, retries and reruns
 * happen around it (docs/chain-jobs.md says what that covers). Order: a recorded send for the key is
 * settled (waited for, broadcast again, replaced with a higher fee), never signed anew; otherwise the
 * wallet's gaps are filled, a nonce is taken and the signed transaction committed, and only then broadcast.
 */
export async function sendOnce(deps: SenderDeps, input: { key: string; jobId?: number; step: string } & SendRequest): Promise<SendResult> {
  const key = stepKeySchema.parse(input.key)
  const step = stepKeySchema.parse(input.step)
  const req = sendRequestSchema.parse(input)
  const { account, wallet } = walletOf(deps)
  const existing = await findSend(deps, wallet, key)
  if (existing) return settleSend(deps, existing)

  deps.signal?.throwIfAborted()
  await fillGaps(deps, account)
  const { publicClient } = deps.clients
  const gas = req.gas ?? (await publicClient.estimateGas({ account: wallet, to: req.to as Address, value: req.value, data: req.data as Hex }))
  const fees = await publicClient.estimateFeesPerGas()
  const recorded = await recordSend(deps, account, { key, jobId: input.jobId, step, to: req.to as Address, value: req.value, data: req.data as Hex, gas }, fees)
  if (!recorded) return settleSend(deps, (await findSend(deps, wallet, key))!)
  await deps.onPhase?.('recorded', key)
  const sent = await broadcast(deps, recorded.attempt)
  if (!sent.ok) deps.log.warn({ key, nonce: recorded.send.nonce, err: sent.error }, 'broadcast failed; the send is recorded and is settled from the record')
  else await deps.onPhase?.('broadcast', key)
  return settleSend(deps, recorded.send, [recorded.attempt])
}

/** A job step's send: the key is the job id and the step, so a rerun of the job finds its own transactions. */
export function sendForJob(deps: SenderDeps, job: { id: number }, step: string, request: SendRequest): Promise<SendResult> {
  return sendOnce(deps, { ...request, key: `job:${job.id}:${step}`, jobId: job.id, step })
}

export async function findSend(deps: SenderDeps, wallet: Address, key: string): Promise<SendRow | undefined> {
  const [row] = await deps.db
    .select()
    .from(chainSends)
    .where(and(eq(chainSends.chainId, deps.chainId), eq(chainSends.wallet, wallet), eq(chainSends.sendKey, key)))
  return row
}

async function markSend(deps: SenderDeps, send: SendRow, state: 'mined' | 'superseded', attempts: AttemptRow[], txHash?: string) {
  await deps.db.transaction(async (tx) => {
    await tx.update(chainSends).set({ state, txHash, settledAt: sql`now()` }).where(eq(chainSends.id, send.id))
    await settleAttempts(tx, attempts)
  })
}

function resultOf(send: SendRow, row: AttemptRow, receipt: { blockNumber: bigint; status: 'success' | 'reverted' }, attempts: number): SendResult {
  return { sendId: send.id, txHash: row.txHash as Hex, nonce: send.nonce, blockNumber: receipt.blockNumber, status: receipt.status, attempts }
}

/**
 * Waits for one attempt of the send's nonce to be mined. Each round: mined → done; the nonce used by a
 * transaction that is none of ours → a new nonce (or 'superseded'); unknown to the node → the newest
 * attempt broadcast again, same bytes; unmined past the attempt timeout → replaced (same nonce, same
 * content, fees +25%), at most maxReplacements times per call, after which it stays in flight.
 */
export async function settleSend(deps: SenderDeps, start: SendRow, known?: AttemptRow[]): Promise<SendResult> {
  const { account } = walletOf(deps)
  const label = deps.label ?? 'the transaction'
  let send = start
  let attempts = known ?? (await attemptsOf(deps, send))
  if (send.state === 'superseded') throw superseded(send, label)
  const maxReplacements = deps.maxReplacements ?? 2
  for (let replaced = 0; ; replaced++) {
    const newest = attempts.at(-1)!
    if (send.state === 'pending' && !(await knownToNode(deps, newest)) && !(await minedAttempt(deps, attempts))) {
      deps.log.info({ txHash: newest.txHash, nonce: send.nonce }, 'the node does not know the recorded transaction; broadcasting it again')
      await broadcast(deps, newest)
    }
    const mined = await waitMined(deps, send, attempts, send.state === 'pending' ? (deps.attemptTimeoutMs ?? 60_000) : 0)
    if (mined) {
      if (send.state === 'pending') {
        await markSend(deps, send, mined.row.filler ? 'superseded' : 'mined', attempts, mined.row.txHash)
        await deps.onPhase?.('mined', send.sendKey)
      }
      if (mined.row.filler) throw superseded(send, label)
      return resultOf(send, mined.row, mined.receipt, attempts.length)
    }
    const used = await deps.clients.publicClient.getTransactionCount({ address: send.wallet as Address, blockTag: 'latest' })
    if (used > send.nonce) {
      // Read the receipts once more: the attempt may have been mined between the two reads.
      const again = await minedAttempt(deps, attempts)
      if (again) continue
      if (deps.onNonceLost === 'supersede') {
        await markSend(deps, send, 'superseded', attempts)
        throw superseded(send, label)
      }
      deps.log.warn({ key: send.sendKey, nonce: send.nonce }, 'the nonce was used by a transaction from outside the server; sending again with a new nonce')
      const fees = await deps.clients.publicClient.estimateFeesPerGas()
      const moved = await renonceSend(deps, account, send, fees)
      send = moved.send
      attempts = [moved.attempt]
      await broadcast(deps, moved.attempt)
      continue
    }
    if (send.state !== 'pending') throw new Error(`chain sender: send ${send.id} is ${send.state} but no attempt has a receipt (was the chain reset?)`)
    if (replaced >= maxReplacements) {
      throw new SendPendingError(
        `${label} ${newest.txHash} (nonce ${send.nonce}) is not mined after ${attempts.length} attempts; it stays in flight and the next run waits for it instead of sending another`,
      )
    }
    const fees = await deps.clients.publicClient.estimateFeesPerGas()
    const next = await signAttempt(deps, deps.db, account, send, {
      maxFeePerGas: bump(BigInt(newest.maxFeePerGas), fees.maxFeePerGas),
      maxPriorityFeePerGas: bump(BigInt(newest.maxPriorityFeePerGas), fees.maxPriorityFeePerGas),
    }, newest.filler)
    deps.log.warn({ replaced: newest.txHash, txHash: next.txHash, nonce: send.nonce }, 'transaction not mined in time; replacing it with a higher fee (same nonce)')
    await broadcast(deps, next)
    attempts = [...attempts, next]
  }
}

const superseded = (send: SendRow, label: string) =>
  new SendSupersededError(`${label} of step "${send.stepKey}" (nonce ${send.nonce}) was never mined: another transaction took its nonce`, send)

/**
 * Polls the attempts' receipts until one is mined, the attempt timeout passes, or the nonce is used on
 * chain without any of them (then the caller finds out by what, at once rather than after the timeout).
 */
async function waitMined(deps: SenderDeps, send: SendRow, attempts: AttemptRow[], timeoutMs: number) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const mined = await minedAttempt(deps, attempts)
    if (mined || Date.now() >= deadline) return mined
    const used = await deps.clients.publicClient.getTransactionCount({ address: send.wallet as Address, blockTag: 'latest' })
    if (used > send.nonce) return minedAttempt(deps, attempts)
    await sleep(Math.min(deps.pollMs ?? 200, Math.max(1, deadline - Date.now())), deps.signal)
  }
}

export { SendPendingError, SendSupersededError }
