import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import postgres from 'postgres'
import { MULTICALL3_ADDRESS, MULTICALL3_RUNTIME_BYTECODE } from '../../src/server/chain/multicall3'
import { type Anvil, freePort, startAnvil } from '../helpers/anvil'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'

setDefaultTimeout(120_000)

let anvil: Anvil
let db: TestDatabase
let sql: postgres.Sql

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_server')])
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
})

afterAll(async () => {
  await sql?.end()
  await anvil?.stop()
  await db?.drop()
})

const finished = (type: string) => sql`SELECT id, success, result FROM worker_jobs WHERE type = ${type} AND finished IS NOT NULL ORDER BY id`

describe('chain jobs in the real server', () => {
  test('deployMulticall3 on boot deploys once; the next boot finds it; a forceRedeploy job resets it', async () => {
    const env = { DATABASE_URL: db.url, CHAIN_RPC_URL: anvil.url, WORKER_COUNT: '1', DEPLOY_MULTICALL3_ON_BOOT: 'true' }
    let server = await startServerProcess(env)
    try {
      const [job] = await waitFor(async () => {
        const rows = await finished('deployMulticall3')
        return rows.length > 0 ? rows : null
      }, { timeoutMs: 30_000, what: 'the boot deployMulticall3 job' })
      expect(job!.success).toBe(true)
      expect(job!.result.action).toBe('deployed')
      expect(await anvil.client.getCode({ address: MULTICALL3_ADDRESS })).toBe(MULTICALL3_RUNTIME_BYTECODE)
    } finally {
      await server.stop()
    }

    server = await startServerProcess(env)
    try {
      const rows = await waitFor(async () => {
        const r = await finished('deployMulticall3')
        return r.length > 1 ? r : null
      }, { timeoutMs: 30_000, what: 'the second boot deployMulticall3 job' })
      expect(rows[1]!.success).toBe(true)
      expect(rows[1]!.result).toEqual({ action: 'alreadyDeployed' })

      await anvil.client.setCode({ address: MULTICALL3_ADDRESS, bytecode: '0x00' })
      // Inserted by hand, as an operator would with psql: the engine validates the data and runs it.
      const [inserted] = await sql`INSERT INTO worker_jobs (type, data) VALUES ('deployMulticall3', ${sql.json({ forceRedeploy: true })}) RETURNING id`
      const [done] = await waitFor(
        () => sql`SELECT success, result FROM worker_jobs WHERE id = ${inserted!.id} AND finished IS NOT NULL`.then((r) => (r.length ? r : null)),
        { timeoutMs: 30_000, what: 'the forceRedeploy job' },
      )
      expect(done!.success).toBe(true)
      expect(done!.result).toEqual({ action: 'redeployed', reason: 'forceRedeploy', method: 'anvil_setCode' })
      expect(await anvil.client.getCode({ address: MULTICALL3_ADDRESS })).toBe(MULTICALL3_RUNTIME_BYTECODE)
    } finally {
      await server.stop()
    }
  })

  test('an unreachable chain: the chain jobs fail with a clear error, the cron carries on, the server stays up', async () => {
    const port = await freePort()
    const server = await startServerProcess({
      DATABASE_URL: db.url,
      CHAIN_RPC_URL: `http://127.0.0.1:${port}`,
      WORKER_COUNT: '1',
      CRON_WATCH_CHAIN: '* * * * * *',
      DEPLOY_MULTICALL3_ON_BOOT: 'true',
    })
    try {
      const failures = await waitFor(
        async () => {
          const rows = (await finished('watchChain')).filter((r) => r.success === false)
          return rows.length >= 3 ? rows : null
        },
        { timeoutMs: 30_000, what: 'three failed watchChain runs' },
      )
      for (const r of failures) expect(r.result.error).toContain(`chain RPC at 127.0.0.1:${port} is unreachable (CHAIN_RPC_URL)`)
      const deploy = (await finished('deployMulticall3')).at(-1)!
      expect(deploy.success).toBe(false)
      expect(deploy.result.error).toContain('is unreachable (CHAIN_RPC_URL)')
      // The cron still has its next run queued, and the server answers.
      const [pending] = await sql`SELECT count(*)::int AS n FROM worker_jobs WHERE type = 'watchChain' AND finished IS NULL`
      expect(pending!.n).toBe(1)
      expect(server.proc.exitCode).toBeNull()
      expect((await fetch(`${server.url}/health`)).status).toBe(200)
    } finally {
      await server.stop()
    }
  })
})
