import { z } from 'zod'

/**
 * The chains this server talks to, from CHAINS (JSON, several chains) or CHAIN_RPC_URL (the one-chain
 * shorthand). Parsed by config.ts, the only module that reads the environment; this module owns the
 * shape of a chain entry and how the two forms become one list.
 */

/** One chain as the rest of the server sees it: every per-chain setting resolved. */
export interface ChainSpec {
  /**
   * The chain id, known from CHAINS or CHAIN_ID. Undefined only for CHAIN_RPC_URL without CHAIN_ID: the
   * id is then asked from the node on first use, and the chain's built-in jobs use the untagged names.
   */
  id: number | undefined
  /** One or more endpoints, tried in order (viem's fallback transport); never logged unredacted. */
  rpcUrls: string[]
  confirmations: number
  startBlock: number | undefined
  maxBlockRange: number
  /**
   * What the chain's built-in jobs append to their tag (`system:watchChain:8453`): `:<id>` for a chain of
   * CHAINS; empty for the CHAIN_RPC_URL shorthand, whose jobs keep the plain tags they had before CHAINS
   * existed, so an upgrade adopts its existing schedule instead of adding a second one.
   */
  tagSuffix: string
}

/** The globals a CHAINS entry falls back to. */
export interface ChainDefaults {
  CHAIN_CONFIRMATIONS: number
  CHAIN_START_BLOCK?: number
  CHAIN_MAX_BLOCK_RANGE: number
}

/** Ids are JSON numbers, so at most 2^53 − 1; EIP-2294 bounds chain ids far below that. */
const MAX_CHAIN_ID = Number.MAX_SAFE_INTEGER
/** Enough for any real deployment; the bound keeps a mistaken paste from building thousands of clients. */
const MAX_CHAINS = 32
const MAX_URLS_PER_CHAIN = 8
/** The variable's size cap, checked before JSON.parse. */
const MAX_CHAINS_JSON = 64 * 1024

/** A CHAINS entry as written: only `id` and `rpcUrls` are required. */
export function chainEntrySchema(rpcUrl: z.ZodType<string>) {
  const count = (min: number, max: number) => z.number().int().min(min).max(max)
  return z
    .object({
      id: count(1, MAX_CHAIN_ID),
      rpcUrls: z.array(rpcUrl).min(1).max(MAX_URLS_PER_CHAIN),
      confirmations: count(0, 10_000).optional(),
      startBlock: count(0, MAX_CHAIN_ID).optional(),
      maxBlockRange: count(1, 100_000).optional(),
    })
    .strict()
}

export type ChainEntry = z.output<ReturnType<typeof chainEntrySchema>>

/** CHAINS: a JSON array of chain entries with distinct ids. */
export function chainsVarSchema(rpcUrl: z.ZodType<string>) {
  return z
    .string()
    .max(MAX_CHAINS_JSON, { message: `expected at most ${MAX_CHAINS_JSON} characters of JSON` })
    .transform((v, ctx) => {
      try {
        return JSON.parse(v) as unknown
      } catch {
        // The parser's message quotes the text around the error, which may be an API key: not repeated.
        ctx.addIssue({ code: 'custom', message: 'expected JSON: [{"id": 8453, "rpcUrls": ["https://…"]}, …]' })
        return z.NEVER
      }
    })
    .pipe(
      z
        .array(chainEntrySchema(rpcUrl))
        .min(1)
        .max(MAX_CHAINS)
        .superRefine((chains, ctx) => {
          const seen = new Set<number>()
          for (const [i, c] of chains.entries()) {
            if (seen.has(c.id)) ctx.addIssue({ code: 'custom', path: [i, 'id'], message: `chain id ${c.id} is listed twice` })
            seen.add(c.id)
          }
        }),
    )
}

/** The chain list: every CHAINS entry with its defaults filled in, or the one chain of CHAIN_RPC_URL. */
export function resolveChains(d: ChainDefaults & { CHAINS?: ChainEntry[]; CHAIN_RPC_URL?: string; CHAIN_ID?: number }): ChainSpec[] {
  const defaults = { confirmations: d.CHAIN_CONFIRMATIONS, startBlock: d.CHAIN_START_BLOCK, maxBlockRange: d.CHAIN_MAX_BLOCK_RANGE }
  if (d.CHAINS) return d.CHAINS.map((c) => ({ ...defaults, ...c, tagSuffix: `:${c.id}` }))
  if (!d.CHAIN_RPC_URL) throw new Error('resolveChains: neither CHAINS nor CHAIN_RPC_URL is set')
  return [{ ...defaults, id: d.CHAIN_ID, rpcUrls: [d.CHAIN_RPC_URL], tagSuffix: '' }]
}
