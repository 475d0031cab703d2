import type { Hex } from 'viem'
import type { Logger } from '../log'
import type { ServerApp } from '../serverApp'
import { withTryAdvisoryLock } from './advisoryLock'
import type { ChainClients } from './clients'
import { commitRange, type Cursor, haltCursor, initCursor, loadCursor, rewindCursor } from './cursorStore'
import { assertHandlers, chainEventHandlers } from './handlers/registry'
import type { ChainEventHandler } from './handlers/types'
import { canonicalHash, ReadRaceError, readRange } from './readRange'
import { backoffMs, RangeSizer, sleep } from './providerLimits'
import { ChainHaltedError, DeepReorgError, findCommonAncestor } from './reorg'
import { ChainRateLimitedError, explainChainError, isRangeRefused, isRateLimited, retryAfterMs } from './rpcErrors'

export interface WatchChainResult {
  chainId: number
  /** First and last block processed by this run (decimal strings), null when there was nothing new. */
  fromBlock: string | null
  toBlock: string | null
  /** New ledger rows (logs handed to handlers). */
  events: number
  /** Blocks rewound because of a reorg (the deepest one if several), 0 when none. */
  reorgDepth: number
  ranges: number
  /** False when the run stopped early (time budget, abort) with blocks still to read; the next run continues. */
  caughtUp: boolean
}

export interface WatchChainOptions {
  /** The chain to watch (one of CHAINS); the default chain when unset. */
  chainId?: number
  log: Logger
  signal?: AbortSignal
  handlers?: readonly ChainEventHandler<any>[]
  /** Stop starting new ranges after this long, so a far-behind cursor is caught up over several runs, each well inside the job timeout. */
  maxRunMs?: number
}

/** A read that raced with the chain is retried this many times per run before the run fails. */
const MAX_READ_RACES = 5
/** Rewinds per run; a chain that keeps reorganising under us fails the run rather than looping. */
const MAX_REWINDS = 10
/** Rate-limited attempts in a row before the run gives up (the cron tries again at its next time). */
const MAX_RATE_LIMITED = 8
const RATE_BACKOFF = { baseMs: 250, maxMs: 10_000 }
const REFUSAL_BACKOFF = { baseMs: 50, maxMs: 2_000 }

/**
 * The adapted eth_getLogs range size per chain, kept for the life of the process so that the next run
 * starts at the size the provider last accepted instead of relearning it from CHAIN_MAX_BLOCK_RANGE.
 */
const rangeSizers = new Map<string, RangeSizer>()
function rangeSizer(chainId: number, max: number): RangeSizer {
  const key = `${chainId}:${max}`
  let sizer = rangeSizers.get(key)
  if (!sizer) {
    sizer = new RangeSizer(max)
    rangeSizers.set(key, sizer)
  }
  return sizer
}

/**
 * The watchChain job, for one chain. Only one runner per chain at a time across every worker and server
 * instance: a session advisory lock keyed by the chain id; a second concurrent run returns at once without
 * touching anything. Chains are independent: each has its own lock, cursor, ledger rows and schedule.
 */
export async function watchChain(serverApp: ServerApp, opts: WatchChainOptions): Promise<WatchChainResult | { skipped: 'already running' }> {
  const chain = serverApp.chains.get(opts.chainId)
  try {
    const chainId = await chain.getChainId()
    const res = await withTryAdvisoryLock(serverApp.dbHandle, `chain.watchChain:${chainId}`, () => watchLocked(serverApp, chain, chainId, opts))
    if (!res.acquired) {
      opts.log.info({ chainId }, 'watchChain already running elsewhere; skipped')
      return { skipped: 'already running' }
    }
    return res.value
  } catch (err) {
    explainChainError(err, chain.spec)
  }
}

async function watchLocked(serverApp: ServerApp, chain: ChainClients, chainId: number, opts: WatchChainOptions): Promise<WatchChainResult> {
  const { config, db } = serverApp
  const { log } = opts
  const { publicClient, spec } = chain
  const handlers = (opts.handlers ?? chainEventHandlers).filter((h) => !h.chainIds || h.chainIds.includes(chainId))
  assertHandlers(handlers)
  const confirmations = BigInt(spec.confirmations)
  const sizer = rangeSizer(chainId, spec.maxBlockRange)
  const maxReorgDepth = config.CHAIN_MAX_REORG_DEPTH
  const deadline = Date.now() + (opts.maxRunMs ?? 60_000)
  const result: WatchChainResult = { chainId, fromBlock: null, toBlock: null, events: 0, reorgDepth: 0, ranges: 0, caughtUp: false }
  let races = 0
  let rewinds = 0
  let rateLimited = 0
  let refusals = 0
  let first: bigint | null = null

  while (!opts.signal?.aborted && Date.now() < deadline) {
    // The range being read, for a refusal to halve; null outside the read.
    let reading: { from: bigint; to: bigint } | null = null
    try {
      // cacheTime 0: viem otherwise reuses a block number for its polling interval (4 s), a stale head.
      const head = await publicClient.getBlockNumber({ cacheTime: 0 })
      const safeHead = head - confirmations
      let cursor = await loadCursor(db, chainId)
      if (cursor?.haltedReason) throw new ChainHaltedError(chainId, cursor.haltedReason)
      if (!cursor) {
        // First run on this chain: start at its startBlock (CHAIN_START_BLOCK), or at the current safe head.
        const start = spec.startBlock !== undefined ? BigInt(spec.startBlock) : safeHead
        if (safeHead < 0n || start > safeHead) {
          result.caughtUp = true
          break
        }
        const parentHash = await canonicalHash(publicClient, start - 1n)
        if (!parentHash) throw new ReadRaceError(`block ${start - 1n} disappeared`)
        cursor = { number: start - 1n, hash: parentHash }
        await initCursor(db, chainId, cursor)
        log.info({ chainId, startBlock: start.toString() }, 'watchChain cursor created')
      }

      // Reorg check first: the cursor's block must still be on the chain before anything above it is read.
      const atCursor = await canonicalHash(publicClient, cursor.number)
      if (atCursor !== cursor.hash.toLowerCase()) {
        if (++rewinds > MAX_REWINDS) throw new Error(`watchChain: chain ${chainId} kept reorganising (${MAX_REWINDS} rewinds in one run)`)
        const ancestor = await findCommonAncestor(publicClient, db, chainId, cursor, maxReorgDepth).catch(async (err) => {
          if (!(err instanceof DeepReorgError)) throw err
          // Skipping ahead would lose events, and rewinding past the window would guess: stop this chain,
          // durably, and say why once (the run that halts it); later runs fail with ChainHaltedError.
          if (await haltCursor(db, chainId, cursor!, err.message)) log.error({ chainId, cursorBlock: cursor!.number.toString() }, err.message)
          throw err
        })
        const removed = await rewindCursor(db, chainId, cursor, ancestor)
        const depth = Number(cursor.number - ancestor.number)
        result.reorgDepth = Math.max(result.reorgDepth, depth)
        log.warn({ chainId, from: cursor.number.toString(), to: ancestor.number.toString(), depth, removedEvents: removed }, 'chain reorg: cursor rewound')
        continue
      }

      // The lag /metrics shows (worker_chain_lag_blocks): head − cursor, so caught up reads CHAIN_CONFIRMATIONS.
      serverApp.metrics.chainLagSeen(chainId, head - cursor.number)
      if (cursor.number >= safeHead) {
        result.caughtUp = true
        break
      }
      // Inclusive bounds: [cursor+1, cursor+size] holds exactly `size` blocks, and the next range starts right after `to`.
      const rangeSize = BigInt(sizer.size)
      const from = cursor.number + 1n
      const to = cursor.number + rangeSize < safeHead ? cursor.number + rangeSize : safeHead
      reading = { from, to }
      let read: Awaited<ReturnType<typeof readRange>>
      try {
        // Asked per range, so a user registered during a long catch-up is watched from the next range on.
        const filters = await Promise.all(handlers.map((h) => h.filters?.({ db, chainId })))
        read = await readRange(publicClient, handlers, { from, to, head, cursorHash: cursor.hash, maxReorgDepth, filters })
      } catch (err) {
        if (err instanceof ReadRaceError && ++races <= MAX_READ_RACES) {
          log.info({ chainId, err: err.message }, 'watchChain read raced with the chain; reading again')
          continue
        }
        throw err
      }
      reading = null
      sizer.succeeded()
      refusals = 0
      rateLimited = 0
      const expected: Cursor = { number: cursor.number, hash: cursor.hash as Hex }
      const events = await commitRange(db, { chainId, expected, read, handlers, maxReorgDepth, log })
      serverApp.metrics.chainLagSeen(chainId, head - to)
      result.ranges++
      result.events += events
      if (first === null || from < first) first = from
      result.fromBlock = first.toString()
      result.toBlock = to.toString()
      log.debug({ chainId, from: from.toString(), to: to.toString(), events }, 'watchChain range committed')
    } catch (err) {
      if (reading && isRangeRefused(err)) {
        // The provider caps eth_getLogs (blocks per call or results per call): read half of it, then the rest.
        const width = Number(reading.to - reading.from + 1n)
        if (width <= 1) throw new Error(`watchChain: the RPC provider refuses eth_getLogs even for the single block ${reading.from} of chain ${chainId}`, { cause: err })
        sizer.refused(width)
        const wait = backoffMs(++refusals, REFUSAL_BACKOFF)
        log.info({ chainId, from: reading.from.toString(), to: reading.to.toString(), nextSize: sizer.size, waitMs: wait }, 'the RPC provider refused an eth_getLogs range; halving it')
        await sleep(wait, opts.signal)
        continue
      }
      if (isRateLimited(err)) {
        if (++rateLimited > MAX_RATE_LIMITED) throw new ChainRateLimitedError(spec, err)
        const wait = backoffMs(rateLimited, { ...RATE_BACKOFF, retryAfterMs: retryAfterMs(err) })
        log.info({ chainId, attempt: rateLimited, waitMs: wait }, 'the RPC provider is rate limiting; backing off')
        await sleep(wait, opts.signal)
        continue
      }
      throw err
    }
  }
  if (result.ranges > 0 || result.reorgDepth > 0) log.info(result, 'watchChain finished')
  return result
}
