import { inspect } from 'node:util'
import { GraphQLError } from 'graphql'
import { createSchema, createYoga, type YogaLogger } from 'graphql-yoga'
import { CSRF_HEADER, dashboardCredentials } from '../auth/dashboardSession'
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
    context: async ({ request }) => {
      const authorization = request.headers.get('authorization')
      const dashboard = dashboardCredentials(request, serverApp.baseUrl().origin)
      const caller = await access.callerOf(authorization, dashboard)
      // The dashboard's page marks its requests with the CSRF header: when its session does not hold (none,
      // expired, the wrong token, another origin) the whole request is refused with 401, and the page
      // shows its login form. Other cookie-carrying requests are simply anonymous.
      if (caller.kind === 'anonymous' && authorization === null && request.headers.has(CSRF_HEADER)) throw dashboardRefusal(caller.refused)
      return { caller, request, spent: { rows: 0, jobs: 0, signIns: 0 } }
    },
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
  return Object.assign(yoga, { access, close: () => access.close() })
}

/** 401 for a dashboard request without a session that holds. */
function dashboardRefusal(reason = 'sign in to the dashboard first'): GraphQLError {
  return new GraphQLError(reason, { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } })
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
