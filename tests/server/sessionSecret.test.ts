import { expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { resolveSessionSecret } from '../../src/server/auth/secret'

/** A logger that keeps what it was given, to check the warning. */
function recordingLog() {
  const lines: { obj: unknown; msg: string }[] = []
  const log = { warn: (obj: unknown, msg: string) => lines.push({ obj, msg }) }
  return { log: log as never, lines }
}

test('outside production a session secret is generated once into DEV_DATA_DIR (0600), logged, and reused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'secret-'))
  try {
    const { log, lines } = recordingLog()
    const first = resolveSessionSecret({ NODE_ENV: 'development', DEV_DATA_DIR: dir, SESSION_SECRET: undefined }, log)
    expect(first.length).toBeGreaterThanOrEqual(32)
    const path = join(dir, 'session-secret')
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(readFileSync(path, 'utf8').trim()).toBe(new TextDecoder().decode(first))
    expect(lines).toHaveLength(1)
    expect(lines[0]!.msg).toContain('SESSION_SECRET is not set')
    // The log names the file, never the secret.
    expect(JSON.stringify(lines)).not.toContain(new TextDecoder().decode(first))
    const again = resolveSessionSecret({ NODE_ENV: 'development', DEV_DATA_DIR: dir, SESSION_SECRET: undefined }, log)
    expect(again).toEqual(first)
    expect(lines).toHaveLength(1)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('SESSION_SECRET wins; production never generates one', () => {
  const { log } = recordingLog()
  const given = 'x'.repeat(40)
  expect(new TextDecoder().decode(resolveSessionSecret({ NODE_ENV: 'production', DEV_DATA_DIR: '/nonexistent', SESSION_SECRET: given }, log))).toBe(given)
  expect(() => resolveSessionSecret({ NODE_ENV: 'production', DEV_DATA_DIR: '/nonexistent', SESSION_SECRET: undefined }, log)).toThrow('SESSION_SECRET')
})
