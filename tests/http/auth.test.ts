import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { SignJWT } from 'jose'
import postgres from 'postgres'
import { createSiweMessage, parseSiweMessage } from 'viem/siwe'
import { AUTHENTICATE, GENERATE, newWallet, signIn } from '../helpers/auth'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess, TEST_ENV } from '../helpers/server'
import { gql } from './client'

/** Sign-in with Ethereum and sessions, over real HTTP, with viem local accounts signing real messages. */

let db: TestDatabase
let server: ServerProcess
let sql: postgres.Sql
const adminWallet = newWallet()

beforeAll(
  async () => {
    db = await createTestDatabase('auth')
    server = await startServerProcess({
      DATABASE_URL: db.url,
      WORKER_COUNT: '0',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
      ADMIN_WALLETS: adminWallet.address,
    })
    sql = postgres(db.url, { max: 2, onnotice: () => {} })
  },
  { timeout: 30_000 },
)

afterAll(async () => {
  await server?.stop()
  await sql?.end()
  await db?.drop()
})

const ME = `{ me { id walletAddress isAdmin } }`
const anon = { token: null }

async function issued(address: string): Promise<string> {
  const res = await gql(server.url, GENERATE, { address }, anon)
  expect(res.errors).toBeUndefined()
  return res.data.generateSiweMessage
}

async function authenticate(message: string, signature: string) {
  return gql(server.url, AUTHENTICATE, { message, signature }, anon)
}

/** A message with the issued one's nonce (so only the changed field is wrong), signed by the wallet. */
async function forged(wallet: ReturnType<typeof newWallet>, change: Partial<Parameters<typeof createSiweMessage>[0]>) {
  const original = parseSiweMessage(await issued(wallet.address))
  const message = createSiweMessage({ ...(original as Parameters<typeof createSiweMessage>[0]), ...change })
  return { message, signature: await wallet.signMessage({ message }) }
}

const refusal = (res: Awaited<ReturnType<typeof gql>>) => ({ code: res.errors?.[0]?.extensions?.code, message: res.errors?.[0]?.message ?? '' })

describe('sign-in', () => {
  test('a wallet signs the issued message, gets a session, and me returns it; the user row is created once', async () => {
    const wallet = newWallet()
    const message = await issued(wallet.address)
    const parsed = parseSiweMessage(message)
    const base = new URL(server.url)
    expect(parsed).toMatchObject({ address: wallet.address, domain: base.host, uri: base.origin, chainId: 31337, version: '1' })
    expect(parsed.expirationTime!.getTime()).toBeGreaterThan(Date.now())
    expect((await sql`SELECT address FROM auth_nonces WHERE nonce = ${parsed.nonce!}`)[0]?.address).toBe(wallet.address.toLowerCase())

    const res = await authenticate(message, await wallet.signMessage({ message }))
    expect(res.errors).toBeUndefined()
    const { token, user, expiresAt } = res.data.authenticateWithSiwe
    expect(user).toEqual({ id: expect.any(Number), walletAddress: wallet.address.toLowerCase(), isAdmin: false })
    expect(new Date(expiresAt).getTime()).toBeGreaterThan(Date.now() + 6 * 24 * 3600_000)
    // The nonce is consumed.
    expect(await sql`SELECT 1 FROM auth_nonces WHERE nonce = ${parsed.nonce!}`).toHaveLength(0)

    const me = await gql(server.url, ME, undefined, { token })
    expect(me.data.me).toEqual(user)
    const again = await signIn(server.url, wallet)
    expect(again.userId).toBe(user.id)
    expect((await sql`SELECT count(*)::int AS n FROM users WHERE wallet_address = ${wallet.address.toLowerCase()}`)[0]!.n).toBe(1)
  })

  test('a wallet in ADMIN_WALLETS is an admin', async () => {
    const { token, isAdmin } = await signIn(server.url, adminWallet)
    expect(isAdmin).toBe(true)
    expect((await gql(server.url, ME, undefined, { token })).data.me.isAdmin).toBe(true)
  })

  test('a replayed message is refused: the nonce is single-use', async () => {
    const wallet = newWallet()
    const message = await issued(wallet.address)
    const signature = await wallet.signMessage({ message })
    expect((await authenticate(message, signature)).errors).toBeUndefined()
    const replay = await authenticate(message, signature)
    expect(refusal(replay)).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('nonce') })
  })

  test('concurrent sign-ins with one nonce: exactly one wins', async () => {
    const wallet = newWallet()
    const message = await issued(wallet.address)
    const signature = await wallet.signMessage({ message })
    const results = await Promise.all(Array.from({ length: 8 }, () => authenticate(message, signature)))
    expect(results.filter((r) => r.data?.authenticateWithSiwe?.token)).toHaveLength(1)
    expect(results.filter((r) => r.errors?.[0]?.extensions?.code === 'UNAUTHENTICATED')).toHaveLength(7)
  })

  test('a message for another domain is refused', async () => {
    const wallet = newWallet()
    const { message, signature } = await forged(wallet, { domain: 'evil.example.com' })
    expect(refusal(await authenticate(message, signature))).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('domain') })
  })

  test('a message for another uri is refused', async () => {
    const wallet = newWallet()
    const { message, signature } = await forged(wallet, { uri: 'https://evil.example.com' })
    expect(refusal(await authenticate(message, signature))).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('uri') })
  })

  test('a message for another chain id is refused', async () => {
    const wallet = newWallet()
    const { message, signature } = await forged(wallet, { chainId: 1 })
    expect(refusal(await authenticate(message, signature))).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('chain') })
  })

  test('an expired message is refused, and so is a nonce the server has expired', async () => {
    const wallet = newWallet()
    const past = await forged(wallet, { expirationTime: new Date(Date.now() - 1000) })
    expect(refusal(await authenticate(past.message, past.signature))).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('expired') })

    const message = await issued(wallet.address)
    await sql`UPDATE auth_nonces SET expires_at = now() - interval '1 second' WHERE nonce = ${parseSiweMessage(message).nonce!}`
    const res = await authenticate(message, await wallet.signMessage({ message }))
    expect(refusal(res)).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('expired') })
  })

  test('a tampered signature, another wallet’s signature and an edited message are refused; a failed check uses the nonce up', async () => {
    const wallet = newWallet()
    const tries: ((message: string, signature: string) => [string, string])[] = [
      (m, sig) => [m, `${sig.slice(0, 10)}${sig[10] === 'a' ? 'b' : 'a'}${sig.slice(11)}`],
      (m) => [m, ''], // replaced below by another wallet's signature
      (m, sig) => [m.replace('Sign in to', 'Sign into'), sig],
    ]
    for (const [i, tamper] of tries.entries()) {
      const message = await issued(wallet.address)
      const signature = await wallet.signMessage({ message })
      let [m, sig] = tamper(message, signature)
      if (i === 1) sig = await newWallet().signMessage({ message })
      expect(refusal(await authenticate(m, sig))).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('signature') })
      // The nonce is gone: even the real signature of that message is refused now (one check per message).
      expect(refusal(await authenticate(message, signature))).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('nonce') })
    }
    const message = await issued(wallet.address)
    expect((await authenticate(message, await wallet.signMessage({ message }))).errors).toBeUndefined()
  })

  test('one sign-in mutation per request: aliases cannot mint nonces in bulk', async () => {
    const wallet = newWallet()
    const aliased = `mutation ($a: String!) { a: generateSiweMessage(address: $a) b: generateSiweMessage(address: $a) c: generateSiweMessage(address: $a) }`
    const res = await gql(server.url, aliased, { a: wallet.address }, anon)
    // The second alias is refused (and, the field being non-null, graphql-js runs no further mutation field).
    expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'address' })
    expect(res.errors?.[0]?.path).toEqual(['b'])
    expect((await sql`SELECT count(*)::int AS n FROM auth_nonces WHERE address = ${wallet.address.toLowerCase()}`)[0]!.n).toBe(1)
  })

  test('a message naming another address than the signer is refused', async () => {
    const victim = newWallet()
    const attacker = newWallet()
    const message = await issued(victim.address)
    const res = await authenticate(message, await attacker.signMessage({ message }))
    expect(refusal(res)).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining('signature') })
  })

  test('bad addresses and oversized inputs are named', async () => {
    for (const address of ['0x123', 'not an address', `0x${'g'.repeat(40)}`, '0x52908400098527886E0F7030069857D2E4169EE8'.replace('E', 'e')]) {
      const res = await gql(server.url, GENERATE, { address }, anon)
      expect(res.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'address' })
    }
    const big = await authenticate('x'.repeat(5000), '0x00')
    expect(big.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'message' })
    const badSig = await authenticate('hello', 'zz')
    expect(badSig.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'signature' })
    const garbage = await authenticate('not a siwe message at all', '0x00')
    expect(refusal(garbage).code).toBe('UNAUTHENTICATED')
  })

  test('a wallet holds at most 5 unused nonces', async () => {
    const wallet = newWallet()
    for (let i = 0; i < 8; i++) await issued(wallet.address)
    expect((await sql`SELECT count(*)::int AS n FROM auth_nonces WHERE address = ${wallet.address.toLowerCase()}`)[0]!.n).toBe(5)
  })
})

describe('sessions', () => {
  const secret = new TextEncoder().encode(TEST_ENV.SESSION_SECRET)
  const claims = (issuer: string) => new SignJWT({ addr: '0x'.padEnd(42, '1') }).setProtectedHeader({ alg: 'HS256' }).setSubject('1').setIssuer(issuer).setAudience(issuer)

  test('an expired token, a token signed with another key, alg none and garbage are UNAUTHENTICATED', async () => {
    const origin = new URL(server.url).origin
    const expired = await claims(origin).setIssuedAt(Math.floor(Date.now() / 1000) - 100).setExpirationTime(Math.floor(Date.now() / 1000) - 10).sign(secret)
    const otherKey = await claims(origin).setExpirationTime('1h').sign(new TextEncoder().encode('another-secret-another-secret-another-secret'))
    const otherIssuer = await claims('https://elsewhere.example').setExpirationTime('1h').sign(secret)
    const payload = Buffer.from(JSON.stringify({ sub: '1', addr: '0x'.padEnd(42, '1'), iss: origin, aud: origin, exp: 9999999999 })).toString('base64url')
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${payload}.`
    const cases: [string, string][] = [
      [expired, 'expired'],
      [otherKey, 'invalid'],
      [otherIssuer, 'invalid'],
      [none, 'invalid'],
      ['garbage', 'invalid'],
    ]
    for (const [token, word] of cases) {
      const submit = await gql(server.url, `mutation { submitJob(input: { type: "noop" }) { id } }`, undefined, { token })
      expect(refusal(submit)).toEqual({ code: 'UNAUTHENTICATED', message: expect.stringContaining(word) })
    }
    // A valid one from the same key works (the cases above fail for their own reason, not the helper's).
    const good = await claims(origin).setExpirationTime('1h').sign(secret)
    expect((await gql(server.url, `{ jobs { total } }`, undefined, { token: good })).errors).toBeUndefined()
    expect(await sql`SELECT 1 FROM worker_jobs`).toHaveLength(0)
  })

  test('a malformed Authorization header is refused, not ignored', async () => {
    const res = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Basic dXNlcjpwYXNz' },
      body: JSON.stringify({ query: '{ jobs { total } }' }),
    })
    const body = (await res.json()) as any
    expect(body.errors[0].extensions.code).toBe('UNAUTHENTICATED')
    expect(body.errors[0].message).toContain('Bearer')
  })

  test('the admin API token is compared exactly; a near miss is an invalid session', async () => {
    const ok = await gql(server.url, `{ workerStatus { servers { id } } }`)
    expect(ok.errors).toBeUndefined()
    const near = await gql(server.url, `{ workerStatus { servers { id } } }`, undefined, { token: `${TEST_ENV.ADMIN_API_TOKEN.slice(0, -1)}x` })
    expect(refusal(near).code).toBe('UNAUTHENTICATED')
  })

  test('without a session every mutation but sign-in is UNAUTHENTICATED and nothing is written', async () => {
    const mutations = [
      `mutation { submitJob(input: { type: "noop" }) { id } }`,
      `mutation { submitJobs(jobs: [{ type: "noop" }]) { id } }`,
      `mutation { cancelJob(id: "1") { status } }`,
      `mutation { rerunJob(id: "1") { id } }`,
      `mutation { markNotificationRead(id: "1") { id } }`,
      `mutation { markAllNotificationsRead }`,
    ]
    for (const m of mutations) expect(refusal(await gql(server.url, m, undefined, anon)).code).toBe('UNAUTHENTICATED')
    for (const q of [`{ jobs { total } }`, `{ job(id: "1") { id } }`, `{ myNotifications { id } }`, `{ workerStatus { servers { id } } }`])
      expect(refusal(await gql(server.url, q, undefined, anon)).code).toBe('UNAUTHENTICATED')
    expect((await gql(server.url, ME, undefined, anon)).data.me).toBeNull()
    expect(await sql`SELECT 1 FROM worker_jobs`).toHaveLength(0)
  })
})
