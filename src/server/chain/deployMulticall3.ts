import { BaseError, type Hex, keccak256, type PublicClient } from 'viem'
import type { Database } from '../db/client'
import type { Logger } from '../log'
import type { ServerApp } from '../serverApp'
import { withAdvisoryLock } from './advisoryLock'
import type { ChainClients } from './clients'
import { detectDevChain } from './devChain'
import { fundOnce } from './funding'
import {
  MULTICALL3_ADDRESS,
  MULTICALL3_DEPLOYER,
  MULTICALL3_DEPLOYER_FUNDING_WEI,
  MULTICALL3_RUNTIME_BYTECODE,
  MULTICALL3_SIGNED_DEPLOYMENT_TX,
} from './multicall3'
import { explainChainError } from './rpcErrors'

export type DeployMulticall3Result =
  | { action: 'alreadyDeployed' }
  | { action: 'deployed'; txHash: Hex; fundedWei: string }
  | { action: 'redeployed'; reason: 'forceRedeploy' | 'deployerNonceUsed'; method: string }

export interface DeployMulticall3Options {
  /** The chain (one of CHAINS); the default chain when unset. */
  chainId?: number
  forceRedeploy?: boolean
  log: Logger
  signal?: AbortSignal
  /** How long to wait for each transaction to be mined. */
  receiptTimeoutMs?: number
  /** The job running this: its funding is that job's step in chain_sends, so a rerun finds it. */
  jobId?: number
}

/**
 * The deployMulticall3 job: makes sure Multicall3 is at its canonical address. Serialised per chain by an
 * advisory lock, so two server instances booting together cannot both top up the deployer (the second waits,
 * then finds the code and returns alreadyDeployed).
 */
export async function deployMulticall3(serverApp: ServerApp, opts: DeployMulticall3Options): Promise<DeployMulticall3Result> {
  const chain = serverApp.chains.get(opts.chainId)
  try {
    const chainId = await chain.getChainId()
    return await withAdvisoryLock(serverApp.dbHandle, `chain.deployMulticall3:${chainId}`, () => ensureMulticall3({ chain, db: serverApp.db, chainId }, opts), {
      signal: opts.signal,
    })
  } catch (err) {
    explainChainError(err, chain.spec)
  }
}

const hasCode = (code: Hex | undefined) => !!code && code !== '0x'

/** What the deployment needs: the chain's clients, and the database where funding transactions are recorded. */
export interface DeployTarget {
  chain: ChainClients
  db: Database
  chainId: number
}

/** The deployment decision itself (see docs/chain-jobs.md). Call it under the lock; `deployMulticall3` does. */
export async function ensureMulticall3(target: DeployTarget, opts: DeployMulticall3Options): Promise<DeployMulticall3Result> {
  const { publicClient } = target.chain
  const { log, signal } = opts
  const force = opts.forceRedeploy === true
  const code = await publicClient.getCode({ address: MULTICALL3_ADDRESS })
  if (hasCode(code) && !force) {
    if (code !== MULTICALL3_RUNTIME_BYTECODE) log.warn({ address: MULTICALL3_ADDRESS }, 'code at the Multicall3 address differs from the canonical runtime code')
    return { action: 'alreadyDeployed' }
  }
  signal?.throwIfAborted()
  const nonce = await publicClient.getTransactionCount({ address: MULTICALL3_DEPLOYER, blockTag: 'latest' })
  if (!force && nonce === 0) return deployKeyless(target, opts)

  // The keyless transaction can only ever create the contract from the deployer's nonce 0, so once that nonce
  // is spent (or a redeploy is forced over existing code) the only way left is to write the code directly,
  // which only development nodes allow.
  const reason = force ? 'forceRedeploy' : 'deployerNonceUsed'
  const { devChain, clientVersion } = await detectDevChain(publicClient)
  if (!devChain) {
    throw new Error(
      force
        ? `deployMulticall3: forceRedeploy is only possible on a development chain (anvil or hardhat), where the code at ${MULTICALL3_ADDRESS} can be reset with anvil_setCode/hardhat_setCode; this node is "${clientVersion}". On a live chain Multicall3 cannot be redeployed: its keyless deployment only works from the deployer's nonce 0 (now ${nonce}).`
        : `deployMulticall3: Multicall3 is not deployed at ${MULTICALL3_ADDRESS} and cannot be deployed with the keyless transaction: its deployer ${MULTICALL3_DEPLOYER} has already used nonce 0 on this chain (nonce is ${nonce}). This node ("${clientVersion}") is not a development chain whose code could be set; deploy Multicall3 another way.`,
    )
  }
  log.info({ reason, method: devChain.setCodeMethod, clientVersion }, 'setting the Multicall3 runtime code on a dev chain')
  await publicClient.request({
    method: devChain.setCodeMethod,
    params: [MULTICALL3_ADDRESS, MULTICALL3_RUNTIME_BYTECODE],
  } as never)
  await verifyCode(publicClient)
  return { action: 'redeployed', reason, method: devChain.setCodeMethod }
}

/** The funding of the keyless deployer: the step key of its send in chain_sends. */
export const DEPLOYER_FUNDING_PURPOSE = 'multicall3DeployerFunding'

/**
 * Nonce 0 unused: fund the deployer with exactly the missing part of gasLimit × gasPrice (its balance
 * including pending transactions counts, and a funding transaction already in flight is waited for or
 * replaced, never duplicated: funding.ts), send the pre-signed transaction, verify.
 */
async function deployKeyless(target: DeployTarget, opts: DeployMulticall3Options): Promise<DeployMulticall3Result> {
  const { publicClient } = target.chain
  const { log, signal } = opts
  const receiptOpts = { timeout: opts.receiptTimeoutMs ?? 120_000, pollingInterval: 1000 }
  // The deployment itself already in the mempool (a run that died after sending it): no funding, just wait.
  const pendingNonce = await publicClient.getTransactionCount({ address: MULTICALL3_DEPLOYER, blockTag: 'pending' })
  let funded: bigint = 0n
  if (pendingNonce === 0) {
    const res = await fundOnce({
      db: target.db,
      chain: target.chain,
      chainId: target.chainId,
      purpose: DEPLOYER_FUNDING_PURPOSE,
      to: MULTICALL3_DEPLOYER,
      target: MULTICALL3_DEPLOYER_FUNDING_WEI,
      log,
      signal,
      jobId: opts.jobId,
      attemptTimeoutMs: opts.receiptTimeoutMs ?? 60_000,
    })
    funded = res.fundedWei
  }
  signal?.throwIfAborted()
  // The hash is fixed by the signed bytes, so a transaction already in the mempool (an earlier run that died
  // after sending) is simply waited for instead of failing this run.
  const txHash = keccak256(MULTICALL3_SIGNED_DEPLOYMENT_TX)
  try {
    await publicClient.sendRawTransaction({ serializedTransaction: MULTICALL3_SIGNED_DEPLOYMENT_TX })
  } catch (err) {
    const msg = String((err as Error)?.message ?? err)
    // Someone outside this server may have sent it first (on a public chain anyone can): then it is done.
    if (hasCode(await publicClient.getCode({ address: MULTICALL3_ADDRESS }))) return { action: 'alreadyDeployed' }
    if (!/already known|known transaction|already imported/i.test(msg)) {
      throw new Error(
        `deployMulticall3: the node rejected the pre-signed Multicall3 deployment (a pre-EIP-155 transaction at a 100 gwei gas price; some nodes refuse unprotected transactions, e.g. geth without --rpc.allow-unprotected-txs): ${err instanceof BaseError ? err.details || err.shortMessage : msg}`,
        { cause: err },
      )
    }
  }
  log.info({ txHash }, 'Multicall3 deployment sent')
  const receipt = await publicClient.waitForTransactionReceipt({ hash: txHash, ...receiptOpts })
  if (receipt.status !== 'success') throw new Error(`deployMulticall3: the deployment transaction ${txHash} reverted`)
  await verifyCode(publicClient)
  return { action: 'deployed', txHash, fundedWei: funded.toString() }
}

async function verifyCode(publicClient: PublicClient): Promise<void> {
  const code = await publicClient.getCode({ address: MULTICALL3_ADDRESS })
  if (code?.toLowerCase() !== MULTICALL3_RUNTIME_BYTECODE.toLowerCase()) {
    throw new Error(`deployMulticall3: after deployment the code at ${MULTICALL3_ADDRESS} is not the canonical Multicall3 runtime code`)
  }
}
