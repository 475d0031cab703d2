import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { ADMIN_URL } from './db'

export interface TcpProxy {
  /** The port the proxy listens on (127.0.0.1). */
  port: number
  /** `url` with its host and port replaced by the proxy's. */
  urlThrough(url: string): string
  /** Connections accepted so far (open or closed). */
  readonly accepted: number
  /** Bytes forwarded so far in either direction. */
  readonly forwarded: number
  /**
   * Stops forwarding in both directions on every connection, open and new, without closing any socket.
   * `hold` (the default) is a network partition as TCP sees it: the proxy stops reading, so nothing is
   * buffered in the proxy; what the peers send stays in their kernel buffers (as unacknowledged segments
   * would) and is delivered on heal(). `drop` reads and discards everything instead, so the byte streams
   * lose data and those connections are unusable after heal(). New connections are accepted (the kernel
   * does that anyway) but not connected upstream until heal().
   */
  blackhole(mode?: 'hold' | 'drop'): void
  /** Destroys every open connection at once (both peers see it reset); new ones follow the mode. */
  resetAll(): void
  /** Resumes forwarding (and connects the connections accepted meanwhile). */
  heal(): void
  /** Closes the listener and destroys every connection. */
  close(): Promise<void>
}

interface Pair {
  client: Socket
  upstream: Socket | null
}

/** A TCP proxy on a free loopback port that forwards to `target` (default: the test Postgres, ADMIN_URL's host and port). */
export async function startTcpProxy(target: { host: string; port: number } = testPostgres()): Promise<TcpProxy> {
  let mode: 'open' | 'hold' | 'drop' = 'open'
  let accepted = 0
  let forwarded = 0
  const pairs = new Set<Pair>()

  /** Forwards `from` → `to` with back-pressure, honouring the current mode. */
  function forward(pair: Pair, from: Socket, to: () => Socket | null): void {
    from.on('data', (chunk: Buffer) => {
      if (mode === 'drop') return
      const dest = to()
      if (mode === 'hold' || !dest) {
        // Read in the same tick as the blackhole began (or before upstream exists): give it back unread.
        from.pause()
        from.unshift(chunk)
        return
      }
      forwarded += chunk.length
      if (!dest.write(chunk)) {
        from.pause()
        dest.once('drain', () => {
          if (mode === 'open') from.resume()
        })
      }
    })
    from.on('error', () => destroy(pair))
    from.on('close', () => destroy(pair))
  }

  function destroy(pair: Pair): void {
    if (!pairs.delete(pair)) return
    pair.client.destroy()
    pair.upstream?.destroy()
  }

  function connectUpstream(pair: Pair): void {
    const up = createConnection({ host: target.host, port: target.port })
    pair.upstream = up
    up.setNoDelay(true)
    forward(pair, up, () => pair.client)
    up.on('connect', () => {
      if (mode === 'open') pair.client.resume()
    })
  }

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    accepted++
    client.setNoDelay(true)
    const pair: Pair = { client, upstream: null }
    pairs.add(pair)
    forward(pair, client, () => pair.upstream)
    if (mode === 'hold') return // connected upstream on heal(), as if the SYN had been lost until then
    if (mode === 'drop') client.resume()
    connectUpstream(pair)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as { port: number }).port

  return {
    port,
    urlThrough(url: string) {
      const u = new URL(url)
      u.hostname = '127.0.0.1'
      u.port = String(port)
      return u.toString()
    },
    get accepted() {
      return accepted
    },
    get forwarded() {
      return forwarded
    },
    blackhole(m: 'hold' | 'drop' = 'hold') {
      mode = m
      for (const p of pairs) {
        if (m === 'hold') {
          p.client.pause()
          p.upstream?.pause()
        } else {
          p.client.resume()
          p.upstream?.resume()
        }
      }
    },
    resetAll() {
      for (const p of [...pairs]) destroy(p)
    },
    heal() {
      mode = 'open'
      for (const p of pairs) {
        if (!p.upstream) connectUpstream(p)
        else {
          p.upstream.resume()
          p.client.resume()
        }
      }
    },
    async close() {
      for (const p of [...pairs]) destroy(p)
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

function testPostgres(): { host: string; port: number } {
  const u = new URL(ADMIN_URL)
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port || 5432) }
}
