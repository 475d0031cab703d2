import { createHash, timingSafeEqual } from 'node:crypto'
import type { Config } from '../config'

/**
 * What every HTTP request goes through before a route sees it (http/app.ts wires these in):
 *
 * - CORS: only the origins of CORS_ORIGINS (default: BASE_URL's origin, else the listening URL's) get an
 *   Access-Control-Allow-Origin, always the origin itself, never `*`, never with Allow-Credentials (callers
 *   sign in with `Authorization: Bearer`, no cookie ever needs to cross origins). Whatever CORS headers a
 *   route set (graphql-yoga reflects every origin with credentials by default) are replaced.
 * - Cross-site request forgery: a write to /graphql must be an `application/json` POST. The content types
 *   a page on another site can send without a preflight (form urlencoded, multipart, text/plain) are
 *   refused with 415 before graphql-yoga sees them (yoga would run a mutation sent as a urlencoded form).
 *   GET carries queries and subscriptions only: yoga refuses a mutation over GET with 405.
 * - Body size: more than HTTP_MAX_BODY_BYTES is a 413 with a JSON error, refused on the Content-Length
 *   before a byte is read, or, for a chunked body, as soon as the stream passes the limit. Bun's own
 *   maxRequestBodySize (bodyBackstopBytes) is a backstop above it: beyond it Bun answers 413 by itself.
 * - Nesting: a JSON body or GET parameter nested deeper than MAX_JSON_DEPTH is a 400, before any recursive
 *   code (JSON.stringify on the way to Postgres, zod, graphql-js) could run out of stack on it.
 */

/** Deeper than any real job data or GraphQL variables; far below what recursive code can take. */
export const MAX_JSON_DEPTH = 64

/** An error in the shape GraphQL clients already read: `{ errors: [{ message, extensions: { code } }] }`. */
export function jsonError(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return Response.json({ errors: [{ message, extensions: { code } }] }, { status, headers })
}

/** Bun's maxRequestBodySize: our own limit answers first (with JSON); this only bounds what Bun takes at all. */
export function bodyBackstopBytes(limit: number): number {
  return limit + Math.max(limit, 1 << 20)
}

// ---------------------------------------------------------------------------------------------------------
// CORS

const ALLOW_METHODS = 'GET, POST, OPTIONS'
/** What a browser client of this API sends: JSON bodies, a bearer token, an Accept for the response format. */
const ALLOW_HEADERS = 'Content-Type, Authorization, Accept'
const PREFLIGHT_MAX_AGE_S = '600'

export interface CorsPolicy {
  /** The origins that get Access-Control-Allow-Origin (computed at the first request, once known). */
  allowedOrigins(): readonly string[]
  isAllowed(origin: string | null): origin is string
  /** The answer to any OPTIONS request: a preflight from an allowed origin is granted, any other gets no CORS header. */
  preflight(request: Request): Response
  /** The response with every CORS header a route set removed, and ours added for an allowed origin. */
  apply(request: Request, response: Response): Response
}

/**
 * `listeningUrl` is read lazily: without BASE_URL the default origin is the one the server listens on,
 * which is only known after listen (PORT=0). It may return undefined before then.
 */
export function createCorsPolicy(config: Pick<Config, 'CORS_ORIGINS' | 'BASE_URL'>, listeningUrl: () => string | undefined): CorsPolicy {
  let origins: readonly string[] | null = null
  const allowedOrigins = (): readonly string[] => {
    if (origins) return origins
    if (config.CORS_ORIGINS) origins = config.CORS_ORIGINS.map((o) => new URL(o).origin)
    else {
      const base = config.BASE_URL ?? listeningUrl()
      // Not known yet (not listening): nothing is allowed, and nothing is cached.
      if (!base) return []
      origins = [new URL(base).origin]
    }
    return origins
  }
  const isAllowed = (origin: string | null): origin is string => origin !== null && allowedOrigins().includes(origin)

  return {
    allowedOrigins,
    isAllowed,
    preflight(request) {
      const origin = request.headers.get('origin')
      const headers = new Headers({ vary: 'Origin' })
      if (isAllowed(origin)) {
        headers.set('access-control-allow-origin', origin)
        headers.set('access-control-allow-methods', ALLOW_METHODS)
        headers.set('access-control-allow-headers', ALLOW_HEADERS)
        headers.set('access-control-max-age', PREFLIGHT_MAX_AGE_S)
      }
      return new Response(null, { status: 204, headers })
    },
    apply(request, response) {
      const origin = request.headers.get('origin')
      const headers = new Headers(response.headers)
      for (const name of [...headers.keys()]) if (name.startsWith('access-control-')) headers.delete(name)
      const vary = headers.get('vary')
      if (!vary?.split(',').some((v) => v.trim().toLowerCase() === 'origin')) headers.set('vary', vary ? `${vary}, Origin` : 'Origin')
      if (isAllowed(origin)) headers.set('access-control-allow-origin', origin)
      return new Response(response.body, { status: response.status, statusText: response.statusText, headers })
    },
  }
}

// ---------------------------------------------------------------------------------------------------------
// Request bodies

const BODYLESS = new Set(['GET', 'HEAD', 'OPTIONS'])

/** The media type of a Content-Type header, lower-cased, without parameters. */
function mediaType(header: string | null): string | null {
  if (!header) return null
  return header.split(';')[0]!.trim().toLowerCase() || null
}

/**
 * 415 unless a request that carries a body is `application/json`. Forms and text/plain are what a page
 * on another site can POST without a preflight; application/json always needs one, which CORS refuses.
 */
export function refuseNonJsonBody(request: Request): Response | null {
  if (BODYLESS.has(request.method)) return null
  const type = mediaType(request.headers.get('content-type'))
  if (type === 'application/json') return null
  return jsonError(
    415,
    'UNSUPPORTED_MEDIA_TYPE',
    `POST /graphql takes Content-Type: application/json only${type ? `, not ${type.slice(0, 100)}` : ' (none was sent)'}`,
  )
}

const tooLarge = (limit: number) =>
  jsonError(413, 'PAYLOAD_TOO_LARGE', `Request body over the limit of ${limit} bytes (HTTP_MAX_BODY_BYTES)`, { connection: 'close' })

/** 413 when the declared Content-Length is over the limit: nothing is read. */
export function refuseDeclaredOversize(request: Request, limit: number): Response | null {
  const declared = request.headers.get('content-length')
  if (declared === null || !/^\d+$/.test(declared.trim())) return null
  return Number(declared) > limit ? tooLarge(limit) : null
}

/**
 * The whole body as text, read chunk by chunk and abandoned as soon as it passes `limit` bytes (a chunked
 * body has no Content-Length to refuse up front); a Response when it is refused.
 */
export async function readBodyCapped(request: Request, limit: number): Promise<string | Response> {
  const declared = refuseDeclaredOversize(request, limit)
  if (declared) return declared
  if (!request.body) return ''
  const reader = request.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > limit) {
      await reader.cancel().catch(() => {})
      return tooLarge(limit)
    }
    chunks.push(value)
  }
  const bytes = new Uint8Array(size)
  let at = 0
  for (const c of chunks) {
    bytes.set(c, at)
    at += c.byteLength
  }
  return new TextDecoder().decode(bytes)
}

/**
 * The deepest nesting of arrays and objects in JSON text, without parsing it (and without recursion):
 * brackets inside strings do not count. Text that is not JSON gets some number; the JSON parser that
 * runs next refuses it anyway.
 */
export function jsonDepth(text: string, stopAbove = Number.POSITIVE_INFINITY): number {
  let depth = 0
  let max = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++ // backslash: skip the escaped character
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) {
        max = depth
        if (max > stopAbove) return max
      }
    } else if (c === 0x5d || c === 0x7d) depth--
  }
  return max
}

const tooDeep = (what: string) =>
  jsonError(400, 'BAD_REQUEST', `${what} is nested more than ${MAX_JSON_DEPTH} levels deep (arrays and objects)`)

/** 400 when a JSON body is nested deeper than MAX_JSON_DEPTH. */
export function refuseDeepJsonBody(text: string): Response | null {
  return jsonDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH ? tooDeep('The request body') : null
}

/** 400 when a JSON-valued GET parameter of GraphQL (variables, extensions) is nested deeper than MAX_JSON_DEPTH. */
export function refuseDeepJsonParams(url: URL): Response | null {
  for (const name of ['variables', 'extensions']) {
    const v = url.searchParams.get(name)
    if (v !== null && jsonDepth(v, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) return tooDeep(`The ${name} parameter`)
  }
  return null
}

// ---------------------------------------------------------------------------------------------------------
// Bearer tokens

const sha256 = (v: string) => createHash('sha256').update(v, 'utf8').digest()

/**
 * Whether the request carries `Authorization: Bearer <expected>`. Both sides are hashed first, so the
 * comparison takes the same time whatever the length or content of what was sent.
 */
export function hasBearer(request: Request, expected: string): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(request.headers.get('authorization') ?? '')
  const given = m?.[1] ?? ''
  // Compared even when no token was sent, so a missing header costs the same as a wrong one.
  return timingSafeEqual(sha256(given), sha256(expected)) && m !== null
}
