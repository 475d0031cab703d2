import type { Caller } from '../auth/callers'
import type { ServerApp } from '../serverApp'
import type { GqlContext } from './access'
import { apiError } from './errors'

export type { GqlContext }

/**
 * An application's own GraphQL types and resolvers, merged into the server's schema
 * (`startServer(config, { graphql: [ext] })`). Its resolvers get the same context: `ctx.caller`.
 */
export interface GraphqlExtension {
  /** SDL; extend the root types with `extend type Mutation { … }`. */
  typeDefs: string
  /** Resolver maps are typed by the SDL, not by TypeScript. */
  resolvers: (serverApp: ServerApp) => Record<string, any>
}

/** The signed-in wallet calling, or an UNAUTHENTICATED error: the check an application's resolver starts with. */
export function requireUser(ctx: GqlContext): Extract<Caller, { kind: 'user' }> {
  if (ctx.caller.kind === 'user') return ctx.caller
  if (ctx.caller.kind === 'anonymous') throw apiError('UNAUTHENTICATED', ctx.caller.refused ?? 'sign in first: this needs a session (Authorization: Bearer <token>)')
  throw apiError('FORBIDDEN', 'this needs a signed-in wallet: the API token has no user of its own')
}

/**
 * Runs a resolver so that the server's own refusals (a JobInputError naming the field, an access error)
 * reach the caller with their code, as in the built-in resolvers; anything else is masked.
 */
export { answering } from './errors'
