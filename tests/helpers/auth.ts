import type { LocalAccount } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { gql } from '../http/client'

/** A fresh wallet with its own key, as a user would have. */
export const newWallet = (): LocalAccount => privateKeyToAccount(generatePrivateKey())

export const GENERATE = `mutation ($address: String!) { generateSiweMessage(address: $address) }`
export const AUTHENTICATE = `mutation ($message: String!, $signature: String!) {
  authenticateWithSiwe(message: $message, signature: $signature) { token expiresAt user { id walletAddress isAdmin } }
}`

/** The real sign-in: ask for a message, sign it with the wallet's key, trade it for a session token. */
export async function signIn(url: string, wallet: LocalAccount): Promise<{ token: string; userId: number; isAdmin: boolean }> {
  const gen = await gql(url, GENERATE, { address: wallet.address }, { token: null })
  if (!gen.data?.generateSiweMessage) throw new Error(`generateSiweMessage failed: ${JSON.stringify(gen.errors)}`)
  const message = gen.data.generateSiweMessage as string
  const signature = await wallet.signMessage({ message })
  const auth = await gql(url, AUTHENTICATE, { message, signature }, { token: null })
  const result = auth.data?.authenticateWithSiwe
  if (!result) throw new Error(`authenticateWithSiwe failed: ${JSON.stringify(auth.errors)}`)
  return { token: result.token, userId: result.user.id, isAdmin: result.user.isAdmin }
}
