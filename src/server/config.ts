import { isIP } from 'node:net'
import { availableParallelism } from 'node:os'
import { z } from 'zod'
import { type ChainSpec, chainsVarSchema, resolveChains } from './chainConfig'
import { redactUrl } from './redact'
import { cronProblem } from './workers/cron'

/**
 * The whole environment of the server, validated once at boot. This is the only module that reads
 * process.env; everything else receives a `Config`.
 *
 * Bun loads .env files before any code runs, in the usual layered order (.env, then .env.<NODE_ENV>,
 * then .env.local, each overriding the previous), and real environment variables win over all of them.
 *
 * DATABASE_URL and CHAIN_RPC_URL have no default: `npm start` outside production starts an embedded
 * Postgres / a local anvil for an unset one (src/server/dev/services.ts); production requires both.
 */

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'expected true or false' })
  .transform((v) => v === 'true' || v === '1' || v === 'yes')

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .regex(/^-?\d+$/, { message: `expected an integer >= ${min}` })
    .transform(Number)
    .pipe(z.number().int().min(min, { message: `expected an integer >= ${min}` }).max(max, { message: `expected an integer <= ${max}` }))

/** The largest delay setTimeout honours (2^31 - 1 ms, ~24.8 days); a larger one fires at once. */
const MAX_TIMER_MS = 2_147_483_647
/** A duration in milliseconds that ends up in a timer or in statement_timeout. */
const ms = (min: number) => int(min, MAX_TIMER_MS)

/** A string that `problem` finds nothing wrong with; its answer is the message. */
const checked = (problem: (v: string) => string | null) =>
  z.string().superRefine((v, ctx) => {
    const p = problem(v)
    if (p) ctx.addIssue({ code: 'custom', message: p })
  })

/** A cron expression with a next run, or "off" to not schedule that built-in job on this server. */
const cronOrOff = checked((v) => {
  const problem = v === 'off' ? null : cronProblem(v)
  return problem && `${problem} (use a 5- or 6-field UTC cron expression with a next run, or "off")`
}).transform((v) => (v === 'off' ? null : v))

/** Labels of letters, digits and inner hyphens, at most 253 characters; an optional final dot. */
const HOSTNAME = /^(?=.{1,253}\.?$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i

function hostProblem(v: string): string | null {
  if (isIP(v)) return null
  // A name whose last label is all digits reads as an IPv4 address, and 999.1.1.1 is not one.
  if (HOSTNAME.test(v) && !/(^|\.)\d+\.?$/.test(v)) return null
  return 'expected an IPv4 address, an IPv6 address (without brackets) or a hostname'
}

/**
 * What is wrong with the port of a URL that `new URL` refused, if that is the reason. The host and port
 * follow the last "@" (a password may hold "/" or "@"), so the port quoted here is never part of it.
 */
function badPort(v: string): string | null {
  const afterScheme = v.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
  const hostPort = afterScheme.slice(afterScheme.lastIndexOf('@') + 1).split(/[/?#]/)[0]!
  const port = /:([^:\]]*)$/.exec(hostPort)?.[1]
  if (port === undefined || port === '') return null
  return /^\d+$/.test(port) ? `port ${port} is out of range 1..65535` : `port ${JSON.stringify(port)} is not a number`
}

function databaseUrlProblem(v: string): string | null {
  if (!/^postgres(ql)?:\/\//.test(v)) return 'expected a postgres:// URL'
  let url: URL
  try {
    url = new URL(v)
  } catch {
    return badPort(v) ?? 'expected a postgres:// URL (this one does not parse)'
  }
  // new URL refuses ports above 65535 but takes 0, which no Postgres listens on.
  if (url.port === '0') return 'port 0 is out of range 1..65535'
  return null
}

// The chain clients use viem's http transport, so a websocket URL would pass here and fail in every chain job.
const RPC_SCHEMES = ['http:', 'https:']

function rpcUrlProblem(v: string): string | null {
  let url: URL
  try {
    url = new URL(v)
  } catch {
    return badPort(v) ?? 'expected an http(s) URL'
  }
  if (!RPC_SCHEMES.includes(url.protocol)) return `expected an http or https URL, not ${url.protocol.slice(0, 20)}`
  return null
}

/** The secp256k1 group order n: a private key is a number in 1..n-1. */
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n

const hexKey = checked((v) => {
  if (!/^0x[0-9a-fA-F]{64}$/.test(v)) return 'expected a 0x-prefixed 32-byte hex private key'
  const k = BigInt(v)
  return k > 0n && k < SECP256K1_N ? null : 'not a secp256k1 private key: it must be greater than 0 and less than the curve order n'
})

/** The most child processes one server runs; the connection budget (src/server/db/budget.ts) caps it further. */
const MAX_WORKERS = 256
/** "cpus": one child per CPU, within the same cap. */
const cpus = () => Math.min(availableParallelism(), MAX_WORKERS)

/** Anvil's first well-known dev account; only ever a default outside production. */
const ANVIL_DEV_KEY = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80'

/** Comma-separated, blanks ignored. */
const list = (item: (v: string) => string | null) =>
  checked((v) => {
    for (const part of splitList(v)) {
      const p = item(part)
      if (p) return p
    }
    return null
  }).transform(splitList)
const splitList = (v: string) => v.split(',').map((p) => p.trim()).filter(Boolean)

/** A secret: long enough to resist guessing. Never echoed back (SECRET_VARS). */
const secret = z.string().min(32, { message: 'must be at least 32 characters' })

const walletProblem = (v: string) => (/^0x[0-9a-fA-F]{40}$/.test(v) ? null : `expected 0x-prefixed 20-byte addresses, comma-separated (got ${JSON.stringify(v.slice(0, 50))})`)

function originProblem(v: string): string | null {
  if (!URL.canParse(v)) return `expected origins such as https://app.example.com, comma-separated (got ${JSON.stringify(v.slice(0, 100))})`
  const u = new URL(v)
  if (!['http:', 'https:'].includes(u.protocol) || u.origin !== v.replace(/\/$/, '')) return `expected an origin (scheme://host[:port], no path), got ${JSON.stringify(v.slice(0, 100))}`
  return null
}

function baseUrlProblem(v: string): string | null {
  if (!URL.canParse(v)) return 'expected the http(s) URL users reach this server at, e.g. https://app.example.com'
  const u = new URL(v)
  if (!['http:', 'https:'].includes(u.protocol)) return `expected an http or https URL, not ${u.protocol.slice(0, 20)}`
  if (u.username || u.password || u.search || u.hash) return 'expected a URL without credentials, query or fragment'
  return null
}

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  // Unset outside production: `npm start` starts an embedded Postgres and uses its URL (src/server/dev).
  DATABASE_URL: checked(databaseUrlProblem).optional(),
  DB_POOL_SIZE: int(1, 1000).default(10),
  DB_CONNECT_TIMEOUT_MS: ms(100).default(10_000),
  DB_STATEMENT_TIMEOUT_MS: ms(0).default(60_000),
  // Loopback by default: exposing the server is a decision (HOST=0.0.0.0 behind a proxy, in a container).
  HOST: checked(hostProblem).default('127.0.0.1'),
  PORT: int(0, 65535).default(3000),
  LOG_LEVEL: logLevel.default('info'),
  LOG_PRETTY: bool.default(false),
  WORKER_COUNT: z
    .string()
    .regex(/^(cpus|\d+)$/, { message: 'expected an integer >= 0 or "cpus"' })
    .transform((v) => (v === 'cpus' ? cpus() : Number(v)))
    .pipe(z.number().max(MAX_WORKERS, { message: `expected an integer <= ${MAX_WORKERS} or "cpus"` }))
    .default(() => cpus()),
  WORKER_LOG_LEVEL: logLevel.default('info'),
  WORKER_CONCURRENCY: int(1, 10_000).default(250),
  WORKER_URGENT_SLOTS: int(0, 100).default(1),
  WORKER_POLL_INTERVAL_MS: ms(10).default(5000),
  WORKER_LEASE_MS: ms(1000).default(10_000),
  WORKER_SHUTDOWN_TIMEOUT_MS: ms(0).default(10_000),
  WORKER_RESTART_MAX_BACKOFF_MS: ms(0).default(30_000),
  WORKER_DB_POOL_SIZE: int(1, 100).default(3),
  WORKER_DEFAULT_JOB_TIMEOUT_MS: ms(1000).default(900_000),
  WORKER_UNKNOWN_TYPE_FAIL_AFTER_MS: ms(1000).default(3_600_000),
  WORKER_HEAP_HINT_MB: int(0).default(80),
  CRON_REMOVE_OLD_WORKER_JOBS: cronOrOff.default('0 2 * * *'),
  CRON_WATCH_CHAIN: cronOrOff.default('*/30 * * * * *'),
  DEPLOY_MULTICALL3_ON_BOOT: bool.default(true),
  // Unset outside production: `npm start` starts a local anvil and uses its URL. CHAINS lists several
  // chains instead (src/server/chainConfig.ts); CHAIN_RPC_URL and CHAIN_ID are the one-chain shorthand.
  CHAIN_RPC_URL: checked(rpcUrlProblem).optional(),
  CHAIN_ID: int(1).optional(),
  CHAINS: chainsVarSchema(checked(rpcUrlProblem)).optional(),
  // Every RPC request: how long one attempt may take, and how many times a failed one is retried on
  // the same endpoint before the next endpoint of the chain is tried.
  CHAIN_RPC_TIMEOUT_MS: ms(100).default(15_000),
  CHAIN_RPC_RETRIES: int(0, 10).default(1),
  SERVER_WALLET_PRIVATE_KEY: hexKey.optional(),
  CHAIN_CONFIRMATIONS: int(0).default(0),
  CHAIN_MAX_BLOCK_RANGE: int(1, 100_000).default(500),
  CHAIN_START_BLOCK: int(0).optional(),
  CHAIN_MAX_REORG_DEPTH: int(1).default(128),
  // Access (src/server/auth). BASE_URL is where users reach the server: SIWE messages must name its host
  // and URL, and its origin is the default CORS origin. Unset outside production: the listening URL.
  BASE_URL: checked(baseUrlProblem).optional(),
  // Signs session JWTs (HS256). Required in production; elsewhere generated once into DEV_DATA_DIR.
  SESSION_SECRET: secret.optional(),
  SESSION_TTL_MS: ms(60_000).default(7 * 24 * 3600 * 1000),
  SIWE_NONCE_TTL_MS: ms(10_000).default(10 * 60 * 1000),
  ADMIN_WALLETS: list(walletProblem)
    .transform((l) => l.map((a) => a.toLowerCase()))
    .default([]),
  ADMIN_API_TOKEN: secret.optional(),
  CORS_ORIGINS: list(originProblem).optional(),
  METRICS_TOKEN: secret.optional(),
  // The admin dashboard (/dashboard): how long its cookie session lasts, and login attempts per minute per client address.
  DASHBOARD_SESSION_TTL_MS: ms(60_000).default(3600 * 1000),
  DASHBOARD_LOGIN_RATE_PER_MINUTE: int(1, 10_000).default(10),
  // Abuse limits for signed-in users (admins are exempt from the rate and the pending cap).
  SUBMIT_BATCH_MAX: int(1, 100_000).default(100),
  ADMIN_SUBMIT_BATCH_MAX: int(1, 1_000_000).default(10_000),
  SUBMIT_RATE_PER_MINUTE: int(1).default(600),
  MAX_PENDING_JOBS_PER_USER: int(1).default(1000),
  HTTP_MAX_BODY_BYTES: int(1024, 1 << 30).default(1 << 20),
  // Where the development services keep their data (the embedded Postgres in DEV_DATA_DIR/postgres).
  DEV_DATA_DIR: z.string().min(1).default('.data'),
})

type Env = z.output<typeof envSchema>

/** The environment as given: outside production DATABASE_URL and CHAIN_RPC_URL may be unset. */
export type EnvConfig = Omit<Env, 'SERVER_WALLET_PRIVATE_KEY'> & { SERVER_WALLET_PRIVATE_KEY: `0x${string}` | undefined }

/** What the server and its children run with: every service URL known, every chain resolved (never empty). */
export type Config = EnvConfig & { DATABASE_URL: string; chains: ChainSpec[] }

/** Outside production these have development defaults (the listening URL, a generated secret). */
const PRODUCTION_REQUIRED = ['BASE_URL', 'SESSION_SECRET'] as const

/** Echoed back in messages with the password masked. */
const URL_VARS = new Set(['DATABASE_URL'])
/** Echoed back as scheme://host[:port] only: RPC providers put API keys in the path and query. */
const RPC_URL_VARS = new Set(['CHAIN_RPC_URL'])
/** Never echoed back, not even in part (CHAINS holds RPC URLs with their keys). */
const SECRET_VARS = new Set(['SERVER_WALLET_PRIVATE_KEY', 'SESSION_SECRET', 'ADMIN_API_TOKEN', 'METRICS_TOKEN', 'CHAINS'])

/**
 * A URL with its password replaced by ***, for messages and logs. It works on strings `new URL` refuses
 * too: there, everything from the first ":" after the scheme to the last "@" is masked.
 */
export function maskUrl(v: string): string {
  const url = URL.canParse(v) ? new URL(v) : null
  // `u:pw@h` parses too, as scheme "u:" with no host and no password: mask such strings by hand.
  if (url?.host) {
    if (!url.password) return v
    url.password = '***'
    return url.toString()
  }
  const start = /^[a-z][a-z0-9+.-]*:\/\//i.exec(v)?.[0].length ?? 0
  const at = v.lastIndexOf('@')
  const colon = v.indexOf(':', start)
  return colon >= 0 && colon < at ? `${v.slice(0, colon + 1)}***${v.slice(at)}` : v
}

/**
 * The environment cannot work, for a reason the operator fixes: a bad variable, a taken port, a connection
 * budget that does not fit. Its message is one line, free of secrets; main prints it alone and exits 1.
 */
export class ConfigError extends Error {}

/** ` (got "…")` for a message, masked for URLs, nothing for secrets or when the message quotes the value. */
function got(name: string, value: string | undefined, message: string): string {
  if (value === undefined || SECRET_VARS.has(name) || message.includes(JSON.stringify(value))) return ''
  const shown = URL_VARS.has(name) ? maskUrl(value) : RPC_URL_VARS.has(name) ? redactUrl(value) : value
  return ` (got ${JSON.stringify(shown)})`
}

/**
 * Parses an environment (process.env by default); throws a ConfigError whose message is one line naming the
 * variable. In production a missing DATABASE_URL or CHAIN_RPC_URL is such an error; elsewhere they may stay
 * unset, for `npm start` to fill in with the development services.
 */
export function loadEnvConfig(env: Record<string, string | undefined> = process.env): EnvConfig {
  // Empty strings count as unset, so `PORT=` in a .env file falls back to the default.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''))
  const parsed = envSchema.safeParse(cleaned)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    const name = String(issue.path[0] ?? 'environment')
    // Inside CHAINS, the entry and field: `CHAINS: [1].rpcUrls[0]: expected an http or https URL`.
    const where = issue.path.slice(1).map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '')
    throw new ConfigError(`Invalid environment variable ${name}: ${where ? `${where}: ` : ''}${issue.message}${got(name, cleaned[name], issue.message)}`)
  }
  const cfg = parsed.data
  for (const name of ['CHAIN_RPC_URL', 'CHAIN_ID'] as const) {
    if (cfg.CHAINS && cfg[name] !== undefined) throw new ConfigError(`Invalid environment variable ${name}: set CHAINS or the one-chain CHAIN_RPC_URL/CHAIN_ID, not both`)
  }
  if (cfg.NODE_ENV === 'production') {
    if (!cfg.DATABASE_URL) throw new ConfigError('Missing environment variable DATABASE_URL: required when NODE_ENV=production')
    if (!cfg.CHAIN_RPC_URL && !cfg.CHAINS) throw new ConfigError('Missing environment variable CHAIN_RPC_URL (or CHAINS): required when NODE_ENV=production')
    for (const name of PRODUCTION_REQUIRED)
      if (!cfg[name]) throw new ConfigError(`Missing environment variable ${name}: required when NODE_ENV=production`)
  }
  let key = cfg.SERVER_WALLET_PRIVATE_KEY as `0x${string}` | undefined
  if (!key && cfg.NODE_ENV !== 'production') key = ANVIL_DEV_KEY
  return { ...cfg, SERVER_WALLET_PRIVATE_KEY: key }
}

/**
 * The config of a server started without the development services (tests, scripts, the benchmark): both
 * service URLs must be given, in every NODE_ENV. `npm start` uses loadEnvConfig and src/server/dev instead.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const cfg = loadEnvConfig(env)
  if (!cfg.DATABASE_URL) throw missingOutsideStart('DATABASE_URL')
  if (!cfg.CHAIN_RPC_URL && !cfg.CHAINS) throw missingOutsideStart('CHAIN_RPC_URL (or CHAINS)')
  return withServices(cfg, { DATABASE_URL: cfg.DATABASE_URL })
}

/**
 * The server's config from the environment's and the service URLs known now (the development services
 * fill in an unset DATABASE_URL, and a CHAIN_RPC_URL when no chain is configured at all).
 */
export function withServices(env: EnvConfig, services: { DATABASE_URL: string; CHAIN_RPC_URL?: string }): Config {
  const cfg = { ...env, DATABASE_URL: services.DATABASE_URL, CHAIN_RPC_URL: services.CHAIN_RPC_URL ?? env.CHAIN_RPC_URL }
  return { ...cfg, chains: resolveChains(cfg) }
}

const missingOutsideStart = (name: string) =>
  new ConfigError(`Missing environment variable ${name}: required (only npm start starts a development service for an unset one)`)
