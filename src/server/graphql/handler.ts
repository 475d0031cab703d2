import { inspect } from 'node:util'
import { createSchema, createYoga, type YogaLogger } from 'graphql-yoga'
import type { Logger } from '../log'
import type { ServerApp } from '../serverApp'
import { limitPlugins } from './limits'
import { createResolvers } from './resolvers'
import { typeDefs } from './schema'

/**
 * The GraphQL server, as a fetch handler that http/app.ts mounts at /graphql. The schema is built once
 * per server. The per-request context is empty for now; an authenticated caller would go there.
 */
export function createGraphQLHandler(serverApp: ServerApp) {
  return createYoga({
    schema: createSchema({ typeDefs, resolvers: createResolvers(serverApp) }),
    graphqlEndpoint: '/graphql',
    // GraphiQL (GET /graphql from a browser) outside production only.
    graphiql: serverApp.config.NODE_ENV !== 'production',
    landingPage: false,
    // Unexpected errors become "Unexpected error."; only development shows the original.
    maskedErrors: { isDev: serverApp.config.NODE_ENV === 'development' },
    logging: pinoLogger(serverApp.log.child({ component: 'graphql' })),
    plugins: limitPlugins(serverApp.config),
  })
}

/** Yoga logs with console-style arguments; masked resolver errors arrive as an Error. */
function pinoLogger(log: Logger): YogaLogger {
  const at =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (...args: unknown[]) => {
      const [first, ...rest] = args
      if (first instanceof Error) log[level]({ err: first }, rest.map(String).join(' ') || first.message)
      else log[level](args.map((a) => (typeof a === 'string' ? a : inspect(a))).join(' '))
    }
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}
