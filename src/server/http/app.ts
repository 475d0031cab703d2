import { Elysia } from 'elysia'
import { createGraphQLHandler } from '../graphql/handler'
import type { ServerApp } from '../serverApp'
import type { WorkerManager } from '../workers/manager'
import { checkHealth } from './health'
import { createMetrics } from './metrics'

/** The HTTP surface. Routes get the ServerApp; none of them runs SQL of its own except through it. */
export function createHttpApp(serverApp: ServerApp, manager: WorkerManager | null) {
  const graphql = createGraphQLHandler(serverApp)
  const metrics = createMetrics(serverApp, manager)
  return (
    new Elysia()
      .get('/health', async ({ set }) => {
        const { code, body } = await checkHealth(serverApp, manager)
        set.status = code
        return body
      })
      .get('/metrics', async () => new Response(await metrics.render(), { headers: { 'content-type': metrics.contentType } }))
      // graphql-yoga is a fetch handler: it reads the raw request itself, so Elysia must not parse the body.
      .all('/graphql', ({ request }) => graphql.fetch(request), { parse: 'none' })
  )
}
