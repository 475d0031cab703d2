import { getAddress, type Hex, isHex, parseTransaction } from 'viem'
import data from './multicall3.json'

/**
 * The canonical Multicall3 deployment (mds1/multicall3): a keyless, pre-signed, pre-EIP-155 transaction
 * that any chain accepts, sent from a deployer whose nonce 0 creates the contract at MULTICALL3_ADDRESS.
 * Copied from the shared reference data into multicall3.json so the repository is self-contained.
 */
export const MULTICALL3_ADDRESS = getAddress(data.address)
export const MULTICALL3_DEPLOYER = getAddress(data.deployer)
/** gasLimit × gasPrice of the pre-signed transaction: what the deployer must hold before it is sent. */
export const MULTICALL3_DEPLOYER_FUNDING_WEI = BigInt(data.deployerFundingWei)
export const MULTICALL3_SIGNED_DEPLOYMENT_TX = hex(data.signedDeploymentTx, 'signedDeploymentTx')
export const MULTICALL3_RUNTIME_BYTECODE = hex(data.runtimeBytecode, 'runtimeBytecode')

function hex(v: string, name: string): Hex {
  if (!isHex(v)) throw new Error(`multicall3.json: ${name} is not hex`)
  return v
}

// The funding amount is exactly what the signed transaction can spend; check that once at load, so an
// edited JSON file cannot make the job underfund (a stuck deployment) or overfund the deployer.
const parsed = parseTransaction(MULTICALL3_SIGNED_DEPLOYMENT_TX)
if (parsed.gas === undefined || parsed.gasPrice === undefined || parsed.gas * parsed.gasPrice !== MULTICALL3_DEPLOYER_FUNDING_WEI) {
  throw new Error('multicall3.json: deployerFundingWei does not equal gasLimit × gasPrice of the signed transaction')
}

