import { expect, test } from 'bun:test'

/**
 * A socket error event that no one listens to (a connection postgres.js already dropped, reset again by a
 * restarting Postgres) must not kill the process; any other uncaught error still ends it, logged.
 */
const FIXTURE = new URL('../fixtures/strayError.ts', import.meta.url).pathname

async function run(kind: string): Promise<{ code: number; lines: Record<string, any>[] }> {
  const proc = Bun.spawn([process.execPath, FIXTURE, kind], { stdout: 'pipe', stderr: 'pipe' })
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
  return { code, lines: out.split('\n').filter(Boolean).map((l) => JSON.parse(l)) }
}

test('a stray socket error is logged as a warning and the process goes on', async () => {
  const { code, lines } = await run('socket')
  expect(code).toBe(0)
  expect(lines.map((l) => l.msg)).toEqual(['socket error outside any query ignored (uncaught; its connection is already closed)', 'still running'])
  expect(lines[0]!.err).toMatchObject({ code: 'ECONNRESET', message: 'read ECONNRESET' })
})

test('so is an unhandled rejection with a socket error', async () => {
  const { code, lines } = await run('rejection')
  expect(code).toBe(0)
  expect(lines.at(-1)!.msg).toBe('still running')
  expect(lines[0]!.level).toBe(40)
})

test("so is postgres.js's late write on a connection it already closed", async () => {
  const { code, lines } = await run('pgwrite')
  expect(code).toBe(0)
  expect(lines.at(-1)!.msg).toBe('still running')
  expect(lines[0]!.level).toBe(40)
})

test('any other uncaught error still ends the process with code 1, logged as fatal', async () => {
  const { code, lines } = await run('bug')
  expect(code).toBe(1)
  expect(lines).toHaveLength(1)
  expect(lines[0]).toMatchObject({ level: 60, msg: 'uncaught: exiting' })
  expect(lines[0]!.err.message).toBe('a plain bug')
})
