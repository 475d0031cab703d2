import { TEST_ENV } from '../helpers/server'

/** Small HTTP helpers for the tests in this folder: a GraphQL client and a Prometheus text parser. */

export interface GqlResponse<T = any> {
  status: number
  data: T | null | undefined
  errors: { message: string; path?: string[]; extensions?: Record<string, any> }[] | undefined
}

/**
 * A GraphQL POST. `token` is sent as a bearer token; by default the admin API token of the test servers
 * (tests/helpers/server.ts), `null` for an anonymous request.
 */
export async function gql<T = any>(
  url: string,
  query: string,
  variables?: Record<string, unknown>,
  opts: { token?: string | null } = {},
): Promise<GqlResponse<T>> {
  const token = opts.token === undefined ? TEST_ENV.ADMIN_API_TOKEN : opts.token
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  })
  const body = (await res.json()) as { data?: T | null; errors?: GqlResponse['errors'] }
  return { status: res.status, data: body.data, errors: body.errors }
}

/** Parses Prometheus text into a map keyed by sampleKey(name, labels), labels sorted by name. */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not a sample line: ${line}`)
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]))
    out.set(sampleKey(m[1]!, labels), Number(m[3]))
  }
  return out
}

export function sampleKey(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]}"`)
  return parts.length ? `${name}{${parts.join(',')}}` : name
}

export async function scrape(url: string): Promise<{ status: number; contentType: string | null; samples: Map<string, number>; text: string }> {
  const res = await fetch(`${url}/metrics`)
  const text = await res.text()
  return { status: res.status, contentType: res.headers.get('content-type'), samples: parsePrometheus(text), text }
}
