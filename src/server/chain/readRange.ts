import { BlockNotFoundError, type Hex, type PublicClient } from 'viem'
import type { ChainEventHandler, DecodedLog, LogFilter } from './handlers/types'

export const ZERO_HASH: Hex = `0x${'0'.repeat(64)}`

/** The hash of block `n` on the node's canonical chain now; null if the chain is not that long (any more). */
export async function canonicalHash(publicClient: PublicClient, n: bigint): Promise<Hex | null> {
  // Block -1 is the virtual parent of genesis (the cursor before block 0): its "hash" is genesis' parentHash.
  if (n < 0n) return ZERO_HASH
  try {
    const block = await publicClient.getBlock({ blockNumber: n })
    return block.hash ? lower(block.hash) : null
  } catch (err) {
    if (err instanceof BlockNotFoundError) return null
    throw err
  }
}

const lower = (h: Hex) => h.toLowerCase() as Hex

/** The chain changed while a range was being read; nothing was written, the caller reads again. */
export class ReadRaceError extends Error {
  constructor(detail: string) {
    super(`chain changed while reading a range: ${detail}`)
    this.name = 'ReadRaceError'
  }
}

export interface RangeLog {
  log: DecodedLog
  /** Indexes into the handler list of every handler that asked for this log. */
  handlers: number[]
}

export interface RangeRead {
  from: bigint
  to: bigint
  toHash: Hex
  /** Unique logs in chain order. */
  logs: RangeLog[]
  /** Block hashes to remember for reorg walk-back: the range ends, every block near the head, every block with a log. */
  blocks: Map<bigint, Hex>
}

const HEADER_CONCURRENCY = 10

/**
 * Reads the logs of blocks [from, to] (both inclusive) for every handler, and checks that what was read is one
 * consistent chain that continues from the cursor:
 * - block `from`'s parent is the cursor's block;
 * - block `to` has the same hash before and after the logs were fetched;
 * - near the head (within maxReorgDepth, where reorgs happen), every block header is fetched, the headers link
 *   by parentHash, and every log's blockHash matches its header.
 * Deeper blocks cannot reorg any more, so their hashes are taken from their logs without extra calls.
 */
export async function readRange(
  publicClient: PublicClient,
  handlers: readonly ChainEventHandler<any>[],
  p: { from: bigint; to: bigint; head: bigint; cursorHash: Hex; maxReorgDepth: number; filters?: readonly (readonly LogFilter[] | undefined)[] },
): Promise<RangeRead> {
  const { from, to } = p
  const toBefore = await canonicalHash(publicClient, to)
  if (!toBefore) throw new ReadRaceError(`block ${to} disappeared`)

  const perHandler = await Promise.all(
    handlers.map(async (h, i) => {
      const calls = p.filters?.[i] ?? [{ address: h.address }]
      const logs = await Promise.all(
        calls.map(
          (f) =>
            publicClient.getLogs({
              event: h.event,
              address: (f.address ?? h.address) as never,
              args: f.args as never,
              fromBlock: from,
              toBlock: to,
              strict: true,
            }) as Promise<DecodedLog[]>,
        ),
      )
      return logs.flat()
    }),
  )
  const byKey = new Map<string, RangeLog>()
  perHandler.forEach((logs, i) => {
    for (const log of logs) {
      if (log.blockNumber < from || log.blockNumber > to) {
        throw new Error(`eth_getLogs for blocks ${from}-${to} returned a log of block ${log.blockNumber}`)
      }
      const key = `${lower(log.blockHash)}:${log.logIndex}`
      const seen = byKey.get(key)
      // A log two of a handler's filters matched (a transfer between two users) is still one log for it.
      if (seen) {
        if (!seen.handlers.includes(i)) seen.handlers.push(i)
      }
      else byKey.set(key, { log, handlers: [i] })
    }
  })
  const logs = [...byKey.values()].sort((a, b) =>
    a.log.blockNumber === b.log.blockNumber ? a.log.logIndex - b.log.logIndex : a.log.blockNumber < b.log.blockNumber ? -1 : 1,
  )

  // Headers: the first block (to link to the cursor) and every block inside the reorg window.
  const windowStart = p.head - BigInt(p.maxReorgDepth) + 1n
  const wanted = new Set<bigint>([from])
  for (let n = from > windowStart ? from : windowStart; n <= to; n++) wanted.add(n)
  const headers = new Map<bigint, { hash: Hex; parentHash: Hex }>()
  const numbers = [...wanted].sort((a, b) => (a < b ? -1 : 1))
  for (let i = 0; i < numbers.length; i += HEADER_CONCURRENCY) {
    await Promise.all(
      numbers.slice(i, i + HEADER_CONCURRENCY).map(async (n) => {
        const b = await publicClient.getBlock({ blockNumber: n }).catch((err) => {
          if (err instanceof BlockNotFoundError) throw new ReadRaceError(`block ${n} disappeared`)
          throw err
        })
        headers.set(n, { hash: lower(b.hash!), parentHash: lower(b.parentHash) })
      }),
    )
  }

  if (headers.get(from)!.parentHash !== lower(p.cursorHash)) throw new ReadRaceError(`block ${from} no longer follows the cursor block`)
  for (const n of numbers) {
    const prev = headers.get(n - 1n)
    if (prev && headers.get(n)!.parentHash !== prev.hash) throw new ReadRaceError(`block ${n} does not follow block ${n - 1n}`)
  }
  const blocks = new Map<bigint, Hex>()
  for (const [n, h] of headers) blocks.set(n, h.hash)
  for (const { log } of logs) {
    const known = blocks.get(log.blockNumber)
    if (known && known !== lower(log.blockHash)) throw new ReadRaceError(`a log of block ${log.blockNumber} belongs to another version of it`)
    blocks.set(log.blockNumber, lower(log.blockHash))
  }
  const toAfter = await canonicalHash(publicClient, to)
  if (toAfter !== toBefore) throw new ReadRaceError(`block ${to} changed`)
  if (blocks.has(to) && blocks.get(to) !== toBefore) throw new ReadRaceError(`block ${to} changed`)
  blocks.set(to, toBefore)
  return { from, to, toHash: toBefore, logs, blocks }
}
