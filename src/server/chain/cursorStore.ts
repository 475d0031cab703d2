import { and, desc, eq, gt, gte, inArray, isNotNull, isNull, lt, sql } from 'drizzle-orm'
import type { Hex } from 'viem'
import type { Database, Executor, Transaction } from '../db/client'
import { chainBlocks, chainCursors, chainEvents } from '../db/schema'
import type { Logger } from '../log'
import type { ChainEvent, ChainEventHandler } from './handlers/types'
import type { RangeRead } from './readRange'

/** The last block fully processed on a chain. Block -1 (hash zero) means "nothing yet, start at genesis". */
export interface Cursor {
  number: bigint
  hash: Hex
  /** Why watchChain stopped this chain (haltCursor); null while it runs. */
  haltedReason?: string | null
}

/** Rows per INSERT: well under Postgres' 65,535 bind parameters per statement. */
const LEDGER_CHUNK = 1000

export async function loadCursor(db: Executor, chainId: number): Promise<Cursor | null> {
  const [row] = await db.select().from(chainCursors).where(eq(chainCursors.chainId, chainId))
  return row ? { number: row.blockNumber, hash: row.blockHash as Hex, haltedReason: row.haltedReason } : null
}

/**
 * Stops watchChain on a chain, durably, instead of skipping blocks: only while the cursor is still where
 * this run found it (a repaired cursor is never halted by a stale run). Returns whether this call halted
 * it, so the error is logged once, by the run that found the problem.
 */
export async function haltCursor(db: Executor, chainId: number, expected: Cursor, reason: string): Promise<boolean> {
  const halted = await db
    .update(chainCursors)
    .set({ haltedAt: sql`now()`, haltedReason: reason, updatedAt: sql`now()` })
    .where(
      and(
        eq(chainCursors.chainId, chainId),
        eq(chainCursors.blockNumber, expected.number),
        eq(chainCursors.blockHash, expected.hash),
        isNull(chainCursors.haltedAt),
      ),
    )
    .returning({ chainId: chainCursors.chainId })
  return halted.length > 0
}

/** The chains watchChain has stopped, for /metrics (worker_chain_halted). */
export function haltedChains(db: Executor): Promise<{ chainId: number }[]> {
  return db.select({ chainId: chainCursors.chainId }).from(chainCursors).where(isNotNull(chainCursors.haltedAt))
}

/** First run: the cursor starts just before the first block to read, and that block's parent is remembered for walk-back. */
export async function initCursor(db: Database, chainId: number, cursor: Cursor): Promise<void> {
  await db.transaction(async (tx) => {
    const inserted = await tx
      .insert(chainCursors)
      .values({ chainId, blockNumber: cursor.number, blockHash: cursor.hash })
      .onConflictDoNothing()
      .returning({ chainId: chainCursors.chainId })
    if (inserted.length === 0) throw new CursorMovedError(chainId)
    await upsertBlocks(tx, chainId, new Map([[cursor.number, cursor.hash]]))
  })
}

export class CursorMovedError extends Error {
  constructor(chainId: number) {
    super(`watchChain: the cursor of chain ${chainId} was moved by someone else during this run`)
    this.name = 'CursorMovedError'
  }
}

/**
 * Moves the cursor from `expected` to `next` inside `tx`, or throws if it is no longer at `expected`.
 * It is the first statement of every writing transaction on purpose: it takes the cursor's row lock, so a
 * second writer (the advisory lock should already exclude one) would queue behind this transaction and then
 * find the cursor moved, instead of interleaving its writes with ours.
 */
async function moveCursor(tx: Transaction, chainId: number, expected: Cursor, next: Cursor): Promise<void> {
  const moved = await tx
    .update(chainCursors)
    .set({ blockNumber: next.number, blockHash: next.hash, updatedAt: sql`now()` })
    .where(and(eq(chainCursors.chainId, chainId), eq(chainCursors.blockNumber, expected.number), eq(chainCursors.blockHash, expected.hash)))
    .returning({ chainId: chainCursors.chainId })
  if (moved.length === 0) throw new CursorMovedError(chainId)
}

async function upsertBlocks(tx: Transaction, chainId: number, blocks: Map<bigint, Hex>): Promise<void> {
  const rows = [...blocks].map(([blockNumber, blockHash]) => ({ chainId, blockNumber, blockHash }))
  for (let i = 0; i < rows.length; i += LEDGER_CHUNK) {
    await tx
      .insert(chainBlocks)
      .values(rows.slice(i, i + LEDGER_CHUNK))
      .onConflictDoUpdate({ target: [chainBlocks.chainId, chainBlocks.blockNumber], set: { blockHash: sql`excluded.block_hash` } })
  }
}

/** Remembered block hashes in [low, high), newest first: the candidates for the last block that still agrees with the chain. */
export function storedBlocksDesc(db: Executor, chainId: number, low: bigint, high: bigint) {
  return db
    .select({ number: chainBlocks.blockNumber, hash: chainBlocks.blockHash })
    .from(chainBlocks)
    .where(and(eq(chainBlocks.chainId, chainId), gte(chainBlocks.blockNumber, low), lt(chainBlocks.blockNumber, high)))
    .orderBy(desc(chainBlocks.blockNumber))
}

/**
 * Reorg: forgets everything above `ancestor` in one transaction. Deleting the ledger rows of the orphaned blocks
 * deletes what handlers derived from them (notifications reference chain_events ON DELETE CASCADE).
 */
export async function rewindCursor(db: Database, chainId: number, expected: Cursor, ancestor: Cursor): Promise<number> {
  return db.transaction(async (tx) => {
    await moveCursor(tx, chainId, expected, ancestor)
    const deleted = await tx
      .delete(chainEvents)
      .where(and(eq(chainEvents.chainId, chainId), gt(chainEvents.blockNumber, ancestor.number)))
      .returning({ id: chainEvents.id })
    await tx.delete(chainBlocks).where(and(eq(chainBlocks.chainId, chainId), gt(chainBlocks.blockNumber, ancestor.number)))
    return deleted.length
  })
}

/**
 * Commits one range: cursor move, ledger rows, the handlers' writes and the remembered block hashes, all in one
 * transaction. A worker killed anywhere before COMMIT leaves no trace, and the next run reads the range again;
 * after COMMIT the cursor is past it. That, plus the ledger's unique key, is what makes processing exactly once.
 * Returns the number of new logs handed to handlers (the ledger keeps the rows of those they acted on).
 */
export async function commitRange(
  db: Database,
  p: { chainId: number; expected: Cursor; read: RangeRead; handlers: readonly ChainEventHandler<any>[]; maxReorgDepth: number; log: Logger },
): Promise<number> {
  const { chainId, read, handlers } = p
  return db.transaction(async (tx) => {
    await moveCursor(tx, chainId, p.expected, { number: read.to, hash: read.toHash })
    const ledgerIds = new Map<string, number>()
    for (let i = 0; i < read.logs.length; i += LEDGER_CHUNK) {
      const rows = read.logs.slice(i, i + LEDGER_CHUNK).map(({ log }) => ({
        chainId,
        blockNumber: log.blockNumber,
        blockHash: log.blockHash.toLowerCase(),
        logIndex: log.logIndex,
        txHash: log.transactionHash.toLowerCase(),
        address: log.address.toLowerCase(),
      }))
      // DO NOTHING + RETURNING: a log already in the ledger gets no id back and is not handed to any handler.
      const inserted = await tx
        .insert(chainEvents)
        .values(rows)
        .onConflictDoNothing({ target: [chainEvents.chainId, chainEvents.blockHash, chainEvents.logIndex] })
        .returning({ id: chainEvents.id, blockHash: chainEvents.blockHash, logIndex: chainEvents.logIndex })
      for (const r of inserted) ledgerIds.set(`${r.blockHash}:${r.logIndex}`, r.id)
    }
    if (ledgerIds.size < read.logs.length) p.log.warn({ skipped: read.logs.length - ledgerIds.size }, 'logs already in the ledger were skipped')
    const perHandler: ChainEvent[][] = handlers.map(() => [])
    for (const { log, handlers: hs } of read.logs) {
      const ledgerId = ledgerIds.get(`${log.blockHash.toLowerCase()}:${log.logIndex}`)
      if (ledgerId === undefined) continue
      for (const i of hs) perHandler[i]!.push({ ledgerId, log })
    }
    const kept = new Set<number>()
    for (const [i, handler] of handlers.entries()) {
      const events = perHandler[i]!
      if (events.length === 0) continue
      const acted = await handler.process({ tx, chainId, events, log: p.log.child({ handler: handler.name }) })
      for (const id of acted ?? events.map((e) => e.ledgerId)) kept.add(id)
    }
    // Logs no handler acted on (transfers between strangers, on a busy chain nearly all of them) leave no
    // row: the cursor's compare-and-set is what makes the range exactly once, and the ledger would
    // otherwise grow with the chain. Their ids were needed only while the handlers ran.
    const unused = [...ledgerIds.values()].filter((id) => !kept.has(id))
    for (let i = 0; i < unused.length; i += LEDGER_CHUNK) await tx.delete(chainEvents).where(inArray(chainEvents.id, unused.slice(i, i + LEDGER_CHUNK)))
    await upsertBlocks(tx, chainId, read.blocks)
    // Only the reorg window is ever walked back; older hashes are dead weight.
    await tx.delete(chainBlocks).where(and(eq(chainBlocks.chainId, chainId), lt(chainBlocks.blockNumber, read.to - BigInt(p.maxReorgDepth))))
    return ledgerIds.size
  })
}
