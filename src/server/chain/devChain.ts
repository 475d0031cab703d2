import type { PublicClient } from 'viem'
import { isRpcError } from './rpcErrors'

export interface DevChain {
  kind: 'anvil' | 'hardhat'
  /** The node's RPC method that replaces an account's code. */
  setCodeMethod: 'anvil_setCode' | 'hardhat_setCode'
  clientVersion: string
}

/** Classifies a web3_clientVersion string; anything other than anvil or hardhat is not a dev chain. */
export function devChainFromClientVersion(clientVersion: string): DevChain | null {
  const v = clientVersion.trim().toLowerCase()
  if (v.startsWith('anvil/')) return { kind: 'anvil', setCodeMethod: 'anvil_setCode', clientVersion }
  // Hardhat Network answers "HardhatNetwork/<version>/…"; its engine EDR, used bare, answers "edr/<version>/revm/…".
  if (v.startsWith('hardhatnetwork/') || v.startsWith('edr/')) return { kind: 'hardhat', setCodeMethod: 'hardhat_setCode', clientVersion }
  return null
}

/**
 * Asks the node what it is (web3_clientVersion) instead of guessing from the chain id: 31337 is also used by
 * other clients, and a fork of mainnet under anvil keeps chain id 1 while still allowing setCode.
 * Returns the client version too, so an error can say which client refused. A node that does not implement
 * web3_clientVersion is not a dev chain; a node that cannot be reached is an error, not "not a dev chain".
 */
export async function detectDevChain(publicClient: PublicClient): Promise<{ devChain: DevChain | null; clientVersion: string }> {
  let clientVersion: string
  try {
    clientVersion = String(await publicClient.request({ method: 'web3_clientVersion' }))
  } catch (err) {
    if (isRpcError(err)) return { devChain: null, clientVersion: 'unknown (web3_clientVersion not supported)' }
    throw err
  }
  return { devChain: devChainFromClientVersion(clientVersion), clientVersion }
}
