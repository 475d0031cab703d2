import { errors, jwtVerify, SignJWT } from 'jose'

/** What a session token says: who signed in. Whether they are an admin is decided per request (callers.ts). */
export interface Session {
  userId: number
  address: `0x${string}`
  expiresAt: Date
}

const ALG = 'HS256'
const ADDRESS = /^0x[0-9a-f]{40}$/

/**
 * Session JWTs (HS256, jose). The issuer and audience are the server's origin, so a token signed for
 * another deployment with the same secret is still refused. Tokens are stateless: they end at expiry.
 */
export function createSessions(opts: { secret: Uint8Array; ttlMs: number; issuer: () => string }) {
  return {
    async issue(user: { id: number; walletAddress: string }, now = new Date()): Promise<{ token: string; expiresAt: Date }> {
      const expiresAt = new Date(now.getTime() + opts.ttlMs)
      const token = await new SignJWT({ addr: user.walletAddress })
        .setProtectedHeader({ alg: ALG, typ: 'JWT' })
        .setSubject(String(user.id))
        .setIssuer(opts.issuer())
        .setAudience(opts.issuer())
        .setIssuedAt(Math.floor(now.getTime() / 1000))
        .setExpirationTime(Math.floor(expiresAt.getTime() / 1000))
        .sign(opts.secret)
      return { token, expiresAt }
    },

    /** The session a token carries, or why it is refused (a message safe to show the caller). */
    async verify(token: string): Promise<Session | string> {
      try {
        const { payload } = await jwtVerify(token, opts.secret, { algorithms: [ALG], issuer: opts.issuer(), audience: opts.issuer() })
        const userId = Number(payload.sub)
        const addr = payload.addr
        if (!Number.isSafeInteger(userId) || userId < 1 || typeof addr !== 'string' || !ADDRESS.test(addr) || payload.exp === undefined)
          return 'the session token is malformed'
        return { userId, address: addr as `0x${string}`, expiresAt: new Date(payload.exp * 1000) }
      } catch (err) {
        if (err instanceof errors.JWTExpired) return 'the session has expired: sign in again'
        return 'the session token is invalid'
      }
    },
  }
}

export type Sessions = ReturnType<typeof createSessions>
