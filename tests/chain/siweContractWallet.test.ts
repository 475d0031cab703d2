import { afterAll, beforeAll, expect, setDefaultTimeout, test } from 'bun:test'
import { type Anvil, startAnvil } from '../helpers/anvil'
import { AUTHENTICATE, GENERATE, newWallet } from '../helpers/auth'
import { deployContract } from '../helpers/contracts'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { gql } from '../http/client'

/** Sign-in for a smart-contract wallet (EIP-1271): the server asks the chain whether the wallet accepts the signature. */

setDefaultTimeout(60_000)

let anvil: Anvil
let db: TestDatabase
let server: ServerProcess

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('siwe1271')])
  server = await startServerProcess({ DATABASE_URL: db.url, CHAIN_RPC_URL: anvil.url, WORKER_COUNT: '0', CRON_REMOVE_OLD_WORKER_JOBS: 'off' })
})

afterAll(async () => {
  await server?.stop()
  await anvil?.stop()
  await db?.drop()
})

async function signInAs(address: string, sign: (message: string) => Promise<string>) {
  const gen = await gql(server.url, GENERATE, { address }, { token: null })
  expect(gen.errors).toBeUndefined()
  const message = gen.data.generateSiweMessage as string
  return gql(server.url, AUTHENTICATE, { message, signature: await sign(message) }, { token: null })
}

test("a contract wallet signs in with its owner's signature, checked on chain; anyone else's is refused", async () => {
  const owner = newWallet()
  const [deployer] = await anvil.client.getAddresses()
  const wallet = await deployContract(anvil.client, deployer!, 'TestWallet', [owner.address])

  const stranger = await signInAs(wallet, (message) => newWallet().signMessage({ message }))
  expect(stranger.errors?.[0]?.extensions).toMatchObject({ code: 'UNAUTHENTICATED', field: 'signature' })

  const res = await signInAs(wallet, (message) => owner.signMessage({ message }))
  expect(res.errors).toBeUndefined()
  expect(res.data.authenticateWithSiwe.user.walletAddress).toBe(wallet.toLowerCase())
})
