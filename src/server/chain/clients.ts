import { createPublicClient, createWalletClient, http, type PublicClient, type WalletClient } from 'viem'
import { type PrivateKeyAccount, privateKeyToAccount } from 'viem/accounts'
import type { Config } from '../config'

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
  const transport = http(config.CHAIN_RPC_URL, { retryCount: 1, timeout: 15_000 })
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
