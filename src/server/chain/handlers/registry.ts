import { erc20TransferHandler } from './erc20Transfer'
import type { ChainEventHandler } from './types'

/** The built-in chain event handlers, one file each. Add a handler by writing its file and listing it here. */
export const chainEventHandlers: readonly ChainEventHandler<any>[] = [erc20TransferHandler]

/** Checks a handler list once per run: duplicate names would make logs and errors ambiguous. */
export function assertHandlers(handlers: readonly ChainEventHandler<any>[]): void {
  const names = new Set<string>()
  for (const h of handlers) {
    if (names.has(h.name)) throw new Error(`chain event handler "${h.name}" is registered twice`)
    names.add(h.name)
  }
}
