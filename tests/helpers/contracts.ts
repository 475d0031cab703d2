import { readFileSync } from 'node:fs'
import solc from 'solc'
import type { Abi, Address, Hex } from 'viem'
import type { AnvilClient } from './anvil'

const SOURCE = new URL('../contracts/TestToken.sol', import.meta.url).pathname

export interface Artifact {
  abi: Abi
  bytecode: Hex
}

let compiled: Record<string, Artifact> | null = null

/** Compiles tests/contracts/TestToken.sol with solc-js (the `solc` devDependency), once per test process. */
export function compileTestContracts(): Record<string, Artifact> {
  if (compiled) return compiled
  const input = {
    language: 'Solidity',
    sources: { 'TestToken.sol': { content: readFileSync(SOURCE, 'utf8') } },
    settings: {
      // cancun: understood by every anvil/hardhat version the tests may meet.
      evmVersion: 'cancun',
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  }
  const output = JSON.parse(solc.compile(JSON.stringify(input)))
  const errors = (output.errors ?? []).filter((e: { severity: string }) => e.severity === 'error')
  if (errors.length > 0) throw new Error(`solc: ${errors.map((e: { formattedMessage: string }) => e.formattedMessage).join('\n')}`)
  const out: Record<string, Artifact> = {}
  for (const [name, c] of Object.entries(output.contracts['TestToken.sol'] as Record<string, any>)) {
    out[name] = { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}` }
  }
  compiled = out
  return out
}

/** Deploys a compiled contract from `from` (an anvil dev account) and returns its address. */
export async function deployContract(client: AnvilClient, from: Address, name: 'TestToken' | 'TestNft' | 'TestWallet', args: unknown[] = []): Promise<Address> {
  const { abi, bytecode } = compileTestContracts()[name]!
  const hash = await client.deployContract({ abi, bytecode, args, account: from, chain: null })
  const receipt = await client.waitForTransactionReceipt({ hash, pollingInterval: 50 })
  if (!receipt.contractAddress) throw new Error(`${name} deployment failed`)
  return receipt.contractAddress
}
