import { createPublicClient, createWalletClient, fallback, http, type PublicClient, type Transport, type WalletClient } from 'viem'
import { type PrivateKeyAccount, privateKeyToAccount } from 'viem/accounts'
import type { ChainSpec } from '../chainConfig'
import type { Config } from '../config'
import { redactError, redactUrl } from '../redact'
import type { RpcOutcome } from '../workers/jobMetrics'
import { isRangeRefused, isRateLimited, isRpcError } from './rpcErrors'

export interface ChainClients {
  spec: ChainSpec
  publicClient: PublicClient
  /** Undefined only in production without SERVER_WALLET_PRIVATE_KEY. */
  walletClient: WalletClient | undefined
  account: PrivateKeyAccount | undefined
  /** The chain's id from CHAINS or CHAIN_ID, otherwise asked from the node once and cached. */
  getChainId(): Promise<number>
  /** The endpoints as messages may show them: scheme://host[:port], never a path or key. */
  endpoints: string[]
}

/** Every configured chain's clients. The first chain is the default one (the CHAIN_RPC_URL shorthand's only one). */
export interface ChainSet {
  readonly all: readonly ChainClients[]
  /** The chain `chainId` (the default chain when undefined); a chain this server is not configured for is a clear error. */
  get(chainId?: number): ChainClients
}

export class ChainNotConfiguredError extends Error {
  constructor(chainId: number, configured: readonly ChainSpec[]) {
    const ids = configured.map((c) => c.id ?? 'unknown id').join(', ')
    super(`chain ${chainId} is not configured on this server (CHAINS lists: ${ids})`)
    this.name = 'ChainNotConfiguredError'
  }
}

/** Counts each RPC request's outcome per endpoint (serverApp.metrics); the chain id label is the configured one. */
export type RpcObserver = (chain: ChainSpec, endpoint: number, outcome: RpcOutcome) => void

/** Builds every chain's clients. Nothing connects here: an unreachable chain fails the jobs that use it, not the boot. */
export function createChainSet(config: Config, observe?: RpcObserver): ChainSet {
  const all = config.chains.map((spec) => createChainClients(config, spec, observe))
  return {
    all,
    get(chainId) {
      if (chainId === undefined) return all[0]!
      const found = all.find((c) => c.spec.id === chainId)
      if (!found) throw new ChainNotConfiguredError(chainId, config.chains)
      return found
    },
  }
}

/**
 * One chain's clients over all its RPC URLs: viem's fallback transport tries them in order for each
 * request (an endpoint that fails or times out hands the request to the next), and the whole list is
 * retried CHAIN_RPC_RETRIES times with viem's backoff. Each endpoint's attempt is bounded by
 * CHAIN_RPC_TIMEOUT_MS. The order is the configured one (no ranking): the first URL is the primary.
 */
export function createChainClients(config: Config, spec: ChainSpec, observe?: RpcObserver): ChainClients {
  const endpoints = spec.rpcUrls.map(redactUrl)
  const perEndpoint = spec.rpcUrls.map((url, i) => {
    // No retryCount here: http's own would win over the one the fallback (0 per endpoint) or withRetries gives.
    const t = http(url, { timeout: config.CHAIN_RPC_TIMEOUT_MS })
    return redacting(observe ? observed(t, (outcome) => observe(spec, i, outcome)) : t)
  })
  const transport = perEndpoint.length === 1 ? withRetries(perEndpoint[0]!, config.CHAIN_RPC_RETRIES) : fallback(perEndpoint, { retryCount: config.CHAIN_RPC_RETRIES })
  const publicClient = createPublicClient({ transport }) as PublicClient
  const account = config.SERVER_WALLET_PRIVATE_KEY ? privateKeyToAccount(config.SERVER_WALLET_PRIVATE_KEY) : undefined
  const walletClient = account ? createWalletClient({ account, transport }) : undefined
  let chainId: Promise<number> | undefined = spec.id ? Promise.resolve(spec.id) : undefined
  return {
    spec,
    publicClient,
    walletClient,
    account,
    endpoints,
    getChainId() {
      chainId ??= publicClient.getChainId().catch((err) => {
        chainId = undefined
        throw err
      })
      return chainId
    },
  }
}

/** A single endpoint: its own transport, retried like the fallback list would be. */
function withRetries(transport: Transport, retryCount: number): Transport {
  return ((opts) => transport({ ...opts, retryCount })) as Transport
}

/** How a request ended, for worker_chain_rpc_requests_total. */
export function rpcOutcome(err: unknown): RpcOutcome {
  if (err === undefined) return 'ok'
  if (isRateLimited(err)) return 'rate_limited'
  if (isRangeRefused(err) || isRpcError(err)) return 'rpc_error'
  return 'unreachable'
}

/** The transport with every request's outcome seen first: `ok` on an answer; `error` maps an error before it is thrown on. */
function onOutcome(transport: Transport, hooks: { ok?: () => void; error: (err: unknown) => unknown }): Transport {
  return ((opts) => {
    const t = transport(opts)
    return {
      ...t,
      async request(args, options) {
        let res: unknown
        try {
          res = await t.request(args, options)
        } catch (err) {
          throw hooks.error(err)
        }
        hooks.ok?.()
        return res
      },
    }
  }) as Transport
}

function observed(transport: Transport, report: (outcome: RpcOutcome) => void): Transport {
  return onOutcome(transport, {
    ok: () => report('ok'),
    error: (err) => {
      report(rpcOutcome(err))
      return err
    },
  })
}

/**
 * Every error out of the transport has the RPC URLs in it cut to scheme://host[:port] before any caller
 * sees it: viem quotes the full URL (with the provider's API key) in its messages, and the caller may put
 * the error in a job result or a log line. Redacting here, at the one place RPC errors come from, keeps
 * the key out of everything built on top (viem's action errors quote the transport error's text).
 */
export function redacting(transport: Transport): Transport {
  return onOutcome(transport, { error: redactError })
}
