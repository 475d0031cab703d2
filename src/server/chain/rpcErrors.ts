import { BaseError, HttpRequestError, RpcError, TimeoutError } from 'viem'

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

export class ChainUnreachableError extends Error {
  constructor(url: string, cause: unknown) {
    const detail = cause instanceof BaseError ? cause.shortMessage : String(cause)
    super(`chain RPC at ${rpcHost(url)} is unreachable (CHAIN_RPC_URL): ${detail}`, { cause })
    this.name = 'ChainUnreachableError'
  }
}

/** Rethrows transport failures as one clear ChainUnreachableError; other errors pass through unchanged. */
export function explainChainError(err: unknown, url: string): never {
  if (isTransportError(err)) throw new ChainUnreachableError(url, err)
  throw err
}
