import { availableParallelism } from 'node:os'
import { z } from 'zod'
import { isValidCron } from './workers/cron'

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

/** A cron expression, or "off" to not schedule that built-in job on this server. */
const cronOrOff = z
  .string()
  .refine((v) => v === 'off' || isValidCron(v), { message: 'expected a 5- or 6-field cron expression or "off"' })
  .transform((v) => (v === 'off' ? null : v))


const hexKey = z.string().regex(/^0x[0-9a-fA-F]{64}$/, { message: 'expected a 0x-prefixed 32-byte hex private key' })

/** Anvil's first well-known dev account; only ever a default outside production. */
const ANVIL_DEV_KEY = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80'

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  // Unset outside production: `npm start` starts an embedded Postgres and uses its URL (src/server/dev).
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, { message: 'expected a postgres:// URL' })
    .optional(),
  HOST: z.string().min(1).default('0.0.0.0'),
  PORT: int(0, 65535).default(3000),
  LOG_LEVEL: logLevel.default('info'),
  LOG_PRETTY: bool.default(false),
  WORKER_COUNT: z
    .string()
    .regex(/^(cpus|\d+)$/, { message: 'expected an integer >= 0 or "cpus"' })
    .transform((v) => (v === 'cpus' ? availableParallelism() : Number(v)))
    .default(() => availableParallelism()),
  WORKER_LOG_LEVEL: logLevel.default('info'),
  WORKER_CONCURRENCY: int(1, 10_000).default(250),
  WORKER_POLL_INTERVAL_MS: int(10).default(5000),
  WORKER_LEASE_MS: int(1000).default(30_000),
  WORKER_SHUTDOWN_TIMEOUT_MS: int(0).default(10_000),
  WORKER_RESTART_MAX_BACKOFF_MS: int(0).default(30_000),
  WORKER_HEAP_HINT_MB: int(0).default(80),
  CRON_REMOVE_OLD_WORKER_JOBS: cronOrOff.default('0 2 * * *'),
  CRON_WATCH_CHAIN: cronOrOff.default('*/30 * * * * *'),
  DEPLOY_MULTICALL3_ON_BOOT: bool.default(true),
  // Unset outside production: `npm start` starts a local anvil and uses its URL.
  CHAIN_RPC_URL: z.url({ message: 'expected an http(s) URL' }).optional(),
  CHAIN_ID: int(1).optional(),
  SERVER_WALLET_PRIVATE_KEY: hexKey.optional(),
  CHAIN_CONFIRMATIONS: int(0).default(0),
  CHAIN_MAX_BLOCK_RANGE: int(1, 100_000).default(500),
  CHAIN_START_BLOCK: int(0).optional(),
  CHAIN_MAX_REORG_DEPTH: int(1).default(128),
  // Where the development services keep their data (the embedded Postgres in DEV_DATA_DIR/postgres).
  DEV_DATA_DIR: z.string().min(1).default('.data'),
})

type Env = z.output<typeof envSchema>

/** The environment as given: outside production DATABASE_URL and CHAIN_RPC_URL may be unset. */
export type EnvConfig = Omit<Env, 'SERVER_WALLET_PRIVATE_KEY'> & { SERVER_WALLET_PRIVATE_KEY: `0x${string}` | undefined }

/** What the server and its children run with: every service URL known. */
export type Config = EnvConfig & { DATABASE_URL: string; CHAIN_RPC_URL: string }

/** The variables whose absence, outside production, means "start it for me" (see src/server/dev/services.ts). */
const SERVICE_URLS = ['DATABASE_URL', 'CHAIN_RPC_URL'] as const

export class ConfigError extends Error {}

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
    const got = cleaned[name]
    throw new ConfigError(`Invalid environment variable ${name}: ${issue.message}${got === undefined ? '' : ` (got ${JSON.stringify(got)})`}`)
  }
  const cfg = parsed.data
  if (cfg.NODE_ENV === 'production') {
    for (const name of SERVICE_URLS) if (!cfg[name]) throw new ConfigError(`Missing environment variable ${name}: required when NODE_ENV=production`)
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
  const { DATABASE_URL, CHAIN_RPC_URL } = cfg
  if (!DATABASE_URL) throw missingOutsideStart('DATABASE_URL')
  if (!CHAIN_RPC_URL) throw missingOutsideStart('CHAIN_RPC_URL')
  return { ...cfg, DATABASE_URL, CHAIN_RPC_URL }
}

const missingOutsideStart = (name: string) =>
  new ConfigError(`Missing environment variable ${name}: required (only npm start starts a development service for an unset one)`)
