import type { Server } from 'bun'

export interface RpcCall {
  jsonrpc: '2.0'
  id: number | string | null
  method: string
  params?: unknown[]
}

/**
 * What `answer` may make the proxy say instead of forwarding a call: a JSON-RPC error, or an HTTP error
 * status (with headers, e.g. Retry-After) for the whole request, as a provider's gateway answers.
 */
export type ProxyAnswer =
  | { rpcError: { code: number; message: string } }
  | { httpStatus: number; headers?: Record<string, string>; body?: string }
  | { result: unknown }

export interface RpcProxy {
  url: string
  /** Every call forwarded so far, in arrival order; `error` is the node's JSON-RPC error message, if it answered one. */
  calls: { method: string; params: unknown[]; error?: string }[]
  /**
   * Holds back every call of `method` until the returned release() is called. `arrived` resolves when the
   * first such call reaches the proxy, so a test can act while a client is provably waiting inside that call.
   */
  hold(method: string): { arrived: Promise<void>; release(): void }
  stop(): Promise<void>
}

/**
 * A real HTTP JSON-RPC proxy in front of a real node. It forwards everything, records the calls, and can
 * pretend to be another client: `clientVersion` replaces the web3_clientVersion answer, and `refuse`
 * answers the matching methods with "method not found", as a production node answers anvil_* and evm_*.
 */
export function startRpcProxy(
  target: string,
  opts: {
    clientVersion?: string
    refuse?: RegExp
    answer?: (call: RpcCall) => ProxyAnswer | undefined
    /** Forward the call to the node, then lose the node's reply: the client gets an HTTP 502 instead. */
    dropReply?: (call: RpcCall) => boolean
    /**
     * Asked twice per call: before it is forwarded (`reply` undefined) and after the node answered. A
     * promise returned holds the call there until it settles, so a test can kill the client at that point.
     */
    pause?: (call: RpcCall, reply?: { result?: unknown; error?: unknown }) => Promise<void> | undefined
  } = {},
): RpcProxy {
  const calls: RpcProxy['calls'] = []
  const holds = new Map<string, { gate: Promise<void>; onArrive: () => void }>()

  class HttpAnswer {
    constructor(readonly answer: { httpStatus: number; headers?: Record<string, string>; body?: string }) {}
  }

  async function handle(call: RpcCall): Promise<unknown> {
    const entry: RpcProxy['calls'][number] = { method: call.method, params: call.params ?? [] }
    calls.push(entry)
    const held = holds.get(call.method)
    if (held) {
      held.onArrive()
      await held.gate
    }
    const answer = opts.answer?.(call)
    if (answer && 'httpStatus' in answer) throw new HttpAnswer(answer)
    if (answer && 'rpcError' in answer) return { jsonrpc: '2.0', id: call.id, error: answer.rpcError }
    if (answer && 'result' in answer) return { jsonrpc: '2.0', id: call.id, result: answer.result }
    if (opts.refuse?.test(call.method)) {
      return { jsonrpc: '2.0', id: call.id, error: { code: -32601, message: `the method ${call.method} does not exist/is not available` } }
    }
    if (call.method === 'web3_clientVersion' && opts.clientVersion !== undefined) {
      return { jsonrpc: '2.0', id: call.id, result: opts.clientVersion }
    }
    await opts.pause?.(call)
    const res = await fetch(target, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(call) })
    const reply = (await res.json()) as { result?: unknown; error?: { message?: string } }
    if (reply?.error) entry.error = String(reply.error.message)
    await opts.pause?.(call, reply)
    if (opts.dropReply?.(call)) throw new HttpAnswer({ httpStatus: 502, body: 'reply lost' })
    return reply
  }

  const server: Server<unknown> = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    async fetch(req) {
      const body = (await req.json()) as RpcCall | RpcCall[]
      try {
        const out = Array.isArray(body) ? await Promise.all(body.map(handle)) : await handle(body)
        return Response.json(out)
      } catch (err) {
        if (!(err instanceof HttpAnswer)) throw err
        const a = err.answer
        return new Response(a.body ?? JSON.stringify({ error: `HTTP ${a.httpStatus}` }), { status: a.httpStatus, headers: a.headers })
      }
    },
  })

  return {
    url: `http://127.0.0.1:${server.port}`,
    calls,
    hold(method) {
      let release!: () => void
      let onArrive!: () => void
      const gate = new Promise<void>((r) => {
        release = r
      })
      const arrived = new Promise<void>((r) => {
        onArrive = r
      })
      holds.set(method, { gate, onArrive })
      return {
        arrived,
        release() {
          holds.delete(method)
          release()
        },
      }
    },
    async stop() {
      await server.stop(true)
    },
  }
}
