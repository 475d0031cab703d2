import { inspect } from 'node:util'
import { createSchema, createYoga, type YogaLogger } from 'graphql-yoga'
import type { Logger } from '../log'
import type { ServerApp } from '../serverApp'
import { createAccess } from './access'
import type { GraphqlExtension } from './extend'
import { limitPlugins } from './limits'
import { createResolvers } from './resolvers'
import { typeDefs } from './schema'
import { useVariableErrorCodes } from './variableErrors'

/**
 * The GraphQL server, as a fetch handler that http/app.ts mounts at /graphql. The schema is built once
 * per server; each request's context carries its caller (from the Authorization header).
 */
export function createGraphQLHandler(serverApp: ServerApp, extensions: readonly GraphqlExtension[] = []) {
  const access = createAccess(serverApp)
  const yoga = createYoga({
    schema: createSchema({
      typeDefs: [typeDefs, ...extensions.map((e) => e.typeDefs)],
      resolvers: [createResolvers(serverApp, access), ...extensions.map((e) => e.resolvers(serverApp))],
    }),
    context: async ({ request }) => ({
      caller: await access.callerOf(request.headers.get('authorization')),
      request,
      spent: { rows: 0, jobs: 0, signIns: 0 },
    }),
    graphqlEndpoint: '/graphql',
    // GraphiQL (GET /graphql from a browser) outside production only.
    graphiql: serverApp.config.NODE_ENV !== 'production',
    landingPage: false,
    // Unexpected errors become "Unexpected error." in every mode (the log has the original): a development
    // server reachable by others must not hand out stacks either.
    maskedErrors: true,
    logging: pinoLogger(serverApp.log.child({ component: 'graphql' })),
    plugins: [...limitPlugins(serverApp.config), useVariableErrorCodes()],
  })
  return Object.assign(yoga, { close: () => access.close() })
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
