import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Config } from '../config'
import type { Logger } from '../log'

const SECRET_FILE = 'session-secret'

/**
 * The key that signs session JWTs. SESSION_SECRET when set (config requires it in production); otherwise
 * a random one generated once into DEV_DATA_DIR and reused, so development sessions survive a restart.
 * Several servers sharing a database must share this secret, or a session from one is refused by another.
 */
export function resolveSessionSecret(config: Pick<Config, 'SESSION_SECRET' | 'DEV_DATA_DIR' | 'NODE_ENV'>, log: Logger): Uint8Array {
  if (config.SESSION_SECRET) return new TextEncoder().encode(config.SESSION_SECRET)
  // loadEnvConfig refuses a production config without it; this is the second line of that rule.
  if (config.NODE_ENV === 'production') throw new Error('SESSION_SECRET is required in production')
  const path = join(config.DEV_DATA_DIR, SECRET_FILE)
  if (existsSync(path)) {
    const kept = readFileSync(path, 'utf8').trim()
    if (kept.length >= 32) return new TextEncoder().encode(kept)
  }
  mkdirSync(config.DEV_DATA_DIR, { recursive: true })
  const generated = randomBytes(32).toString('base64url')
  writeFileSync(path, `${generated}\n`, { mode: 0o600 })
  chmodSync(path, 0o600)
  log.warn({ path }, 'SESSION_SECRET is not set: generated a development session secret (set SESSION_SECRET in production)')
  return new TextEncoder().encode(generated)
}
