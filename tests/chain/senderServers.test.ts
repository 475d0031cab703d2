import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import postgres from 'postgres'
import { privateKeyToAccount } from 'viem/accounts'
import { ANVIL_KEYS, type Anvil, startAnvil } from '../helpers/anvil'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcCall, type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { waitFor } from '../helpers/wait'

setDefaultTimeout(180_000)

const ENTRY = new URL('../fixtures/senderServer.ts', import.meta.url).pathname
const KEY = ANVIL_KEYS[4]
const wallet = privateKeyToAccount(KEY).address
const TO = '0x000000000000000000000000000000000000bEEF'

let anvil: Anvil
let db: TestDatabase
let sql: postgres.Sql
let proxy: RpcProxy
let killProxy: RpcProxy | undefined
const servers: ServerProcess[] = []

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_sender_servers')])
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
  proxy = startRpcProxy(anvil.url)
})

afterAll(async () => {
  for (const s of servers) await s.stop('SIGKILL')
  await sql?.end()
  await proxy?.stop()
  await killProxy?.stop()
  await anvil?.stop()
  await db?.drop()
})

describe('sending jobs on two servers', () => {
  test('jobs of one wallet on two servers: serialised by the wallet concurrencyKey, every nonce used once, no "nonce too low"', async () => {
    const env = { DATABASE_URL: db.url, CHAIN_RPC_URL: proxy.url, SERVER_WALLET_PRIVATE_KEY: KEY, WORKER_COUNT: '2' }
    servers.push(...(await Promise.all([startServerProcess(env, { entry: ENTRY }), startServerProcess(env, { entry: ENTRY })])))
    const JOBS = 8
    const STEPS = 5
    for (let i = 0; i < JOBS; i++) {
      await sql`INSERT INTO worker_jobs (type, user_id, data, concurrency_key) VALUES ('sendTransfers', 0, ${sql.json({ to: TO, steps: STEPS })}, 'wallet:server')`
    }
    const rows = await waitFor(
      async () => {
        const r = await sql`SELECT id, success, result, last_error, started, finished, locked_by FROM worker_jobs WHERE type = 'sendTransfers' ORDER BY started`
        return r.length === JOBS && r.every((x) => x.finished !== null) ? r : null
      },
      { timeoutMs: 120_000, what: 'the sending jobs to finish' },
    )
    expect(rows.map((r) => [r.success, r.last_error])).toEqual(Array(JOBS).fill([true, null]))
    const nonces = rows.flatMap((r) => r.result.nonces as number[]).sort((a, b) => a - b)
    expect(nonces).toEqual(Array.from({ length: JOBS * STEPS }, (_, i) => i))
    // One at a time per wallet, across both servers: no two runs overlap.
    for (let i = 1; i < rows.length; i++) expect(rows[i]!.started.getTime()).toBeGreaterThanOrEqual(rows[i - 1]!.finished.getTime())
    expect(await anvil.client.getTransactionCount({ address: wallet, blockTag: 'latest' })).toBe(JOBS * STEPS)
    expect(proxy.calls.filter((c) => /nonce too low/i.test(c.error ?? ''))).toEqual([])
  })
})

/**
 * Where the kill test stops a worker child, each at a call it provably waits in (held by the proxy):
 * - recorded: the signed transaction is committed, its broadcast has not reached the node;
 * - broadcast: the node accepted (and, automining, mined) it, the reply never came back;
 * - receipt: the node answered with the receipt, the child never read it;
 * - outcome (the fixture's hold): every step returned, the job's outcome is not written.
 */
type KillPoint = 'recorded' | 'broadcast' | 'receipt'

function isKillPoint(point: KillPoint, call: RpcCall, reply?: { result?: unknown; error?: unknown }): boolean {
  if (point === 'recorded') return reply === undefined && call.method === 'eth_sendRawTransaction'
  if (point === 'broadcast') return reply !== undefined && call.method === 'eth_sendRawTransaction' && !reply.error
  return reply !== undefined && call.method === 'eth_getTransactionReceipt' && reply.result != null
}

describe('a sending job on a real server, its worker child SIGKILLed', () => {
  test('100 transfers, the child killed before and after the broadcast, after the receipt and before the outcome write: exactly 100 transfers, no nonce gap, one finished job', async () => {
    // The other test's servers run this job type too, through another proxy: only this test's server may take it.
    for (const s of servers.splice(0)) await s.stop()
    const key = ANVIL_KEYS[3]
    const from = privateKeyToAccount(key).address
    const to = privateKeyToAccount(`0x${'ab'.repeat(32)}`).address
    // The next kill: a point and how many matching calls to let through first (so kills land on varied steps).
    let armed: { point: KillPoint; skip: number; hit: () => void } | null = null
    killProxy = startRpcProxy(anvil.url, {
      pause(call, reply) {
        if (!armed || !isKillPoint(armed.point, call, reply)) return undefined
        if (armed.skip-- > 0) return undefined
        const { hit } = armed
        armed = null
        hit()
        return new Promise<void>(() => {}) // never answered: the caller is killed while waiting
      },
    })
    const server = await startServerProcess(
      { DATABASE_URL: db.url, CHAIN_RPC_URL: killProxy.url, SERVER_WALLET_PRIVATE_KEY: key, WORKER_COUNT: '1' },
      { entry: ENTRY },
    )
    servers.push(server)
    const POINTS: KillPoint[] = ['recorded', 'broadcast', 'receipt']
    const PROXY_KILLS = 12
    // Each kill makes the job's next run attempt + 1, so the run after the proxy kills is attempt 13.
    const [{ id }] = (await sql`
      INSERT INTO worker_jobs (type, user_id, data, concurrency_key)
      VALUES ('sendTransfers', 0, ${sql.json({ to, steps: 100, wallet: 'kill', holdBeforeOutcomeOnAttempt: PROXY_KILLS + 1 })}, 'wallet:kill')
      RETURNING id`) as unknown as [{ id: number }]
    const pidRunning = async (what: string) => {
      const row = await waitFor(async () => (await sql`SELECT locked_by, attempt FROM worker_jobs WHERE id = ${id} AND started IS NOT NULL AND finished IS NULL`)[0], { what })
      const spawn = server.logs.find((l) => l.msg === 'worker spawned' && l.workerId === row.locked_by)
      if (!spawn) throw new Error(`no "worker spawned" line for ${row.locked_by}`)
      return { pid: spawn.pid as number, attempt: row.attempt as number }
    }
    const kills: string[] = []
    for (let i = 0; i < PROXY_KILLS; i++) {
      const point = POINTS[i % POINTS.length]!
      const hit = new Promise<void>((resolve) => {
        armed = { point, skip: Math.floor(Math.random() * 4), hit: resolve }
      })
      let timer: ReturnType<typeof setTimeout> | undefined
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`kill ${i + 1} (${point}) was never reached`)), 60_000)
      })
      await Promise.race([hit, deadline]).finally(() => clearTimeout(timer))
      const { pid, attempt } = await pidRunning(`run ${i + 1} to be running`)
      expect(attempt).toBe(i + 1)
      process.kill(pid, 'SIGKILL')
      kills.push(`${point}@${(await sql`SELECT count(*)::int AS n FROM chain_sends WHERE job_id = ${id}`)[0]!.n}`)
      await waitFor(async () => (await sql`SELECT 1 FROM worker_jobs WHERE id = ${id} AND attempt = ${i + 2}`)[0], { what: `attempt ${i + 2}` })
    }
    // The run after the proxy kills settles every step and holds before its outcome: kill it there too.
    const held = await waitFor(() => server.logs.find((l) => l.msg === 'holding before the outcome'), { timeoutMs: 120_000, what: 'the hold before the outcome' })
    const { pid } = await pidRunning('the holding run')
    expect(held.pid).toBe(pid)
    process.kill(pid, 'SIGKILL')
    kills.push('outcome')

    const row = await waitFor(async () => (await sql`SELECT * FROM worker_jobs WHERE id = ${id} AND finished IS NOT NULL`)[0], { timeoutMs: 120_000, what: 'the job to finish' })
    expect([row.success, row.attempt]).toEqual([true, PROXY_KILLS + 2])
    expect(row.result.nonces).toEqual(Array.from({ length: 100 }, (_, i) => i))
    // Exactly 100 transfers on chain, nonces 0-99, nothing else sent from the wallet.
    expect(await anvil.client.getTransactionCount({ address: from, blockTag: 'pending' })).toBe(100)
    expect(await anvil.client.getBalance({ address: to })).toBe(100n)
    const [sends] = await sql`SELECT count(*)::int AS n, count(*) FILTER (WHERE state = 'mined')::int AS mined, count(DISTINCT nonce)::int AS nonces, max(nonce)::int AS top FROM chain_sends WHERE job_id = ${id}`
    expect(sends).toEqual({ n: 100, mined: 100, nonces: 100, top: 99 })
    // Every kill was at a point it names, and the manager brought every child back.
    expect(kills).toHaveLength(PROXY_KILLS + 1)
    expect(new Set(kills.map((k) => k.split('@')[0]))).toEqual(new Set([...POINTS, 'outcome']))
    expect(server.logs.filter((l) => l.msg === 'worker spawned')).toHaveLength(PROXY_KILLS + 2)
  })
})
