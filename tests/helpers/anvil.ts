import type { Subprocess } from 'bun'
import { createTestClient, http, publicActions, walletActions } from 'viem'
import { anvilBinary, rpcChainId } from '../../src/server/dev/localChain'
import { freePort } from '../../src/server/dev/processes'

// The binary lookup and the port helper are shared with `npm start`'s local chain (src/server/dev).
export { anvilBinary, freePort }

/** Anvil's well-known dev accounts (mnemonic "test test … junk"): #0 is the server wallet's default key. */
export const ANVIL_KEYS = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
  '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a',
] as const

export function anvilClient(url: string) {
  return createTestClient({ mode: 'anvil', transport: http(url, { retryCount: 0 }) })
    .extend(publicActions)
    .extend(walletActions)
}

export type AnvilClient = ReturnType<typeof anvilClient>

export interface Anvil {
  url: string
  port: number
  proc: Subprocess
  client: AnvilClient
  stop(): Promise<void>
}

/** Starts anvil on a free port and waits until it answers eth_chainId (polling with a deadline). Stop it in afterAll. */
export async function startAnvil(opts: { args?: string[]; timeoutMs?: number } = {}): Promise<Anvil> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const proc = Bun.spawn([anvilBinary(), '--host', '127.0.0.1', '--port', String(port), '--quiet', ...(opts.args ?? [])], {
      stdout: 'ignore',
      stderr: 'pipe',
    })
    const url = `http://127.0.0.1:${port}`
    const deadline = Date.now() + (opts.timeoutMs ?? 15_000)
    let ready = false
    while (Date.now() < deadline && proc.exitCode === null) {
      if (await rpcChainId(url).catch(() => null)) {
        ready = true
        break
      }
      await new Promise((r) => setTimeout(r, 25))
    }
    if (ready) {
      return {
        url,
        port,
        proc,
        client: anvilClient(url),
        async stop() {
          if (proc.exitCode === null) proc.kill('SIGKILL')
          await proc.exited
        },
      }
    }
    proc.kill('SIGKILL')
    await proc.exited
    // The port can be taken between freePort() and anvil's bind; try another one.
    if (attempt >= 3) throw new Error(`anvil did not start: ${await new Response(proc.stderr as ReadableStream).text()}`)
  }
}
