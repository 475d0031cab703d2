import type { AbiEvent, Address, Log } from 'viem'
import type { Executor, Transaction } from '../../db/client'
import type { Logger } from '../../log'

/** A decoded log, as viem's getLogs returns it for the handler's event in strict mode (all arguments present). */
export type DecodedLog<E extends AbiEvent = AbiEvent> = Log<bigint, number, false, E, true>

export interface ChainEvent<E extends AbiEvent = AbiEvent> {
  /** chain_events.id of this log. Rows a handler derives from it should reference it ON DELETE CASCADE, so a reorg removes them. */
  ledgerId: number
  log: DecodedLog<E>
}

export interface ChainEventContext<E extends AbiEvent = AbiEvent> {
  /** The range's transaction: the ledger rows and the cursor move commit with these writes, or none of them do. */
  tx: Transaction
  chainId: number
  /** This handler's new events in the range, in chain order (block number, then log index). */
  events: ChainEvent<E>[]
  log: Logger
}

/**
 * One chain event handler: which logs it wants (an event ABI item and an optional contract address filter)
 * and what it writes for them. `process` must write only through `ctx.tx` and must not call the chain or
 * anything else with side effects: a range can be rolled back and read again, and the handler must then
 * leave no trace of the first attempt.
 */
export interface ChainEventHandler<E extends AbiEvent = AbiEvent> {
  name: string
  event: E
  address?: Address | readonly Address[]
  /**
   * Narrows eth_getLogs beyond the event's topic, asked again before every range: each filter is one call
   * (`address` and indexed `args`, as viem's getLogs takes them), their logs merged. An empty list skips the
   * range for this handler (nothing it could act on). Without it, one call with `address`. This is how a
   * handler asks for the logs it needs instead of every such event on the chain.
   */
  filters?(ctx: { db: Executor; chainId: number }): Promise<readonly LogFilter[]>
  /** The chains whose logs it wants (ids of CHAINS); every configured chain when unset. `ctx.chainId` says which one a range is from. */
  chainIds?: readonly number[]
  /**
   * Returns the ledger ids of the events it acted on (wrote something for); the other events' ledger rows
   * are dropped before the range commits, so chain_events holds only logs that mattered. Returning nothing
   * keeps every event it was given.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: a handler that keeps every event simply returns nothing.
  process(ctx: ChainEventContext<E>): Promise<void | Iterable<number>>
}

/** One eth_getLogs call of a handler: a contract address filter and indexed-argument values (each a value or a list of them). */
export interface LogFilter {
  address?: Address | readonly Address[]
  args?: Record<string, unknown>
}

/** Keeps the event's argument types flowing into `process`. */
export function defineChainHandler<const E extends AbiEvent>(handler: ChainEventHandler<E>): ChainEventHandler<E> {
  return handler
}
