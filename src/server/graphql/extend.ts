import type { ServerApp } from '../serverApp'
import type { GqlContext } from './access'

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

/**
 * The signed-in wallet calling, or UNAUTHENTICATED (FORBIDDEN for the API token): the check an
 * application's resolver starts with, the same one the built-in resolvers use. Call it inside `answering`.
 */
export { user as requireUser } from './resolvers'

/**
 * Runs a resolver so that the server's own refusals (a JobInputError naming the field, an access error)
 * reach the caller with their code, as in the built-in resolvers; anything else is masked.
 */
export { answering } from './errors'
