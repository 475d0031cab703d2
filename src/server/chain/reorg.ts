import type { Hex, PublicClient } from 'viem'
import type { Database } from '../db/client'
import { type Cursor, storedBlocksDesc } from './cursorStore'
import { canonicalHash } from './readRange'

/**
 * The cursor's block is no longer on the chain: finds the newest remembered block, at most maxReorgDepth below
 * the cursor, whose hash the chain still has. A block hash commits to all its ancestors, so everything at or
 * below that block is unchanged and everything above it must be read again.
 */
export async function findCommonAncestor(
  publicClient: PublicClient,
  db: Database,
  chainId: number,
  cursor: Cursor,
  maxReorgDepth: number,
): Promise<Cursor> {
  const low = cursor.number - BigInt(maxReorgDepth)
  for (const row of await storedBlocksDesc(db, chainId, low, cursor.number)) {
    if ((await canonicalHash(publicClient, row.number)) === row.hash.toLowerCase()) return { number: row.number, hash: row.hash as Hex }
  }
  const gone = (await canonicalHash(publicClient, cursor.number)) === null
  throw new DeepReorgError(
    `watchChain: chain ${chainId} ${gone ? `no longer has the cursor block ${cursor.number} and ` : ''}reorganised deeper than CHAIN_MAX_REORG_DEPTH (${maxReorgDepth}): no remembered block from ${low < -1n ? -1n : low} to ${cursor.number - 1n} is still on the chain. watchChain is stopped for this chain and skips no block. To recover by hand (docs/chain-jobs.md): pick a block B you trust, delete this chain's chain_events (their notifications go with them) and chain_blocks above B, set its chain_cursors row to B's number and hash, and clear halted_at and halted_reason.`,
  )
}

/** The chain no longer agrees with anything watchChain remembers: it must stop rather than guess. */
export class DeepReorgError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'DeepReorgError'
  }
}

/** Every run of a halted chain fails with this, quoting why it was halted, until an operator clears it. */
export class ChainHaltedError extends Error {
  constructor(chainId: number, reason: string) {
    super(`watchChain is halted for chain ${chainId} (clear chain_cursors.halted_at once the cursor is repaired): ${reason}`)
    this.name = 'ChainHaltedError'
  }
}
