import { inArray } from 'drizzle-orm'
import { type Address, parseAbiItem } from 'viem'
import { notifications, users } from '../../db/schema'
import { defineChainHandler, type LogFilter } from './types'

const INSERT_CHUNK = 1000
const LOOKUP_CHUNK = 10_000
/** Wallets per eth_getLogs topic list: providers take a few hundred alternatives per topic position. */
const WALLETS_PER_FILTER = 200

/**
 * ERC-20 Transfer touching a registered user's wallet → one notification per such user (a transfer between two
 * users notifies both; a self-transfer notifies its user once). ERC-721 Transfer shares the topic but indexes its
 * third argument, so strict decoding leaves those logs out.
 */
export const erc20TransferHandler = defineChainHandler({
  name: 'erc20Transfer',
  event: parseAbiItem('event Transfer(address indexed from, address indexed to, uint256 value)'),
  /**
   * Only transfers from or to a registered wallet: two calls per WALLETS_PER_FILTER users and range (a topic
   * list matches any of its values, but from and to are two positions, so they are two calls), none at all
   * without users. Never every Transfer of the chain.
   */
  async filters({ db }) {
    const wallets = (await db.select({ wallet: users.walletAddress }).from(users)).map((u) => u.wallet as Address)
    const filters: LogFilter[] = []
    for (let i = 0; i < wallets.length; i += WALLETS_PER_FILTER) {
      const chunk = wallets.slice(i, i + WALLETS_PER_FILTER)
      filters.push({ args: { from: chunk } }, { args: { to: chunk } })
    }
    return filters
  },
  async process({ tx, chainId, events }) {
    const addresses = new Set<string>()
    for (const { log } of events) {
      addresses.add(log.args.from.toLowerCase())
      addresses.add(log.args.to.toLowerCase())
    }
    if (addresses.size === 0) return []
    // users.wallet_address is stored lower-case (a CHECK enforces it), so this lookup needs no lower() index.
    // Chunked: one bind parameter per address, and a statement takes at most 65,535.
    const userByWallet = new Map<string, number>()
    const all = [...addresses]
    for (let i = 0; i < all.length; i += LOOKUP_CHUNK) {
      const found = await tx
        .select({ id: users.id, wallet: users.walletAddress })
        .from(users)
        .where(inArray(users.walletAddress, all.slice(i, i + LOOKUP_CHUNK)))
      for (const u of found) userByWallet.set(u.wallet, u.id)
    }
    if (userByWallet.size === 0) return []
    const rows: (typeof notifications.$inferInsert)[] = []
    for (const { ledgerId, log } of events) {
      const from = log.args.from.toLowerCase()
      const to = log.args.to.toLowerCase()
      const userIds = new Set([userByWallet.get(from), userByWallet.get(to)].filter((id): id is number => id !== undefined))
      for (const userId of userIds) {
        rows.push({
          userId,
          chainEventId: ledgerId,
          read: false,
          data: {
            type: 'token_transfer',
            chainId,
            token: log.address.toLowerCase(),
            from,
            to,
            value: log.args.value.toString(),
            txHash: log.transactionHash,
          },
        })
      }
    }
    for (let i = 0; i < rows.length; i += INSERT_CHUNK) await tx.insert(notifications).values(rows.slice(i, i + INSERT_CHUNK))
    // Only the transfers that notified someone keep their ledger row.
    return new Set(rows.map((r) => r.chainEventId!))
  },
})
