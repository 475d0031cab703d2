import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { hostname } from 'node:os'
import {
  buildClientSchema,
  type GraphQLObjectType,
  getIntrospectionQuery,
  getNamedType,
  type IntrospectionQuery,
  isObjectType,
} from 'graphql'
import postgres from 'postgres'
import { LIMITS } from '../../src/server/graphql/limits'
import { MAX_JSON_DEPTH } from '../../src/server/http/guards'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type ServerProcess, startServerProcess } from '../helpers/server'
import { parsePrometheus } from './client'

/**
 * The hardened HTTP surface, over real HTTP against real server processes: GraphQL document limits,
 * body size and nesting, cross-site requests, CORS, production-only switches, and what /health and
 * /metrics may show.
 */

const BODY_LIMIT = 64 * 1024
const METRICS_TOKEN = 'metrics-token-for-the-limits-test-0123456789'
const APP_ORIGIN = 'https://app.example.com'
const FOREIGN_ORIGIN = 'https://evil.example'
const PROD_BASE_URL = 'https://dapp.example.com'
/** Long enough for production's SESSION_SECRET rule. */
const SECRET = 'limits-test-session-secret-0123456789abcdef'

let db: TestDatabase
let sql: postgres.Sql
/** NODE_ENV=test, CORS_ORIGINS and METRICS_TOKEN set, a small body limit, one worker. */
let server: ServerProcess
const others: ServerProcess[] = []

beforeAll(
  async () => {
    db = await createTestDatabase('limits')
    sql = postgres(db.url, { max: 2, onnotice: () => {} })
    server = await startServerProcess({
      DATABASE_URL: db.url,
      WORKER_COUNT: '1',
      CRON_REMOVE_OLD_WORKER_JOBS: 'off',
      HTTP_MAX_BODY_BYTES: String(BODY_LIMIT),
      CORS_ORIGINS: APP_ORIGIN,
      METRICS_TOKEN,
    })
  },
  { timeout: 30_000 },
)

afterAll(
  async () => {
    await server?.stop()
    for (const s of others) await s.stop()
    await sql?.end()
    await db?.drop()
  },
  { timeout: 30_000 },
)

async function start(env: Record<string, string>, opts?: Parameters<typeof startServerProcess>[1]) {
  const s = await startServerProcess({ DATABASE_URL: db.url, WORKER_COUNT: '0', CRON_REMOVE_OLD_WORKER_JOBS: 'off', ...env }, opts)
  others.push(s)
  return s
}

interface Answer {
  status: number
  headers: Headers
  body: any
  text: string
}

async function send(url: string, init: RequestInit & { path?: string } = {}): Promise<Answer> {
  const res = await fetch(`${url}${init.path ?? '/graphql'}`, init)
  const text = await res.text()
  let body: any = null
  try {
    body = JSON.parse(text)
  } catch {}
  return { status: res.status, headers: res.headers, body, text }
}

const postJson = (url: string, payload: unknown, headers: Record<string, string> = {}) =>
  send(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', ...headers }, body: JSON.stringify(payload) })

const query = (url: string, q: string, variables?: Record<string, unknown>) => postJson(url, { query: q, variables })

const rowCount = async () => (await sql`SELECT count(*)::int AS n FROM worker_jobs`)[0]!.n as number

const healthStatus = async (url: string) => (await fetch(`${url}/health`)).status

/** One GraphQL error naming the limit, code GRAPHQL_VALIDATION_FAILED, HTTP 400. */
function expectLimit(a: Answer, limit: string, message: RegExp) {
  expect(a.status).toBe(400)
  expect(a.body.errors).toHaveLength(1)
  expect(a.body.errors[0].message).toMatch(message)
  expect(a.body.errors[0].extensions).toMatchObject({ code: 'GRAPHQL_VALIDATION_FAILED', limit })
  expect(a.body.data).toBeUndefined()
}

/** Every field of every type under `root`, each object type once per path: the widest query a client can write. */
function everyField(root: GraphQLObjectType): string {
  const walk = (t: GraphQLObjectType, path: Set<string>): string =>
    Object.values(t.getFields())
      .map((f) => {
        const n = getNamedType(f.type)
        if (!isObjectType(n)) return f.name
        return path.has(n.name) ? '' : `${f.name} { ${walk(n, new Set([...path, n.name]))} }`
      })
      .filter(Boolean)
      .join(' ')
  return `{ ${walk(root, new Set([root.name]))} }`
}

describe('GraphQL document limits', () => {
  test('a depth bomb is refused with the depth limit, and so is one hidden in fragments', async () => {
    let nested = 'id'
    for (let i = 0; i < 40; i++) nested = `id { ${nested} }`
    expectLimit(await query(server.url, `{ job(id: "1") { ${nested} } }`), 'maxDepth', new RegExp(`^Query depth limit of ${LIMITS.maxDepth} exceeded, found \\d+\\.$`))
    const fragments = Array.from({ length: 12 }, (_, i) => `fragment F${i} on WorkerJob { id { ...F${i + 1} } }`).join(' ')
    expectLimit(await query(server.url, `{ job(id: "1") { ...F0 } } ${fragments} fragment F12 on WorkerJob { id }`), 'maxDepth', /Query depth limit/)
  })

  test('an alias bomb (500 aliases of one field) is refused with the alias limit', async () => {
    const aliases = Array.from({ length: 500 }, (_, i) => `a${i}: id`).join(' ')
    expectLimit(await query(server.url, `{ job(id: "1") { ${aliases} } }`), 'maxAliases', new RegExp(`^Aliases limit of ${LIMITS.maxAliases} exceeded, found 500\\.$`))
  })

  test('a cost bomb (one field 800 times, within the token and alias limits) is refused with the cost limit', async () => {
    expectLimit(await query(server.url, `{ job(id: "1") { ${'id '.repeat(800)}} }`), 'costLimit', new RegExp(`^Query Cost limit of ${LIMITS.maxCost} exceeded, found \\d+`))
  })

  test('a token bomb is refused with the token limit while parsing', async () => {
    expectLimit(await query(server.url, `{ job(id: "1") { ${'id '.repeat(5000)}} }`), 'maxTokens', new RegExp(`^Token limit of ${LIMITS.maxTokens} exceeded\\.$`))
  })

  test('a directive bomb is refused with the directive limit', async () => {
    expectLimit(
      await query(server.url, `{ job(id: "1") { ${'id @skip(if: false) '.repeat(30)}} }`),
      'maxDirectives',
      new RegExp(`^Directives limit of ${LIMITS.maxDirectives} exceeded, found 30\\.$`),
    )
  })

  test('a literal 5,000 lists deep in an argument is a 400 (the token limit), not a crash', async () => {
    const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`
    expectLimit(await query(server.url, `{ job(id: ${deep}) { id } }`), 'maxTokens', /Token limit/)
    // Under the token limit, as deep as it can get: an ordinary validation error.
    const within = Math.floor(LIMITS.maxTokens / 2) - 20
    const a = await query(server.url, `{ job(id: ${'['.repeat(within)}${']'.repeat(within)}) { id } }`)
    expect(a.status).toBeLessThan(500)
    expect(a.body.errors[0].extensions.code).toBe('GRAPHQL_VALIDATION_FAILED')
  })

  test('the refusals are 400 under Accept: application/graphql-response+json too', async () => {
    const a = await postJson(server.url, { query: `{ job(id: "1") { ${'id '.repeat(5000)}} }` }, { accept: 'application/graphql-response+json' })
    expectLimit(a, 'maxTokens', /Token limit/)
  })

  test('every field of every root type, selected at once, fits every limit', async () => {
    const intro = await query(server.url, getIntrospectionQuery())
    expect(intro.body.errors).toBeUndefined()
    const schema = buildClientSchema(intro.body.data as IntrospectionQuery)
    for (const root of [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()]) {
      if (!root) continue
      // Arguments are left out: a missing one is a validation error, which is not what this is about.
      const a = await query(server.url, `${root.name.toLowerCase()} ${everyField(root)}`)
      expect(a.status).toBeLessThan(500)
      for (const e of a.body.errors ?? []) expect(e.extensions?.limit).toBeUndefined()
    }
  })

  test('after all the bombs the server is healthy', async () => {
    expect(await healthStatus(server.url)).toBe(200)
  })
})

describe('request bodies', () => {
  const padded = (size: number) => {
    const base = JSON.stringify({ query: '{ __typename }' })
    return `${base.slice(0, -1)}${' '.repeat(size - base.length)}}`
  }

  test('a body just under HTTP_MAX_BODY_BYTES is served', async () => {
    const a = await send(server.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: padded(BODY_LIMIT) })
    expect(a.status).toBe(200)
    expect(a.body.data).toEqual({ __typename: 'Query' })
  })

  test('a body over the limit with a Content-Length is 413 with a JSON error, before it is read', async () => {
    const a = await send(server.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: padded(BODY_LIMIT + 1) })
    expect(a.status).toBe(413)
    expect(a.body.errors[0].extensions.code).toBe('PAYLOAD_TOO_LARGE')
    expect(a.body.errors[0].message).toContain(String(BODY_LIMIT))
    // Far over it (past Bun's own backstop too): still 413.
    expect((await send(server.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: padded(BODY_LIMIT * 8) })).status).toBe(413)
  })

  test('a chunked body (no Content-Length) over the limit is 413 with a JSON error', async () => {
    const chunk = new TextEncoder().encode(' '.repeat(4096))
    let sent = 0
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('{"query":"{ __typename }"'))
      },
      pull(c) {
        // Twice the limit at most, so a server that never stops reading ends with a 200 and fails the test.
        if (sent > 2 * BODY_LIMIT) {
          c.enqueue(new TextEncoder().encode('}'))
          c.close()
          return
        }
        sent += chunk.byteLength
        c.enqueue(chunk)
      },
    })
    const a = await send(server.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, duplex: 'half' } as RequestInit)
    expect(a.status).toBe(413)
    expect(a.body.errors[0].extensions.code).toBe('PAYLOAD_TOO_LARGE')
  })

  test('JSON variables nested 5,000 deep are a 400; nesting within the limit reaches GraphQL', async () => {
    const nest = (n: number) => `${'['.repeat(n)}1${']'.repeat(n)}`
    const q = 'query ($id: ID!) { job(id: $id) { id } }'
    const deep = await send(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"query":${JSON.stringify(q)},"variables":{"id":"1","extra":${nest(5000)}}}`,
    })
    expect(deep.status).toBe(400)
    expect(deep.body.errors[0].extensions.code).toBe('BAD_REQUEST')
    expect(deep.body.errors[0].message).toContain(`more than ${MAX_JSON_DEPTH} levels`)
    // Brackets inside strings do not count.
    const inString = await query(server.url, q, { id: '1', extra: nest(5000) })
    expect(inString.status).toBe(200)
    const ok = await send(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"query":${JSON.stringify(q)},"variables":{"id":"1","extra":${nest(MAX_JSON_DEPTH - 2)}}}`,
    })
    expect(ok.status).toBe(200)
    expect(ok.body.errors?.[0]?.extensions?.code).not.toBe('BAD_REQUEST')
    // The same over GET.
    const get = await send(server.url, { path: `/graphql?query=${encodeURIComponent(q)}&variables=${encodeURIComponent(`{"id":"1","x":${nest(500)}}`)}` })
    expect(get.status).toBe(400)
    expect(await healthStatus(server.url)).toBe(200)
  })
})

describe('cross-site requests', () => {
  const MUTATION = 'mutation { submitJob(input: { type: "noop" }) { id } }'

  test('form POSTs of a mutation (urlencoded, multipart, text/plain, no type) are 415 and write nothing', async () => {
    const form = new FormData()
    form.set('query', MUTATION)
    const attempts: RequestInit[] = [
      { body: new URLSearchParams({ query: MUTATION }) },
      { body: form },
      { body: JSON.stringify({ query: MUTATION }), headers: { 'content-type': 'text/plain' } },
      { body: JSON.stringify({ query: MUTATION }) }, // fetch labels a string text/plain;charset=UTF-8
      { body: new Blob([JSON.stringify({ query: MUTATION })]) }, // no Content-Type at all
      { body: JSON.stringify({ query: MUTATION }), headers: { 'content-type': 'application/json-patch+json' } },
    ]
    for (const init of attempts) {
      const a = await send(server.url, { method: 'POST', ...init, headers: { origin: FOREIGN_ORIGIN, ...(init.headers as Record<string, string>) } })
      expect(a.status).toBe(415)
      expect(a.body.errors[0].extensions.code).toBe('UNSUPPORTED_MEDIA_TYPE')
      expect(a.headers.get('access-control-allow-origin')).toBeNull()
    }
    expect(await rowCount()).toBe(0)
  })

  test('application/json with a charset is accepted', async () => {
    const a = await send(server.url, { method: 'POST', headers: { 'content-type': 'Application/JSON; charset=utf-8' }, body: JSON.stringify({ query: '{ __typename }' }) })
    expect(a.status).toBe(200)
    expect(a.body.data).toEqual({ __typename: 'Query' })
  })

  test('a mutation over GET is refused and writes nothing; a query over GET is served', async () => {
    const a = await send(server.url, { path: `/graphql?query=${encodeURIComponent(MUTATION)}`, headers: { accept: 'application/json' } })
    expect(a.status).toBe(405)
    expect(a.body.errors[0].message).toContain('mutation')
    expect(await rowCount()).toBe(0)
    const q = await send(server.url, { path: `/graphql?query=${encodeURIComponent('{ __typename }')}`, headers: { accept: 'application/json' } })
    expect(q.status).toBe(200)
    expect(q.body.data).toEqual({ __typename: 'Query' })
  })
})

describe('CORS', () => {
  const preflight = (url: string, origin: string, path = '/graphql') =>
    send(url, {
      method: 'OPTIONS',
      path,
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization' },
    })
  const corsHeaders = (h: Headers) => [...h.keys()].filter((k) => k.startsWith('access-control-'))

  test('a preflight from an allowed origin is granted for that origin, without credentials', async () => {
    const a = await preflight(server.url, APP_ORIGIN)
    expect(a.status).toBe(204)
    expect(a.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN)
    expect(a.headers.get('access-control-allow-methods')).toContain('POST')
    expect(a.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('content-type')
    expect(a.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization')
    expect(a.headers.get('access-control-allow-credentials')).toBeNull()
    expect(a.headers.get('vary')).toContain('Origin')
  })

  test('a request from an allowed origin gets Access-Control-Allow-Origin for it', async () => {
    const a = await postJson(server.url, { query: '{ __typename }' }, { origin: APP_ORIGIN })
    expect(a.status).toBe(200)
    expect(a.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN)
    expect(a.headers.get('access-control-allow-credentials')).toBeNull()
    expect(a.headers.get('vary')).toContain('Origin')
    const h = await send(server.url, { path: '/health', headers: { origin: APP_ORIGIN } })
    expect(h.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN)
  })

  test('a foreign origin gets no CORS header at all: preflight, POST, GET, errors', async () => {
    for (const origin of [FOREIGN_ORIGIN, 'null', `${APP_ORIGIN}.evil.example`, 'http://app.example.com']) {
      expect(corsHeaders((await preflight(server.url, origin)).headers)).toEqual([])
      expect(corsHeaders((await postJson(server.url, { query: '{ __typename }' }, { origin })).headers)).toEqual([])
      expect(corsHeaders((await send(server.url, { path: '/health', headers: { origin } })).headers)).toEqual([])
      expect(corsHeaders((await send(server.url, { path: '/nowhere', headers: { origin } })).headers)).toEqual([])
      expect(corsHeaders((await send(server.url, { method: 'POST', body: 'x', headers: { origin } })).headers)).toEqual([])
    }
  })

  test('never *: not for a request without an Origin either', async () => {
    for (const a of [await postJson(server.url, { query: '{ __typename }' }), await preflight(server.url, APP_ORIGIN), await send(server.url, { path: '/health' })]) {
      expect(a.headers.get('access-control-allow-origin')).not.toBe('*')
    }
  })
})

describe('production (NODE_ENV=production)', () => {
  let prod: ServerProcess
  beforeAll(
    async () => {
      prod = await start({ NODE_ENV: 'production', BASE_URL: PROD_BASE_URL, SESSION_SECRET: SECRET })
    },
    { timeout: 30_000 },
  )

  test('introspection is refused', async () => {
    for (const q of [getIntrospectionQuery(), '{ __schema { queryType { name } } }', '{ __type(name: "Query") { name } }']) {
      const a = await query(prod.url, q)
      expect(a.status).toBeLessThan(500)
      expect(a.body.data).toBeUndefined()
      expect(a.body.errors[0].message).toContain('introspection has been disabled')
    }
    // __typename is not introspection.
    expect((await query(prod.url, '{ __typename }')).body.data).toEqual({ __typename: 'Query' })
  })

  test('no "Did you mean": misspelled fields, arguments, types, enum values, variable input fields', async () => {
    const attempts = [
      query(prod.url, '{ jbo(id: "1") { id } }'),
      query(prod.url, '{ job(idd: "1") { id } }'),
      query(prod.url, '{ job(id: "1") { idd } }'),
      query(prod.url, 'query ($id: IDD!) { job(id: $id) { id } }', { id: '1' }),
      query(prod.url, 'mutation ($i: SubmitJobInput!) { submitJob(input: $i) { id } }', { i: { type: 'noop', tagg: 'x' } }),
      query(prod.url, 'mutation { submitJob(input: { type: "noop", persistant: true }) { id } }'),
    ]
    for (const a of await Promise.all(attempts)) {
      expect(a.status).toBeLessThan(500)
      expect(a.body.errors.length).toBeGreaterThan(0)
      expect(a.text).not.toContain('Did you mean')
    }
    expect(await rowCount()).toBe(0)
  })

  test('the limits hold there too', async () => {
    expectLimit(await query(prod.url, `{ job(id: "1") { ${'id '.repeat(5000)}} }`), 'maxTokens', /Token limit/)
  })

  test('CORS defaults to the origin of BASE_URL', async () => {
    const a = await postJson(prod.url, { query: '{ __typename }' }, { origin: PROD_BASE_URL })
    expect(a.headers.get('access-control-allow-origin')).toBe(PROD_BASE_URL)
    const b = await postJson(prod.url, { query: '{ __typename }' }, { origin: new URL(prod.url).origin })
    expect(b.headers.get('access-control-allow-origin')).toBeNull()
  })

  test('/metrics without METRICS_TOKEN is open, and boot says so', async () => {
    expect((await fetch(`${prod.url}/metrics`)).status).toBe(200)
    expect(prod.logs.some((l) => l.level === 40 && String(l.msg).includes('METRICS_TOKEN is unset'))).toBe(true)
  })
})

describe('development (NODE_ENV=development)', () => {
  let dev: ServerProcess
  beforeAll(
    async () => {
      dev = await start({ NODE_ENV: 'development', DEV_DATA_DIR: `${process.env.TMPDIR ?? '/tmp'}/limits-test-${process.pid}` })
    },
    { timeout: 30_000 },
  )

  test('introspection and suggestions are on', async () => {
    const intro = await query(dev.url, getIntrospectionQuery())
    expect(intro.body.errors).toBeUndefined()
    expect(intro.body.data.__schema.queryType.name).toBe('Query')
    const typo = await query(dev.url, '{ job(id: "1") { idd } }')
    expect(typo.body.errors[0].message).toContain('Did you mean "id"?')
  })

  test('CORS defaults to the origin of the listening URL', async () => {
    const own = new URL(dev.url).origin
    expect((await postJson(dev.url, { query: '{ __typename }' }, { origin: own })).headers.get('access-control-allow-origin')).toBe(own)
    expect((await postJson(dev.url, { query: '{ __typename }' }, { origin: FOREIGN_ORIGIN })).headers.get('access-control-allow-origin')).toBeNull()
  })
})

describe('/health and /metrics reveal nothing', () => {
  /** Text a public endpoint must never contain. */
  const secrets = () => [hostname(), `"pid"`, String(server.proc.pid), 'lockedBy', '"id"', 'stack', 'postgres://']

  test('/health lists workers by index: no pid, no worker id, no host name', async () => {
    const a = await send(server.url, { path: '/health' })
    expect(a.status).toBe(200)
    expect(Object.keys(a.body).sort()).toEqual(['db', 'status', 'workers'])
    expect(Object.keys(a.body.db).sort()).toEqual(['latencyMs', 'ok'])
    expect(a.body.workers).toHaveLength(1)
    expect(Object.keys(a.body.workers[0]).sort()).toEqual(['alive', 'healthy', 'index', 'problem', 'restarts', 'runningJobs'])
    expect(a.body.workers[0]).toMatchObject({ index: 0, alive: true, healthy: true, problem: null, restarts: 0 })
    for (const s of secrets()) expect(a.text).not.toContain(s)
  })

  test('with the database unreachable, /health is 503 with no host, port or error text', async () => {
    const probe = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
    const closedPort = probe.port
    probe.stop(true)
    const down = await start({ DATABASE_URL: `postgres://postgres:hunter2@127.0.0.1:${closedPort}/nowhere`, WORKER_COUNT: '1' }, { waitFor: 'server listening' })
    const a = await send(down.url, { path: '/health' })
    expect(a.status).toBe(503)
    expect(a.body).toEqual({ status: 'degraded', db: { ok: false, latencyMs: expect.any(Number) }, workers: [] })
    for (const s of ['127.0.0.1', String(closedPort), 'ECONNREFUSED', 'connect', 'nowhere', 'hunter2', 'error', hostname()]) expect(a.text).not.toContain(s)
  })

  test('/metrics: 401 without the token, with a wrong one or another scheme; 200 with it', async () => {
    const refusals: Record<string, string>[] = [
      {},
      { authorization: 'Bearer wrong' },
      { authorization: `Bearer ${METRICS_TOKEN}x` },
      { authorization: `Bearer ${METRICS_TOKEN.slice(0, -1)}` },
      { authorization: `Basic ${btoa(`metrics:${METRICS_TOKEN}`)}` },
      { authorization: METRICS_TOKEN },
      { authorization: 'Bearer ' },
    ]
    for (const headers of refusals) {
      const a = await send(server.url, { path: '/metrics', headers })
      expect(a.status).toBe(401)
      expect(a.headers.get('www-authenticate')).toStartWith('Bearer')
      expect(a.body.errors[0].extensions.code).toBe('UNAUTHENTICATED')
      expect(a.text).not.toContain('worker_jobs')
    }
    const ok = await send(server.url, { path: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
    expect(ok.status).toBe(200)
    expect(ok.headers.get('content-type')).toStartWith('text/plain')
    expect(parsePrometheus(ok.text).get('worker_jobs_query_up')).toBe(1)
  })

  test('/metrics labels are fixed sets, a registered type and the chain id only; no host, pid or id in it', async () => {
    const { text } = await send(server.url, { path: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
    const labels = new Set([...text.matchAll(/[{,](\w+)="/g)].map((m) => m[1]))
    for (const l of labels) expect(['state', 'type', 'scope', 'priority', 'outcome', 'cause', 'action', 'le', 'chain_id', 'endpoint', 'setting']).toContain(l!)
    // Run outcomes, and the RPC request outcomes of worker_chain_rpc_requests_total.
    const outcomes = ['succeeded', 'failed', 'cancelled', 'interrupted', 'rescued', 'ok', 'rpc_error', 'rate_limited', 'unreachable']
    for (const m of text.matchAll(/outcome="(\w+)"/g)) expect(outcomes).toContain(m[1]!)
    // A configured RPC URL as scheme://host[:port] only: never a path, where API keys live.
    for (const m of text.matchAll(/endpoint="([^"]*)"/g)) expect(m[1]!).toMatch(/^https?:\/\/[^/?#@]+$/)
    for (const m of text.matchAll(/setting="(\w+)"/g)) expect(['endpoints', 'timeout_seconds', 'retries']).toContain(m[1]!)
    expect(text).toContain('worker_chain_rpc_settings{chain_id=')
    for (const m of text.matchAll(/state="(\w+)"/g)) expect(['pending_due', 'pending_future', 'running']).toContain(m[1]!)
    for (const m of text.matchAll(/scope="(\w+)"/g)) expect(['type', 'key']).toContain(m[1]!)
    for (const m of text.matchAll(/priority="(\w+)"/g)) expect(['negative', 'zero', 'positive']).toContain(m[1]!)
    for (const s of [hostname(), String(server.proc.pid)]) expect(text).not.toContain(s)
  })

  test('an unknown path is a JSON 404', async () => {
    const a = await send(server.url, { path: '/nowhere' })
    expect(a.status).toBe(404)
    expect(a.body.errors[0].extensions.code).toBe('NOT_FOUND')
  })
})
