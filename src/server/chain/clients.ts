import { createPublicClient, createWalletClient, http, type PublicClient, type Transport, type WalletClient } from 'viem'
import { type PrivateKeyAccount, privateKeyToAccount } from 'viem/accounts'
import type { Config } from '../config'
import { redactError } from '../redact'

export interface ChainClients {
  publicClient: PublicClient
  /** Undefined only in production without SERVER_WALLET_PRIVATE_KEY. */
  walletClient: WalletClient | undefined
  account: PrivateKeyAccount | undefined
  /** CHAIN_ID when configured, otherwise asked from the node once and cached. */
  getChainId(): Promise<number>
}

/** Builds the viem clients. Nothing connects here: an unreachable chain fails the jobs that use it, not the boot. */
export function createChainClients(config: Config): ChainClients {
  const transport = redacting(http(config.CHAIN_RPC_URL, { retryCount: 1, timeout: 15_000 }))
  const publicClient = createPublicClient({ transport }) as PublicClient
  const account = config.SERVER_WALLET_PRIVATE_KEY ? privateKeyToAccount(config.SERVER_WALLET_PRIVATE_KEY) : undefined
  const walletClient = account ? createWalletClient({ account, transport }) : undefined
  let chainId: Promise<number> | undefined = config.CHAIN_ID ? Promise.resolve(config.CHAIN_ID) : undefined
  return {
    publicClient,
    walletClient,
    account,
    getChainId() {
      chainId ??= publicClient.getChainId().catch((err) => {
        chainId = undefined
        throw err
      })
      return chainId
    },
  }
}

/**
 * Every error out of the transport has the RPC URLs in it cut to scheme://host[:port] before any caller
 * sees it: viem quotes the full URL (with the provider's API key) in its messages, and the caller may put
 * the error in a job result or a log line. Redacting here, at the one place RPC errors come from, keeps
 * the key out of everything built on top (viem's action errors quote the transport error's text).
 */
export function redacting(transport: Transport): Transport {
  return ((opts) => {
    const t = transport(opts)
    return {
      ...t,
      async request(args, options) {
        try {
          return await t.request(args, options)
        } catch (err) {
          throw redactError(err)
        }
      },
    }
  }) as Transport
}
