import { BaseError, HttpRequestError, RpcError, TimeoutError } from 'viem'
import type { ChainSpec } from '../chainConfig'
import { parseRetryAfter } from './providerLimits'

/** The RPC endpoint without path, query or credentials: API keys often live in the URL and must not reach logs or job results. */
export function rpcHost(url: string): string {
  try {
    return new URL(url).host
  } catch {
    return 'the configured RPC'
  }
}

/** True when the node could not be reached at all (connection refused, DNS, timeout, HTTP error status). */
export function isTransportError(err: unknown): boolean {
  return err instanceof BaseError && !!err.walk((e) => e instanceof HttpRequestError || e instanceof TimeoutError)
}

/** True when the node answered with a JSON-RPC error (e.g. method not found). */
export function isRpcError(err: unknown): boolean {
  return err instanceof BaseError && !!err.walk((e) => e instanceof RpcError)
}

/**
 * How providers word "this eth_getLogs range is too big": Infura/-32005 "query returned more than 10000
 * results", Alchemy "Log response size exceeded … up to a 2K block range", QuickNode/Ankr "eth_getLogs is
 * limited to a 10000 range", others "block range too large", "range exceeds", "exceed maximum block range".
 */
const RANGE_WORDING =
  /more than [\d,]+ results|block range|range (is )?too (large|wide|big)|range exceed|exceeds? (the )?max(imum)? (block )?range|limited to (a |an )?[\d,]+( block)? range|response size (exceeded|is larger)|too many (results|logs|blocks)/i

/** How providers word a rate limit in a JSON-RPC error (some answer HTTP 200 with it instead of a 429). */
const RATE_WORDING = /rate limit|too many requests|requests? per second|request limit reached|exceeded .*(rate|quota)|compute units/i

const errorText = (e: unknown) => (e instanceof BaseError ? `${e.message}\n${e.details ?? ''}` : e instanceof Error ? e.message : String(e))

/** The node refused a request for its size (an eth_getLogs range or result count above the provider's cap). */
export function isRangeRefused(err: unknown): boolean {
  if (!(err instanceof BaseError)) return false
  return !!err.walk((e) => (e instanceof RpcError || e instanceof HttpRequestError) && RANGE_WORDING.test(errorText(e)))
}

/** The provider is rate limiting: HTTP 429, or a JSON-RPC error that says so (codes 429 and -32007, or rate wording). */
export function isRateLimited(err: unknown): boolean {
  if (!(err instanceof BaseError) || isRangeRefused(err)) return false
  return !!err.walk((e) => {
    if (e instanceof HttpRequestError) return e.status === 429
    if (e instanceof RpcError) return e.code === 429 || e.code === -32007 || RATE_WORDING.test(errorText(e))
    return false
  })
}

/** The wait the provider asked for (Retry-After of an HTTP answer), in milliseconds, or null. */
export function retryAfterMs(err: unknown): number | null {
  if (!(err instanceof BaseError)) return null
  const http = err.walk((e) => e instanceof HttpRequestError) as HttpRequestError | null
  return parseRetryAfter(http?.headers?.get('retry-after'))
}

type ChainRef = Pick<ChainSpec, 'rpcUrls' | 'tagSuffix' | 'id'>

/** A chain's endpoints for a message (hosts only), and which variable configures them. */
const hostsOf = (chain: ChainRef) => chain.rpcUrls.map(rpcHost).join(', ')
const sourceOf = (chain: ChainRef) => (chain.tagSuffix ? `CHAINS, chain ${chain.id}` : 'CHAIN_RPC_URL')

export class ChainUnreachableError extends Error {
  constructor(chain: ChainRef, cause: unknown) {
    const detail = cause instanceof BaseError ? cause.shortMessage : String(cause)
    const all = chain.rpcUrls.length > 1 ? '; every endpoint failed' : ''
    super(`chain RPC at ${hostsOf(chain)} is unreachable (${sourceOf(chain)}${all}): ${detail}`, { cause })
    this.name = 'ChainUnreachableError'
  }
}

export class ChainRateLimitedError extends Error {
  constructor(chain: ChainRef, cause: unknown) {
    super(`chain RPC at ${hostsOf(chain)} is rate limiting this server (${sourceOf(chain)}; HTTP 429 or the provider's rate-limit error); backing off and retrying later`, { cause })
    this.name = 'ChainRateLimitedError'
  }
}

/** Rethrows rate limits and transport failures as one clear error each; other errors pass through unchanged. */
export function explainChainError(err: unknown, chain: ChainRef): never {
  if (err instanceof ChainRateLimitedError || err instanceof ChainUnreachableError) throw err
  if (isRateLimited(err)) throw new ChainRateLimitedError(chain, err)
  if (isTransportError(err)) throw new ChainUnreachableError(chain, err)
  throw err
}
