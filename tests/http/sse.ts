/** A GraphQL subscription over server-sent events (graphql-yoga's transport), read event by event. */
export interface Subscription<T = any> {
  /** The next `next` event's payload (its `data` of the GraphQL result), or throws past the deadline. */
  next(timeoutMs?: number): Promise<{ data?: T; errors?: { message: string; extensions?: Record<string, any> }[] }>
  close(): void
}

export async function subscribe<T = any>(url: string, query: string, variables: Record<string, unknown>, token: string | null): Promise<Subscription<T>> {
  const ac = new AbortController()
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
    signal: ac.signal,
  })
  if (!res.body) throw new Error(`no event stream: HTTP ${res.status}`)
  const reader = res.body.getReader()
  const decoder = new TextDecoder()
  let buf = ''
  const queue: any[] = []
  let waiting = null as ((v: any) => void) | null
  let ended = false
  void (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        buf += decoder.decode(value, { stream: true })
        let sep = buf.indexOf('\n\n')
        while (sep >= 0) {
          const block = buf.slice(0, sep)
          buf = buf.slice(sep + 2)
          sep = buf.indexOf('\n\n')
          const event = /^event: (.*)$/m.exec(block)?.[1]
          const data = block
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trim())
            .join('\n')
          if (!data || (event && event !== 'next')) continue
          const payload = JSON.parse(data)
          if (waiting) {
            waiting(payload)
            waiting = null
          } else queue.push(payload)
        }
      }
    } catch {
      // aborted by close()
    } finally {
      ended = true
    }
  })()
  return {
    async next(timeoutMs = 10_000) {
      if (queue.length > 0) return queue.shift()
      if (ended) throw new Error('the event stream ended')
      return Promise.race([
        new Promise((r) => {
          waiting = r
        }),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no event within ${timeoutMs} ms`)), timeoutMs)),
      ]) as Promise<any>
    },
    close: () => ac.abort(),
  }
}
