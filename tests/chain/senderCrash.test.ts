import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import type { Subprocess } from 'bun'
import postgres from 'postgres'
import type { Address, Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { ANVIL_KEYS, type Anvil, startAnvil } from '../helpers/anvil'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'

setDefaultTimeout(600_000)

const CHILD = new URL('../fixtures/senderChild.ts', import.meta.url).pathname

let anvil: Anvil
let db: TestDatabase
let sql: postgres.Sql
const proxies: RpcProxy[] = []

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_sender_crash')])
  sql = postgres(db.url, { max: 2, onnotice: () => {} })
})

afterAll(async () => {
  await sql?.end()
  for (const p of proxies) await p.stop()
  await anvil?.stop()
  await db?.drop()
})

function spawnChild(env: Record<string, string>): Subprocess<'ignore', 'pipe', 'pipe'> {
  return Bun.spawn([process.execPath, CHILD], {
    env: { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'silent', DATABASE_URL: db.url, CHAIN_RPC_URL: anvil.url, WORKER_COUNT: '0', ...env },
    stdout: 'pipe',
    stderr: 'pipe',
  })
}

/** The child's first JSON line with `paused` or `done` (its stdout ends without one: it failed, and its stderr says why). */
async function nextEvent(proc: Subprocess<'ignore', 'pipe', 'pipe'>): Promise<{ paused?: boolean; done?: boolean; nonces?: number[] }> {
  const reader = proc.stdout.getReader()
  const decoder = new TextDecoder()
  let buf = ''
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buf += decoder.decode(value, { stream: true })
      for (const line of buf.split('\n').slice(0, -1)) {
        try {
          const v = JSON.parse(line)
          if (v.paused || v.done) return v
        } catch {}
      }
      buf = buf.slice(buf.lastIndexOf('\n') + 1)
    }
  } finally {
    reader.releaseLock()
  }
  throw new Error(`child ended without an event (exit ${proc.exitCode}): ${await new Response(proc.stderr).text()}`)
}

/** Every mined transaction from `from`, in chain order. */
async function minedFrom(from: Address): Promise<{ hash: Hex; nonce: number; to: string | null; value: bigint }[]> {
  const out: { hash: Hex; nonce: number; to: string | null; value: bigint }[] = []
  const head = await anvil.client.getBlockNumber({ cacheTime: 0 })
  for (let n = 0n; n <= head; n++) {
    const block = await anvil.client.getBlock({ blockNumber: n, includeTransactions: true })
    for (const t of block.transactions) if (t.from.toLowerCase() === from.toLowerCase()) out.push({ hash: t.hash, nonce: t.nonce, to: t.to, value: t.value })
  }
  return out
}

const randomAddress = () => privateKeyToAccount(`0x${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('hex')}` as Hex).address

describe('the sender under SIGKILL', () => {
  test('a job of 100 transfers, its process killed at random points (before and after the broadcast, after the receipt, before the outcome): exactly 100 transfers, no nonce gap', async () => {
    const key = ANVIL_KEYS[1]
    const wallet = privateKeyToAccount(key).address
    const to = randomAddress()
    const phases = ['recorded', 'broadcast', 'mined', 'outcome'] as const
    const env = { SERVER_WALLET_PRIVATE_KEY: key, JOB_ID: '100', STEPS: '100', TO: to }
    const kills: string[] = []
    for (let i = 0; i < 16; i++) {
      // The next kill point: a step this job has not recorded yet (a recorded step's rerun settles it and
      // never reaches "recorded" again), a few steps ahead.
      const [{ n }] = (await sql`SELECT count(*)::int AS n FROM chain_sends WHERE job_id = 100`) as unknown as [{ n: number }]
      const step = Math.min(99, n + Math.floor(Math.random() * 6))
      const phase = phases[i % phases.length]!
      const child = spawnChild({ ...env, KILL_AT: `${phase}:${step}` })
      const ev = await nextEvent(child)
      if (ev.paused) {
        child.kill('SIGKILL')
        kills.push(`${phase}:${step}`)
      }
      await child.exited
      if (ev.done) break
    }
    expect(kills.length).toBeGreaterThanOrEqual(10)
    expect(new Set(kills.map((k) => k.split(':')[0])).size).toBe(4)
    const last = spawnChild(env)
    const done = await nextEvent(last)
    await last.exited
    expect(done.done).toBe(true)
    expect(done.nonces).toEqual(Array.from({ length: 100 }, (_, i) => i))

    const txs = await minedFrom(wallet)
    expect(txs.map((t) => t.nonce)).toEqual(Array.from({ length: 100 }, (_, i) => i))
    expect(txs.every((t) => t.to?.toLowerCase() === to.toLowerCase())).toBe(true)
    expect(txs.map((t) => t.value).sort((a, b) => Number(a - b))).toEqual(Array.from({ length: 100 }, (_, i) => BigInt(i + 1)))
    expect(await anvil.client.getBalance({ address: to })).toBe(5050n)
    expect(await anvil.client.getTransactionCount({ address: wallet, blockTag: 'pending' })).toBe(100)
    const [sends] = await sql`SELECT count(*)::int AS n, count(*) FILTER (WHERE state = 'mined')::int AS mined, count(DISTINCT nonce)::int AS nonces FROM chain_sends WHERE job_id = 100`
    expect(sends).toEqual({ n: 100, mined: 100, nonces: 100 })
  })

  test('two processes send for the same wallet at once: every nonce used once, no "nonce too low", no gap', async () => {
    const key = ANVIL_KEYS[2]
    const wallet = privateKeyToAccount(key).address
    const to = randomAddress()
    const proxy = startRpcProxy(anvil.url)
    proxies.push(proxy)
    const children = [201, 202].map((jobId) => spawnChild({ SERVER_WALLET_PRIVATE_KEY: key, CHAIN_RPC_URL: proxy.url, JOB_ID: String(jobId), STEPS: '40', TO: to }))
    const events = await Promise.all(children.map(nextEvent))
    await Promise.all(children.map((c) => c.exited))
    expect(events.every((e) => e.done)).toBe(true)
    const nonces = events.flatMap((e) => e.nonces!).sort((a, b) => a - b)
    expect(nonces).toEqual(Array.from({ length: 80 }, (_, i) => i))
    // The two really interleaved: neither took all its nonces in one block of 40.
    expect(events.every((e) => e.nonces!.at(-1)! - e.nonces![0]! > 39)).toBe(true)
    const txs = await minedFrom(wallet)
    expect(txs.map((t) => t.nonce)).toEqual(Array.from({ length: 80 }, (_, i) => i))
    expect(proxy.calls.filter((c) => /nonce too low/i.test(c.error ?? ''))).toEqual([])
    expect(proxy.calls.filter((c) => c.method === 'eth_sendRawTransaction' && c.error)).toEqual([])
  })
})
