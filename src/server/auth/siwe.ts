import { sql } from 'drizzle-orm'
import { getAddress, isAddress, isAddressEqual, type PublicClient } from 'viem'
import { recoverMessageAddress } from 'viem'
import { createSiweMessage, generateSiweNonce, parseSiweMessage, validateSiweMessage } from 'viem/siwe'
import type { Database } from '../db/client'
import { authNonces, users } from '../db/schema'
import { AccessError } from './errors'

/** A SIWE message we issue is a few hundred characters; anything far longer is not one of ours. */
const MAX_MESSAGE_CHARS = 4096
/** 65 bytes for a wallet key; contract wallets (EIP-1271, EIP-6492 wrapped) may send more, within reason. */
const MAX_SIGNATURE_CHARS = 16_384
/** Unused nonces an address may hold at once: a new one past this drops the oldest. */
const NONCES_PER_ADDRESS = 5
/**
 * Unused, unexpired nonces across all addresses. generateSiweMessage is open to anonymous callers, so
 * this bounds the table; past it, the oldest nonce is dropped for each new one.
 */
const MAX_OUTSTANDING_NONCES = 100_000

const refused = (message: string, field?: string) => new AccessError('UNAUTHENTICATED', `sign-in refused: ${message}`, field)

export interface SiweDeps {
  db: Database
  /** The server's public URL (BASE_URL, or the listening URL outside production). */
  baseUrl: () => URL
  chainId: () => Promise<number>
  publicClient: () => PublicClient
  nonceTtlMs: number
}

/**
 * Sign-In with Ethereum (EIP-4361) with viem's siwe utilities. The server issues the message (so domain,
 * uri, chain id and expiry are its own) with a nonce it stores; a sign-in must present that message,
 * unaltered in what we check, signed by its address, before the nonce expires, and consumes the nonce.
 */
export function createSiwe(deps: SiweDeps) {
  return {
    async generateMessage(address: string, now = new Date()): Promise<string> {
      if (typeof address !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(address))
        throw new AccessError('BAD_USER_INPUT', 'expected a 0x-prefixed 20-byte address', 'address')
      // strict: a mixed-case address must carry a valid checksum (a typo is caught, not signed).
      const hex = address.slice(2)
      if (!isAddress(address) && hex !== hex.toUpperCase())
        throw new AccessError('BAD_USER_INPUT', 'the address has an invalid EIP-55 checksum', 'address')
      const checksummed = getAddress(address)
      const lower = checksummed.toLowerCase()
      const base = deps.baseUrl()
      const chainId = await deps.chainId()
      const nonce = generateSiweNonce()
      const expiresAt = new Date(now.getTime() + deps.nonceTtlMs)
      await deps.db.transaction(async (tx) => {
        // Expired nonces are swept here, a bounded batch at a time, so the table never grows past its cap.
        await tx.execute(sql`DELETE FROM auth_nonces WHERE nonce IN (SELECT nonce FROM auth_nonces WHERE expires_at <= now() LIMIT 1000)`)
        const [{ n }] = (await tx.execute(
          sql`SELECT count(*)::int AS n FROM (SELECT 1 FROM auth_nonces LIMIT ${MAX_OUTSTANDING_NONCES}) AS o`,
        )) as unknown as [{ n: number }]
        // Full (a flood of anonymous requests): the oldest nonce makes room, rather than every sign-in being
        // refused until the flood's nonces expire. A real user signs within seconds of asking.
        if (n >= MAX_OUTSTANDING_NONCES)
          await tx.execute(sql`DELETE FROM auth_nonces WHERE nonce IN (SELECT nonce FROM auth_nonces ORDER BY expires_at LIMIT ${n - MAX_OUTSTANDING_NONCES + 1})`)
        await tx.insert(authNonces).values({ nonce, address: lower, expiresAt })
        await tx.execute(sql`
          DELETE FROM auth_nonces WHERE nonce IN (
            SELECT nonce FROM auth_nonces WHERE address = ${lower} ORDER BY created_at DESC, nonce OFFSET ${NONCES_PER_ADDRESS})`)
      })
      return createSiweMessage({
        address: checksummed,
        chainId,
        domain: base.host,
        uri: base.origin,
        version: '1',
        nonce,
        issuedAt: now,
        expirationTime: expiresAt,
        statement: `Sign in to ${base.host}.`,
      })
    },

    /** Checks everything, then consumes the nonce and returns the user (created at first sign-in). */
    async authenticate(message: string, signature: string, now = new Date()): Promise<{ id: number; walletAddress: string }> {
      if (typeof message !== 'string' || message.length === 0 || message.length > MAX_MESSAGE_CHARS)
        throw new AccessError('BAD_USER_INPUT', `expected the SIWE message as issued (at most ${MAX_MESSAGE_CHARS} characters)`, 'message')
      if (typeof signature !== 'string' || signature.length > MAX_SIGNATURE_CHARS || !/^0x([0-9a-fA-F]{2})+$/.test(signature))
        throw new AccessError('BAD_USER_INPUT', 'expected a 0x-prefixed hex signature', 'signature')
      const parsed = parseSiweMessage(message)
      const base = deps.baseUrl()
      const { address, nonce } = parsed
      if (!address || !nonce || !parsed.expirationTime || !parsed.issuedAt || parsed.chainId === undefined)
        throw refused('the message is not a complete SIWE message', 'message')
      if (parsed.domain !== base.host) throw refused(`the message is for domain ${JSON.stringify(String(parsed.domain).slice(0, 100))}, not ${base.host}`, 'message')
      if (parsed.uri !== base.origin) throw refused(`the message is for uri ${JSON.stringify(String(parsed.uri).slice(0, 200))}, not ${base.origin}`, 'message')
      const chainId = await deps.chainId()
      if (parsed.chainId !== chainId) throw refused(`the message is for chain ${parsed.chainId}, this server signs in on chain ${chainId}`, 'message')
      // Expiry, not-before, version and nonce syntax; domain was compared above.
      if (!validateSiweMessage({ message: parsed, domain: base.host, time: now }))
        throw refused('the message has expired, is not yet valid, or is malformed', 'message')
      const lower = address.toLowerCase()
      // Looked up before the signature is verified: a made-up message costs one indexed read, never an RPC call.
      const known = await deps.db.execute(sql`SELECT 1 FROM auth_nonces WHERE nonce = ${nonce} AND address = ${lower} AND expires_at > now()`)
      if (known.length === 0) throw refused('unknown, already used or expired nonce: ask for a new message', 'message')
      if (!(await signedBy(deps, message, signature as `0x${string}`, address, parsed))) {
        // A failed check uses the nonce up: one message buys one signature check (one chain call at most).
        await deps.db.execute(sql`DELETE FROM auth_nonces WHERE nonce = ${nonce} AND address = ${lower}`)
        throw refused('the signature does not match the message and address: ask for a new message', 'signature')
      }
      // Single use: of two concurrent sign-ins with one nonce, only the one whose DELETE finds the row wins.
      const consumed = await deps.db.execute(sql`DELETE FROM auth_nonces WHERE nonce = ${nonce} AND address = ${lower} RETURNING 1`)
      if (consumed.length === 0) throw refused('unknown, already used or expired nonce: ask for a new message', 'message')
      const [user] = await deps.db
        .insert(users)
        .values({ walletAddress: lower })
        .onConflictDoUpdate({ target: users.walletAddress, set: { walletAddress: lower } })
        .returning({ id: users.id, walletAddress: users.walletAddress })
      return user!
    },
  }
}

/**
 * A wallet key's signature is checked locally (no RPC). Anything else may be a contract wallet: EIP-1271
 * (or EIP-6492 for one not yet deployed), which viem verifies through the chain.
 */
async function signedBy(
  deps: SiweDeps,
  message: string,
  signature: `0x${string}`,
  address: `0x${string}`,
  parsed: ReturnType<typeof parseSiweMessage>,
): Promise<boolean> {
  try {
    if (isAddressEqual(await recoverMessageAddress({ message, signature }), address)) return true
  } catch {
    // Not a 65-byte ECDSA signature: only a contract wallet can vouch for it.
  }
  try {
    return await deps.publicClient().verifySiweMessage({ message, signature, address, domain: parsed.domain, nonce: parsed.nonce })
  } catch {
    throw new AccessError('UNAUTHENTICATED', 'sign-in refused: the signature could not be verified on chain (contract wallet); try again later', 'signature')
  }
}

export type Siwe = ReturnType<typeof createSiwe>
