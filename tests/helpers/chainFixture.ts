import postgres from 'postgres'
import type { Abi, Address, Hex } from 'viem'
import type { AnvilClient } from './anvil'
import { compileTestContracts, deployContract } from './contracts'

/**
 * A chain with a TestToken, some registered users and one stranger, plus the queries the watchChain tests
 * use to compare the notifications table with what the chain says.
 */
export interface TokenFixture {
  client: AnvilClient
  sql: postgres.Sql
  token: Address
  nft: Address
  abi: Abi
  /** accounts[0] deploys and mints; users[i] are registered; stranger is not. */
  minter: Address
  users: { id: number; address: Address }[]
  stranger: Address
}

/**
 * `existingUsers`: a second chain of the same test (same dev accounts, so the same wallets) reuses the
 * users the first fixture registered instead of inserting them again.
 */
export async function setupTokenFixture(
  client: AnvilClient,
  databaseUrl: string,
  userCount = 2,
  existingUsers?: TokenFixture['users'],
): Promise<TokenFixture> {
  const accounts = await client.getAddresses()
  const minter = accounts[0]!
  const token = await deployContract(client, minter, 'TestToken', ['Test', 'TST'])
  const nft = await deployContract(client, minter, 'TestNft')
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} })
  const users: TokenFixture['users'] = existingUsers ? [...existingUsers] : []
  for (const address of existingUsers ? [] : accounts.slice(1, 1 + userCount)) {
    const [row] = await sql`INSERT INTO users (wallet_address) VALUES (${address.toLowerCase()}) RETURNING id`
    users.push({ id: row!.id as number, address })
  }
  const f: TokenFixture = {
    client,
    sql,
    token,
    nft,
    abi: compileTestContracts().TestToken!.abi,
    minter,
    users,
    stranger: accounts[1 + userCount]!,
  }
  // Everyone starts with tokens, so transfers never revert.
  for (const a of [...users.map((u) => u.address), f.stranger]) await mint(f, a, 1_000_000n)
  return f
}

async function send(f: TokenFixture, from: Address, functionName: string, args: unknown[]): Promise<Hex> {
  const hash = await f.client.writeContract({ address: f.token, abi: f.abi, functionName, args, account: from, chain: null })
  const receipt = await f.client.waitForTransactionReceipt({ hash, pollingInterval: 20 })
  if (receipt.status !== 'success') throw new Error(`${functionName} reverted`)
  return hash
}

/**
 * `count` transfers, one block each, cycling through user→user, user→stranger and stranger→user, with
 * values valueBase, valueBase + 1, … (distinct bases keep two batches' logs apart).
 */
export async function mineTransfers(f: TokenFixture, count: number, valueBase = 1n): Promise<{ start: bigint; end: bigint }> {
  const start = (await f.client.getBlockNumber({ cacheTime: 0 })) + 1n
  const [a, b] = f.users
  for (let i = 0; i < count; i++) {
    const [from, to] = [
      [a!.address, b!.address],
      [a!.address, f.stranger],
      [f.stranger, b!.address],
    ][i % 3]!
    await transfer(f, from!, to!, valueBase + BigInt(i))
  }
  return { start, end: await f.client.getBlockNumber({ cacheTime: 0 }) }
}

export const mint = (f: TokenFixture, to: Address, value: bigint) => send(f, f.minter, 'mint', [to, value])
export const transfer = (f: TokenFixture, from: Address, to: Address, value: bigint) => send(f, from, 'transfer', [to, value])
export const batchTransfer = (f: TokenFixture, from: Address, to: Address[], values: bigint[]) => send(f, from, 'batchTransfer', [to, values])

/** The notifications the chain calls for in [fromBlock, toBlock], computed from the chain alone, one key per row. */
export async function expectedNotificationKeys(f: TokenFixture, fromBlock: bigint, toBlock: bigint): Promise<string[]> {
  const logs = await f.client.getContractEvents({ address: f.token, abi: f.abi, eventName: 'Transfer', fromBlock, toBlock, strict: true })
  const byWallet = new Map(f.users.map((u) => [u.address.toLowerCase(), u.id]))
  const keys: string[] = []
  for (const log of logs) {
    const { from, to, value } = log.args as { from: Address; to: Address; value: bigint }
    const ids = new Set([byWallet.get(from.toLowerCase()), byWallet.get(to.toLowerCase())].filter((x) => x !== undefined))
    for (const id of ids) keys.push(key(id, log.blockHash, log.logIndex, f.token, from, to, value, log.transactionHash))
  }
  return keys.sort()
}

const key = (userId: number, blockHash: string, logIndex: number, token: string, from: string, to: string, value: bigint | string, txHash: string) =>
  [userId, blockHash.toLowerCase(), logIndex, token.toLowerCase(), from.toLowerCase(), to.toLowerCase(), String(value), txHash.toLowerCase()].join('|')

/** The notifications table as the same keys (joined with the ledger for block hash and log index); of one chain when given. */
export async function actualNotificationKeys(f: TokenFixture, chainId?: number): Promise<string[]> {
  const rows = await f.sql`
    SELECT n.user_id, n.data, e.block_hash, e.log_index
    FROM notifications n JOIN chain_events e ON e.id = n.chain_event_id
    WHERE ${chainId ?? null}::int IS NULL OR (e.chain_id = ${chainId ?? null}::int AND (n.data->>'chainId')::int = e.chain_id)
    ORDER BY n.id`
  return rows
    .map((r) => key(r.user_id, r.block_hash, r.log_index, r.data.token, r.data.from, r.data.to, r.data.value, r.data.txHash))
    .sort()
}

export async function notificationCounts(f: TokenFixture): Promise<Record<number, number>> {
  const rows = await f.sql`SELECT user_id, count(*)::int AS n FROM notifications GROUP BY user_id`
  return Object.fromEntries(rows.map((r) => [r.user_id, r.n]))
}

/** Forgets everything watchChain stored, so the next test starts from its own CHAIN_START_BLOCK. */
export async function resetWatchState(f: TokenFixture): Promise<void> {
  await f.sql`TRUNCATE chain_cursors, chain_blocks, chain_events, notifications`
}
