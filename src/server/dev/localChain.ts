import { existsSync } from 'node:fs'
import { arch, platform } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import { freePort, pickPort, running, stopChild, tail, watchdog } from './processes'

const ROOT = new URL('../../../', import.meta.url).pathname

/**
 * The anvil binary from the npm package @foundry-rs/anvil (a devDependency: only development and the tests
 * start a chain). The native binary is run directly rather than node_modules/.bin/anvil (a node wrapper),
 * so signalling our child signals anvil itself.
 */
export function anvilBinary(): string {
  const a = arch() === 'x64' ? 'amd64' : arch()
  const native = join(ROOT, 'node_modules', '@foundry-rs', `anvil-${platform()}-${a}`, 'bin', 'anvil')
  if (existsSync(native)) return native
  return join(ROOT, 'node_modules', '.bin', 'anvil')
}

/** The node's chain id, or null when it does not answer (yet). */
export async function rpcChainId(url: string): Promise<string | null> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
  })
  const body = (await res.json()) as { result?: string }
  return body.result ?? null
}

export interface LocalChain {
  url: string
  pid: number
  stop(): Promise<void>
}

/**
 * Starts anvil for `npm start` in development: on 8545 when free (the port wallets and tools expect), else on
 * any free port. Its state lives in memory, so every start is a fresh chain.
 */
export async function startLocalChain(opts: { preferredPort?: number; timeoutMs?: number } = {}): Promise<LocalChain> {
  const binary = anvilBinary()
  if (!existsSync(binary)) throw new Error('anvil is not installed (@foundry-rs/anvil, a devDependency); run npm install, or set CHAIN_RPC_URL')
  let lastError = ''
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = attempt === 1 ? await pickPort(opts.preferredPort ?? 8545) : await freePort()
    const proc = Bun.spawn([binary, '--host', '127.0.0.1', '--port', String(port), '--quiet'], {
      stdin: 'ignore',
      stdout: 'ignore',
      stderr: 'pipe',
      detached: true,
    })
    const guard = watchdog(proc.pid, 'TERM')
    const stderr = tail(proc.stderr)
    const url = `http://127.0.0.1:${port}`
    if (await untilAnswers(url, proc, opts.timeoutMs ?? 15_000)) {
      return {
        url,
        pid: proc.pid,
        async stop() {
          guard.disarm()
          await stopChild(proc, 'SIGTERM', 5000)
        },
      }
    }
    // It exited (a port taken since the check: retry elsewhere) or never answered (give up).
    const exited = !running(proc)
    guard.disarm()
    await stopChild(proc, 'SIGKILL', 5000)
    lastError = await stderr.text()
    if (!exited) break
  }
  throw new Error(`anvil did not start: ${lastError || 'no answer to eth_chainId'}`)
}

async function untilAnswers(url: string, proc: Subprocess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && running(proc)) {
    if (await rpcChainId(url).catch(() => null)) return true
    await new Promise((r) => setTimeout(r, 25))
  }
  return false
}
