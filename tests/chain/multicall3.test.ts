import { afterAll, beforeAll, beforeEach, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { type Address, encodeFunctionData, type Hex, multicall3Abi, parseEther, parseTransaction, recoverTransactionAddress } from 'viem'
import { deployMulticall3 } from '../../src/server/chain/deployMulticall3'
import { detectDevChain, devChainFromClientVersion } from '../../src/server/chain/devChain'
import {
  MULTICALL3_ADDRESS,
  MULTICALL3_DEPLOYER,
  MULTICALL3_DEPLOYER_FUNDING_WEI,
  MULTICALL3_RUNTIME_BYTECODE,
  MULTICALL3_SIGNED_DEPLOYMENT_TX,
} from '../../src/server/chain/multicall3'
import { createLogger } from '../../src/server/log'
import { type Anvil, freePort, startAnvil } from '../helpers/anvil'
import { createChainTestApp } from '../helpers/chainApp'
import { compileTestContracts, deployContract } from '../helpers/contracts'
import { createTestDatabase, type TestDatabase } from '../helpers/db'
import { type RpcProxy, startRpcProxy } from '../helpers/rpcProxy'

setDefaultTimeout(60_000)

const log = createLogger({ level: 'silent' })
const GETH = 'Geth/v1.14.11-stable-f3c696fa/linux-amd64/go1.23.2'
const GAS_PRICE = 100_000_000_000n

let anvil: Anvil
let db: TestDatabase
let app: ReturnType<typeof createChainTestApp>
let gethProxy: RpcProxy
let gethApp: ReturnType<typeof createChainTestApp>
let freshSnapshot: Hex
const apps: { close(): Promise<void> }[] = []

function newApp(url: string) {
  const a = createChainTestApp(db.url, url)
  apps.push(a)
  return a
}

beforeAll(async () => {
  ;[anvil, db] = await Promise.all([startAnvil(), createTestDatabase('chain_mc3')])
  app = newApp(anvil.url)
  // A production-looking node: answers web3_clientVersion as geth does and refuses anvil_*/hardhat_*/evm_*.
  gethProxy = startRpcProxy(anvil.url, { clientVersion: GETH, refuse: /^(anvil|hardhat|evm)_/ })
  gethApp = newApp(gethProxy.url)
  freshSnapshot = await anvil.client.snapshot()
})

afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()))
  await gethProxy?.stop()
  await anvil?.stop()
  await db?.drop()
})

/** Back to the chain as it was at start (no Multicall3, deployer nonce 0 and no balance). */
async function resetChain() {
  await anvil.client.revert({ id: freshSnapshot })
  freshSnapshot = await anvil.client.snapshot()
}

const code = () => anvil.client.getCode({ address: MULTICALL3_ADDRESS })

describe('the reference data', () => {
  test('the signed transaction is a pre-EIP-155 nonce-0 deployment from the deployer, funded by exactly gasLimit × gasPrice', async () => {
    const tx = parseTransaction(MULTICALL3_SIGNED_DEPLOYMENT_TX)
    expect(tx.chainId).toBeUndefined()
    expect(tx.nonce ?? 0).toBe(0)
    expect(tx.to ?? null).toBeNull()
    expect(tx.gas! * tx.gasPrice!).toBe(MULTICALL3_DEPLOYER_FUNDING_WEI)
    expect(MULTICALL3_DEPLOYER_FUNDING_WEI).toBe(parseEther('0.1'))
    expect(await recoverTransactionAddress({ serializedTransaction: MULTICALL3_SIGNED_DEPLOYMENT_TX as never })).toBe(MULTICALL3_DEPLOYER)
  })
})

describe('dev chain detection', () => {
  test('classifies client versions', () => {
    expect(devChainFromClientVersion('anvil/v1.7.1')?.setCodeMethod).toBe('anvil_setCode')
    expect(devChainFromClientVersion('HardhatNetwork/2.22.17/@nomicfoundation/edr/0.6.5')?.setCodeMethod).toBe('hardhat_setCode')
    expect(devChainFromClientVersion(GETH)).toBeNull()
    expect(devChainFromClientVersion('Nethermind/v1.29.0')).toBeNull()
    expect(devChainFromClientVersion('')).toBeNull()
  })

  test('asks the node: anvil is a dev chain, the same chain behind a geth-like proxy is not', async () => {
    const direct = await detectDevChain(app.chain.publicClient)
    expect(direct.devChain?.kind).toBe('anvil')
    expect(direct.clientVersion).toStartWith('anvil/')
    const proxied = await detectDevChain(gethApp.chain.publicClient)
    expect(proxied.devChain).toBeNull()
    expect(proxied.clientVersion).toBe(GETH)
  })

  test('an unreachable node is an error, not "not a dev chain"', async () => {
    const dead = newApp(`http://127.0.0.1:${await freePort()}`)
    await expect(detectDevChain(dead.chain.publicClient)).rejects.toThrow()
  })
})

describe('deployMulticall3 on a fresh chain', () => {
  beforeAll(resetChain)

  test('funds only the missing part, deploys at the canonical address, and multicall works through it', async () => {
    expect(await code()).toBeUndefined()
    // The deployer already holds 0.03 ETH: exactly 0.07 ETH must be sent, and nothing more.
    const preFunded = parseEther('0.03')
    await anvil.client.setBalance({ address: MULTICALL3_DEPLOYER, value: preFunded })
    const serverWallet = app.chain.account!.address
    const walletBefore = await anvil.client.getBalance({ address: serverWallet })

    const res = await deployMulticall3(app, { log })
    expect(res.action).toBe('deployed')
    if (res.action !== 'deployed') throw new Error('unreachable')
    expect(res.fundedWei).toBe((MULTICALL3_DEPLOYER_FUNDING_WEI - preFunded).toString())

    const receipt = await anvil.client.getTransactionReceipt({ hash: res.txHash })
    expect(receipt.status).toBe('success')
    expect(receipt.contractAddress?.toLowerCase()).toBe(MULTICALL3_ADDRESS.toLowerCase())
    expect(receipt.from.toLowerCase()).toBe(MULTICALL3_DEPLOYER.toLowerCase())
    expect(await code()).toBe(MULTICALL3_RUNTIME_BYTECODE)
    // The deployer held exactly 0.1 ETH when the deployment ran: what is left is 0.1 ETH minus the gas it paid.
    expect(await anvil.client.getBalance({ address: MULTICALL3_DEPLOYER })).toBe(MULTICALL3_DEPLOYER_FUNDING_WEI - receipt.gasUsed * GAS_PRICE)
    // The server wallet paid exactly the missing part plus its own gas.
    const fundTx = await findFundingTx(serverWallet, receipt.blockNumber)
    expect(fundTx.value).toBe(MULTICALL3_DEPLOYER_FUNDING_WEI - preFunded)
    const fundReceipt = await anvil.client.getTransactionReceipt({ hash: fundTx.hash })
    expect(await anvil.client.getBalance({ address: serverWallet })).toBe(
      walletBefore - fundTx.value - fundReceipt.gasUsed * fundReceipt.effectiveGasPrice,
    )

    // viem's multicall through the canonical address.
    const accounts = await anvil.client.getAddresses()
    const token = await deployContract(anvil.client, accounts[0]!, 'TestToken', ['T', 'T'])
    const { abi } = compileTestContracts().TestToken!
    await anvil.client.waitForTransactionReceipt({
      hash: await anvil.client.writeContract({ address: token, abi, functionName: 'mint', args: [accounts[1]!, 1234n], account: accounts[0]!, chain: null }),
    })
    const [bal1, bal2, supply] = await anvil.client.multicall({
      multicallAddress: MULTICALL3_ADDRESS,
      allowFailure: false,
      contracts: [
        { address: token, abi, functionName: 'balanceOf', args: [accounts[1]!] },
        { address: token, abi, functionName: 'balanceOf', args: [accounts[2]!] },
        { address: token, abi, functionName: 'totalSupply' },
      ],
    })
    expect([bal1, bal2, supply]).toEqual([1234n, 0n, 1234n])
    // aggregate3 directly: one call allowed to fail fails, the other succeeds.
    const { result: raw } = await anvil.client.simulateContract({
      address: MULTICALL3_ADDRESS,
      abi: multicall3Abi,
      functionName: 'aggregate3',
      args: [
        [
          { target: token, allowFailure: false, callData: encodeFunctionData({ abi, functionName: 'totalSupply' }) },
          { target: token, allowFailure: true, callData: '0xdeadbeef' },
        ],
      ],
    })
    const result = raw as unknown as readonly { success: boolean; returnData: Hex }[]
    expect(result[0]!.success).toBe(true)
    expect(BigInt(result[0]!.returnData)).toBe(1234n)
    expect(result[1]!.success).toBe(false)
  })

  test('a second run is a cheap no-op: alreadyDeployed, nothing sent', async () => {
    const blockBefore = await anvil.client.getBlockNumber({ cacheTime: 0 })
    const callsBefore = gethProxy.calls.length
    expect(await deployMulticall3(gethApp, { log })).toEqual({ action: 'alreadyDeployed' })
    const calls = gethProxy.calls.slice(callsBefore).map((c) => c.method)
    expect(calls.filter((m) => m !== 'eth_chainId')).toEqual(['eth_getCode'])
    expect(await anvil.client.getBlockNumber({ cacheTime: 0 })).toBe(blockBefore)
  })

  test('forceRedeploy on anvil resets the code with anvil_setCode', async () => {
    await anvil.client.setCode({ address: MULTICALL3_ADDRESS, bytecode: '0x60006000fd' })
    expect(await deployMulticall3(app, { log })).toEqual({ action: 'alreadyDeployed' })
    expect(await code()).toBe('0x60006000fd')
    expect(await deployMulticall3(app, { log, forceRedeploy: true })).toEqual({
      action: 'redeployed',
      reason: 'forceRedeploy',
      method: 'anvil_setCode',
    })
    expect(await code()).toBe(MULTICALL3_RUNTIME_BYTECODE)
  })

  test('burned nonce: code gone but deployer nonce used → redeployed with setCode on a dev chain', async () => {
    await anvil.client.setCode({ address: MULTICALL3_ADDRESS, bytecode: '0x' })
    expect(await code()).toBeUndefined()
    expect(await anvil.client.getTransactionCount({ address: MULTICALL3_DEPLOYER })).toBe(1)
    expect(await deployMulticall3(app, { log })).toEqual({ action: 'redeployed', reason: 'deployerNonceUsed', method: 'anvil_setCode' })
    expect(await code()).toBe(MULTICALL3_RUNTIME_BYTECODE)
  })

  test('non-dev chain: forceRedeploy fails with a clear error and changes nothing', async () => {
    const before = gethProxy.calls.length
    await expect(deployMulticall3(gethApp, { log, forceRedeploy: true })).rejects.toThrow(
      /forceRedeploy is only possible on a development chain \(anvil or hardhat\).*Geth\/v1\.14\.11/,
    )
    expect(gethProxy.calls.slice(before).some((c) => /setCode/.test(c.method))).toBe(false)
    expect(await code()).toBe(MULTICALL3_RUNTIME_BYTECODE)
  })

  test('non-dev chain: burned nonce without code fails with a clear error', async () => {
    await anvil.client.setCode({ address: MULTICALL3_ADDRESS, bytecode: '0x' })
    const before = gethProxy.calls.length
    await expect(deployMulticall3(gethApp, { log })).rejects.toThrow(/deployer 0x05f32B3cC3888453ff71B01135B34FF8e41263F2 has already used nonce 0/)
    expect(gethProxy.calls.slice(before).map((c) => c.method)).not.toContain('eth_sendRawTransaction')
    expect(await code()).toBeUndefined()
  })
})

describe('deployMulticall3 without dev-chain help', () => {
  beforeEach(resetChain)

  test('the keyless deployment itself works on a non-dev chain', async () => {
    const res = await deployMulticall3(gethApp, { log })
    expect(res.action).toBe('deployed')
    expect(await code()).toBe(MULTICALL3_RUNTIME_BYTECODE)
  })

  test('a deployer nonce burned by someone else before any deployment', async () => {
    await anvil.client.setBalance({ address: MULTICALL3_DEPLOYER, value: parseEther('1') })
    await anvil.client.impersonateAccount({ address: MULTICALL3_DEPLOYER })
    const hash = await anvil.client.sendTransaction({ account: MULTICALL3_DEPLOYER, to: MULTICALL3_DEPLOYER, value: 0n, chain: null })
    await anvil.client.waitForTransactionReceipt({ hash })
    await anvil.client.stopImpersonatingAccount({ address: MULTICALL3_DEPLOYER })
    expect(await anvil.client.getTransactionCount({ address: MULTICALL3_DEPLOYER })).toBe(1)
    await expect(deployMulticall3(gethApp, { log })).rejects.toThrow(/already used nonce 0 on this chain \(nonce is 1\)/)
    expect(await deployMulticall3(app, { log })).toEqual({ action: 'redeployed', reason: 'deployerNonceUsed', method: 'anvil_setCode' })
    expect(await code()).toBe(MULTICALL3_RUNTIME_BYTECODE)
  })

  test('an already fully funded deployer gets nothing more', async () => {
    await anvil.client.setBalance({ address: MULTICALL3_DEPLOYER, value: parseEther('0.25') })
    const res = await deployMulticall3(app, { log })
    expect(res).toMatchObject({ action: 'deployed', fundedWei: '0' })
  })

  test('two servers deploying at once: one deploys, the other finds it deployed, the deployer is funded once', async () => {
    const other = newApp(anvil.url)
    const results = await Promise.all([deployMulticall3(app, { log }), deployMulticall3(other, { log })])
    expect(results.map((r) => r.action).sort()).toEqual(['alreadyDeployed', 'deployed'])
    const deployed = results.find((r) => r.action === 'deployed') as { txHash: Hex }
    const receipt = await anvil.client.getTransactionReceipt({ hash: deployed.txHash })
    expect(await anvil.client.getBalance({ address: MULTICALL3_DEPLOYER })).toBe(MULTICALL3_DEPLOYER_FUNDING_WEI - receipt.gasUsed * GAS_PRICE)
  })

  test('someone else sends the keyless deployment first: the run reports alreadyDeployed', async () => {
    await anvil.client.setBalance({ address: MULTICALL3_DEPLOYER, value: MULTICALL3_DEPLOYER_FUNDING_WEI })
    const held = gethProxy.hold('eth_sendRawTransaction')
    const running = deployMulticall3(gethApp, { log })
    await held.arrived
    // While our run waits inside its send, a third party's copy of the same transaction is mined.
    await anvil.client.waitForTransactionReceipt({
      hash: await anvil.client.sendRawTransaction({ serializedTransaction: MULTICALL3_SIGNED_DEPLOYMENT_TX }),
    })
    held.release()
    expect(await running).toEqual({ action: 'alreadyDeployed' })
    expect(await code()).toBe(MULTICALL3_RUNTIME_BYTECODE)
  })

  test('an unreachable chain fails with a clear error', async () => {
    const port = await freePort()
    const dead = newApp(`http://127.0.0.1:${port}`)
    await expect(deployMulticall3(dead, { log })).rejects.toThrow(`chain RPC at 127.0.0.1:${port} is unreachable (CHAIN_RPC_URL)`)
  })
})

/** The server wallet's transfer to the deployer, searched backwards from the deployment's block. */
async function findFundingTx(from: Address, uptoBlock: bigint) {
  for (let n = uptoBlock; n >= 0n; n--) {
    const block = await anvil.client.getBlock({ blockNumber: n, includeTransactions: true })
    const tx = block.transactions.find((t) => t.from.toLowerCase() === from.toLowerCase() && t.to?.toLowerCase() === MULTICALL3_DEPLOYER.toLowerCase())
    if (tx) return tx
  }
  throw new Error('funding transaction not found')
}
