import type { Subprocess } from 'bun'

const FIXTURE = new URL('../fixtures/server.ts', import.meta.url).pathname

export interface ServerProcess {
  url: string
  proc: Subprocess
  /** Every JSON log line the server (and its children) printed so far. */
  logs: Record<string, any>[]
  stop(signal?: NodeJS.Signals): Promise<number>
}

/**
 * Quiet defaults for tests: no chain jobs unless a test asks for them. CHAIN_RPC_URL is set (to the old
 * default, where nothing needs to listen) so that the server starts no local anvil of its own.
 */
export const TEST_ENV = {
  NODE_ENV: 'test',
  CHAIN_RPC_URL: 'http://127.0.0.1:8545',
  HOST: '127.0.0.1',
  PORT: '0',
  LOG_LEVEL: 'info',
  WORKER_LOG_LEVEL: 'info',
  CRON_WATCH_CHAIN: 'off',
  DEPLOY_MULTICALL3_ON_BOOT: 'false',
  // Sign-in: a fixed secret (so two server processes accept each other's sessions), the API token of
  // tests/helpers/auth.ts, and a chain id, so SIWE works without a chain node listening.
  SESSION_SECRET: 'test-session-secret-0123456789abcdef0123456789',
  ADMIN_API_TOKEN: 'test-admin-api-token-0123456789abcdef0123456789',
  CHAIN_ID: '31337',
}

/** Starts the real server (tests/fixtures/server.ts) as a child process and waits until it is ready (or only listening). */
export async function startServerProcess(
  env: Record<string, string>,
  opts: { timeoutMs?: number; waitFor?: 'server ready' | 'server listening'; entry?: string } = {},
): Promise<ServerProcess> {
  const waitFor = opts.waitFor ?? 'server ready'
  const proc = Bun.spawn([process.execPath, opts.entry ?? FIXTURE], {
    env: { ...process.env, ...TEST_ENV, ...env },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const logs: Record<string, any>[] = []
  let url: string | undefined
  let resolveUrl: (u: string) => void = () => {}
  const listening = new Promise<string>((r) => {
    resolveUrl = r
  })
  void (async () => {
    const decoder = new TextDecoder()
    let buf = ''
    const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      buf += decoder.decode(value, { stream: true })
      let nl = buf.indexOf('\n')
      while (nl >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        nl = buf.indexOf('\n')
        try {
          const rec = JSON.parse(line)
          logs.push(rec)
          if (rec.msg === waitFor && !url) {
            url = rec.url
            resolveUrl(rec.url)
          }
        } catch {
          logs.push({ raw: line })
        }
      }
    }
  })()
  const stderr = new Response(proc.stderr as ReadableStream).text()
  const timeout = opts.timeoutMs ?? 20_000
  const result = await Promise.race([
    listening,
    proc.exited.then(async (code) => {
      throw new Error(`server exited with ${code} before listening: ${await stderr}`)
    }),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('server did not start in time')), timeout)),
  ])
  return {
    url: result,
    proc,
    logs,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null) proc.kill(signal)
      return proc.exited
    },
  }
}
